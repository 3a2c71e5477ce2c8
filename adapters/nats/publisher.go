package nats

import (
	"context"
	"errors"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
)

// noRetry turns off nats.go's retry of a publish that met "no responders":
// a retried message could be stored after the ones behind it, breaking
// per-key order. The caller retries, and the stream deduplicates by
// Nats-Msg-Id.
var noRetry = []jetstream.PublishOpt{jetstream.WithRetryAttempts(0)}

// pubDriver is the publisher.Driver: asynchronous JetStream publishes, one
// per message, then a wait for every PubAck of the batch.
type pubDriver struct{ c *core }

func (d *pubDriver) SendBatch(ctx context.Context, topic string, msgs []*message.Message) error {
	const op = "nats: publish"
	if err := checkTopic(op, topic); err != nil {
		return err
	}
	layout, err := d.c.streams.ensure(ctx, topic)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	env := newEnvelope(msgs)
	// One message value for the whole batch, refilled for each publish:
	// nats.go copies what it sends before PublishMsgAsync returns (see
	// envelope).
	nm := &natsgo.Msg{Subject: topic}
	futures := make([]jetstream.PubAckFuture, len(msgs))
	errs := make([]error, len(msgs))
	var stop error
	for i, m := range msgs {
		if stop != nil {
			// The connection failed under an earlier message: sending the
			// rest would only put them out of order.
			errs[i] = stop
			continue
		}
		nm.Header, nm.Data = env.header(i, m), m.Payload
		if layout.parts > 0 {
			nm.Subject = layout.subjects[partitionOf(m.Key, m.ID, layout.parts)]
		}
		f, err := d.c.js.PublishMsgAsync(nm, noRetry...)
		if err != nil {
			errs[i] = err
			if !errors.Is(err, natsgo.ErrMaxPayload) {
				stop = err
			}
			continue
		}
		futures[i] = f
	}
	// The stream acknowledges in order, so once the last PubAck is in,
	// the others usually are too: each is then taken without waiting,
	// which spares a channel and a lock of nats.go's per message.
	for i := len(futures) - 1; i >= 0; i-- {
		if futures[i] == nil {
			continue
		}
		if err := await(ctx, futures[i], &errs[i]); err != nil {
			return err
		}
		futures[i] = nil
		break
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			continue
		default:
		}
		if err := await(ctx, f, &errs[i]); err != nil {
			return err
		}
	}
	return d.outcome(topic, errs)
}

// await waits for f's PubAck, setting *errp to the publish's error, and
// returns ctx's error if ctx ends first.
func await(ctx context.Context, f jetstream.PubAckFuture, errp *error) error {
	select {
	case <-f.Ok():
		// A duplicate (PubAck.Duplicate) was stored before: accepted.
	case err := <-f.Err():
		*errp = err
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// outcome turns the per-message errors of a batch into SendBatch's error:
// nil, the common error when every message failed alike, or a
// *publisher.BatchError.
func (d *pubDriver) outcome(topic string, errs []error) error {
	failed := 0
	same := true
	for _, err := range errs {
		if err == nil {
			continue
		}
		failed++
		if errors.Is(err, natsgo.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
			// No stream listens on the subject (any more): find or create
			// it again on the next call.
			d.c.streams.forget(topic)
		}
		same = same && ErrorCode(err) == ErrorCode(errs[0])
	}
	switch {
	case failed == 0:
		return nil
	case failed == len(errs) && same:
		return errs[0]
	}
	return &publisher.BatchError{Errs: errs}
}

func (d *pubDriver) Capabilities() message.Capabilities { return d.c.caps }
func (d *pubDriver) ErrorCode(err error) message.Code   { return ErrorCode(err) }

// Close does nothing: the client's Close hook closes the shared connection.
func (d *pubDriver) Close() error { return nil }

// As offers **nats.Conn, *jetstream.JetStream and, for embedded://,
// **server.Server.
func (d *pubDriver) As(target any) bool { return d.c.as(target) }
