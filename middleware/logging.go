package middleware

import (
	"context"
	"log/slog"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// LoggingConfig configures Logging. The zero value is valid.
type LoggingConfig struct {
	// Logger receives the lines. Default slog.Default().
	Logger *slog.Logger
	// SuccessLevel is the level of a handled (acked) message. Default
	// slog.LevelInfo; slog.LevelDebug keeps busy subscriptions quiet.
	SuccessLevel slog.Level

	// now is the clock of durations; tests replace it.
	now func() time.Time
}

// Outcomes, the values of the "outcome" attribute of Logging's lines.
const (
	// OutcomeAcked: the handler returned nil.
	OutcomeAcked = "acked"
	// OutcomeDeadLettered: DLQ published the message to its dead-letter
	// topic, and it is acked.
	OutcomeDeadLettered = "dead-lettered"
	// OutcomeNacked: the handler failed; the message will be redelivered.
	OutcomeNacked = "nacked"
	// OutcomeDeferred: the message was held back (IsDeferred: an open
	// Breaker, Ordering waiting for an earlier message) and will be
	// redelivered; not a failure.
	OutcomeDeferred = "deferred"
)

// Logging returns middleware that logs one structured line (log/slog) per
// handled message, when the handler returns, with the attributes topic,
// group, id, key, attempt (the delivery attempt, 0 when the broker counts
// none), duration, outcome, and where they apply: trace_id (the trace of
// the call: ContextWithTraceID's, else the message's
// message.KeyTraceParent), calls (the attempt number
// that Retry counted), correlation_id (from Correlation placed outside
// Logging), retry_after, dlq_reason, dlq_topic, dlq_error (a failed
// dead-letter publish) and error (for a dead-lettered message, the
// handler's error that sent it there).
//
// The level follows the outcome: SuccessLevel for acked and for deferred
// (flow control, not a failure); Warn for dead-lettered (the message left
// the main flow and someone should look) and for a transient failure (it
// will be retried); Error for a permanent failure (including exhausted
// retries) that no DLQ took.
//
// Place Logging outside DLQ, so that it sees the final outcome of each
// delivery.
//
// Errors: none; the error result keeps the constructor shape uniform.
func Logging(cfg LoggingConfig) (subscriber.Middleware, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	now := cfg.now
	if now == nil {
		now = time.Now
	}
	return func(next subscriber.Handler) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			ctx, n := withNote(ctx)
			start := now()
			err := next(ctx, m)
			elapsed := now().Sub(start)

			level, outcome := cfg.SuccessLevel, OutcomeAcked
			switch {
			case n.deadLetter != "":
				level, outcome = slog.LevelWarn, OutcomeDeadLettered
			case err == nil:
			case IsDeferred(err):
				outcome = OutcomeDeferred
			case message.IsPermanent(err):
				level, outcome = slog.LevelError, OutcomeNacked
			default:
				level, outcome = slog.LevelWarn, OutcomeNacked
			}
			if !log.Enabled(ctx, level) {
				return err
			}
			d, _ := m.Delivery()
			attrs := make([]slog.Attr, 0, 15)
			attrs = append(attrs,
				slog.String("topic", d.Topic),
				slog.String("group", d.Group),
				slog.String("id", m.ID),
				slog.String("key", m.Key),
				slog.Int("attempt", d.Attempt),
				slog.Duration("duration", elapsed),
				slog.String("outcome", outcome),
			)
			if n.attempts > 0 {
				attrs = append(attrs, slog.Int("calls", n.attempts))
			}
			if id := traceID(ctx, m); id != "" {
				attrs = append(attrs, slog.String("trace_id", id))
			}
			if info, ok := CorrelationFromContext(ctx); ok {
				attrs = append(attrs, slog.String("correlation_id", info.CorrelationID))
			}
			if n.deadLetter != "" {
				attrs = append(attrs, slog.String("dlq_reason", n.deadLetter), slog.String("dlq_topic", n.dlqTopic))
			}
			if n.dlqErr != nil {
				attrs = append(attrs, slog.String("dlq_error", n.dlqErr.Error()))
			}
			if delay, ok := message.RetryDelay(err); ok {
				attrs = append(attrs, slog.Duration("retry_after", delay))
			}
			switch {
			case err != nil:
				attrs = append(attrs, slog.String("error", err.Error()))
			case n.dlqCause != nil:
				attrs = append(attrs, slog.String("error", n.dlqCause.Error()))
			}
			log.LogAttrs(ctx, level, "polybus: message handled", attrs...)
			return err
		}
	}, nil
}

type traceIDKey struct{}

// ContextWithTraceID returns ctx carrying the trace ID of the handler
// call, for Logging: package telemetry sets it when the call's span starts
// a trace of its own (the message carried no trace context). Without it,
// Logging reads the message's message.KeyTraceParent, whose trace the
// call's span continues.
func ContextWithTraceID(ctx context.Context, id string) context.Context {
	return &valueCtx[traceIDKey, string]{Context: ctx, val: id}
}

// traceID returns the trace ID of the handler call of m under ctx.
func traceID(ctx context.Context, m *message.Message) string {
	if id, ok := ctx.Value(traceIDKey{}).(*string); ok {
		return *id
	}
	return message.TraceID(m.Metadata)
}
