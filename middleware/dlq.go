package middleware

import (
	"context"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// Publisher is what DLQ (and Propagating) publish through. A
// *publisher.Publisher of any broker satisfies it, so dead letters can go
// to another broker than the one the messages came from.
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...*message.Message) error
}

// Dead-letter reasons, the values of message.KeyDLQReason.
const (
	// ReasonPermanent: the handler returned an error that
	// message.IsPermanent reports (a panic, under Recoverer's default).
	ReasonPermanent = "permanent"
	// ReasonMaxAttempts: the attempts ran out, as Retry's ExhaustedError
	// or DLQConfig.MaxAttempts says.
	ReasonMaxAttempts = "max-attempts"
)

// DefaultDLQSuffix is appended to a message's topic to name its
// dead-letter topic when DLQConfig.Topic is empty.
const DefaultDLQSuffix = ".dlq"

// DLQConfig configures DLQ.
type DLQConfig struct {
	// Publisher publishes the dead letters. Required.
	Publisher Publisher
	// Topic is the dead-letter topic. Default: the topic the message was
	// received from plus DefaultDLQSuffix ("orders" → "orders.dlq").
	Topic string
	// MaxAttempts, when above 0, also dead-letters a message that fails
	// on its MaxAttempts-th delivery or later, as the broker counts
	// deliveries (message.Message.Attempt, else the message.KeyAttempt
	// metadata), for use without Retry. Default 0: only permanent errors
	// and Retry's ExhaustedError are dead-lettered. On a broker that
	// counts no deliveries it never triggers: use Retry in Redelivery
	// mode there.
	MaxAttempts int
	// MaxErrorLength bounds the bytes of the error text kept in
	// message.KeyDLQError (broker header limits; a panic's stack is
	// long). Default 4096.
	MaxErrorLength int
	// OnDeadLetter, when set, is called after each dead-letter publish
	// with the message, the dead letter and the publish's outcome (nil
	// when the dead letter was published and the message will be acked).
	OnDeadLetter func(ctx context.Context, m, deadLetter *message.Message, publishErr error)

	// now is the clock of failure times; tests replace it.
	now func() time.Time
}

// DLQ returns middleware that publishes a failed message to a dead-letter
// topic and acks it, so that it stops coming back.
//
// A message is dead-lettered when its handler returns an error that
// message.IsPermanent reports (reason "permanent"), a *ExhaustedError from
// Retry (reason "max-attempts"), or any error on a delivery whose attempt
// number has reached DLQConfig.MaxAttempts (reason "max-attempts"). Every
// other error passes through untouched, so the message is nacked and
// redelivered; so does a deferral (IsDeferred), which is not a failure.
// An error returned after the handler's context ended (drain, shutdown) is
// never dead-lettered.
//
// The dead letter keeps the message's ID, Key, Payload, Time and Metadata,
// and adds message.KeyDLQReason, KeyDLQError (the error text, cut to
// MaxErrorLength), KeyDLQTopic and KeyDLQGroup (where it was received),
// KeyDLQAttempts, KeyDLQFirstFailure and KeyDLQLastFailure (RFC 3339 with
// nanoseconds, UTC).
//
// KeyDLQAttempts is the number of handler calls as far as polybus can tell:
// Retry's count when Retry runs inside DLQ (in InProcess mode the calls of
// the last delivery), else the delivery attempt number, else 1.
//
// KeyDLQFirstFailure is a best effort: the value already in the metadata
// when the message is a replayed dead letter; else the first failure that
// Retry, inside DLQ, saw (in InProcess mode within the last delivery; in
// Redelivery mode across deliveries to this process, within its
// CounterSize); else the time of this failure.
//
// The message is acked (the handler returns nil) only after the dead-letter
// publish has returned nil. When the publish fails, DLQ returns the
// handler's error unchanged, so the message is nacked and nothing is lost;
// the publish error goes to OnDeadLetter.
//
// Place DLQ outside Retry: DLQ → Retry → handler.
//
// Errors: InvalidArgument for a nil Publisher or a negative setting.
func DLQ(cfg DLQConfig) (subscriber.Middleware, error) {
	const op = "middleware: dlq"
	if cfg.Publisher == nil {
		return nil, message.Errorf(message.InvalidArgument, op, "nil publisher")
	}
	if cfg.MaxAttempts < 0 || cfg.MaxErrorLength < 0 {
		return nil, message.Errorf(message.InvalidArgument, op, "negative setting: max attempts %d, max error length %d", cfg.MaxAttempts, cfg.MaxErrorLength)
	}
	if cfg.MaxErrorLength == 0 {
		cfg.MaxErrorLength = 4096
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	return func(next subscriber.Handler) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			ctx, n := withNote(ctx)
			err := next(ctx, m)
			if err == nil || ctx.Err() != nil {
				return err
			}
			reason, attempts, cause := cfg.trigger(m, err, n)
			if reason == "" {
				return err
			}
			topic := cfg.Topic
			d, _ := m.Delivery()
			if topic == "" {
				if d.Topic == "" {
					// Not a received message: nowhere to derive a topic from.
					return err
				}
				topic = d.Topic + DefaultDLQSuffix
			}
			dead := cfg.deadLetter(m, d, cause, reason, attempts, n.firstFailure)
			perr := cfg.Publisher.Publish(ctx, topic, dead)
			if cfg.OnDeadLetter != nil {
				cfg.OnDeadLetter(ctx, m, dead, perr)
			}
			if perr != nil {
				n.dlqErr = perr
				return err
			}
			n.deadLetter, n.dlqTopic, n.dlqCause = reason, topic, cause
			return nil
		}
	}, nil
}

// trigger returns why err dead-letters m ("" when it does not), the
// attempt count to report and the error to describe: for exhausted
// retries, the ExhaustedError without the redelivery delay around it.
func (cfg *DLQConfig) trigger(m *message.Message, err error, n *note) (string, int, error) {
	delivered, _ := brokerAttempt(m)
	// Retry's count, where it ran, leaves out the deferrals that the
	// broker's count includes.
	attempts := n.attempts
	if attempts == 0 {
		attempts = max(delivered, 1)
	}
	var ex *ExhaustedError
	switch {
	case IsDeferred(err):
		return "", 0, nil
	case errors.As(err, &ex):
		return ReasonMaxAttempts, max(ex.Attempts, 1), ex
	case message.IsPermanent(err):
		return ReasonPermanent, attempts, err
	case cfg.MaxAttempts > 0 && delivered >= cfg.MaxAttempts:
		return ReasonMaxAttempts, attempts, err
	}
	return "", 0, nil
}

// deadLetter builds the dead letter of m.
func (cfg *DLQConfig) deadLetter(m *message.Message, d message.Delivery, err error, reason string, attempts int, first time.Time) *message.Message {
	now := cfg.now().UTC()
	// Not m.Clone, which would copy the metadata twice.
	dead := &message.Message{ID: m.ID, Key: m.Key, Time: m.Time}
	if m.Payload != nil {
		dead.Payload = append([]byte(nil), m.Payload...)
	}
	md := make(message.Metadata, len(m.Metadata)+7)
	for k, v := range m.Metadata {
		md[k] = v
	}
	md[message.KeyDLQReason] = reason
	md[message.KeyDLQError] = truncate(err.Error(), cfg.MaxErrorLength)
	md[message.KeyDLQTopic] = d.Topic
	md[message.KeyDLQGroup] = d.Group
	md[message.KeyDLQAttempts] = strconv.Itoa(attempts)
	if md[message.KeyDLQFirstFailure] == "" {
		if first.IsZero() {
			first = now
		}
		md[message.KeyDLQFirstFailure] = first.UTC().Format(time.RFC3339Nano)
	}
	md[message.KeyDLQLastFailure] = now.Format(time.RFC3339Nano)
	dead.Metadata = md
	return dead
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
