package publisher

import (
	"context"
	"fmt"

	"github.com/polybus/polybus/message"
)

// Driver is what an adapter implements to publish. The portable [Publisher]
// does everything that is the same for every broker (argument checks, ID
// and time stamping, size limits, batching of concurrent publishes, error
// classification); a driver only translates a batch to its broker.
//
// Obligations:
//   - SendBatch returns nil only when the broker has durably accepted every
//     message of the batch (Kafka acks=all, AMQP publisher confirm, SQS
//     entry without failure, JetStream PubAck).
//   - It sends msgs in slice order; messages of one key must reach the
//     broker in that order.
//   - When it knows that only some messages failed, it returns a
//     [*BatchError] that gives each message's outcome.
//   - It must not retry: the caller decides. It must not modify msgs.
//   - It may be called concurrently, for one topic or several.
//   - It honours ctx and returns ctx's error when ctx ends first. ctx is
//     valid only while SendBatch runs: the Publisher reuses it afterwards,
//     so neither it nor a context derived from it may be kept.
type Driver interface {
	// SendBatch publishes msgs, in order, to topic. len(msgs) >= 1.
	SendBatch(ctx context.Context, topic string, msgs []*message.Message) error
	// Capabilities declares what the broker guarantees; it must return the
	// same value every time.
	Capabilities() message.Capabilities
	// ErrorCode classifies an error that SendBatch returned and that is not
	// already a *message.Error.
	ErrorCode(err error) message.Code
	// Close releases the driver's resources. It is called once, after every
	// SendBatch has returned.
	Close() error
}

// BatchError reports a batch that the broker accepted only in part. Errs has
// one entry per message of the batch, nil for each message that was
// accepted.
type BatchError struct {
	Errs []error
}

func (e *BatchError) Error() string {
	n := 0
	var first error
	for _, err := range e.Errs {
		if err != nil {
			if first == nil {
				first = err
			}
			n++
		}
	}
	return fmt.Sprintf("%d of %d messages failed; first: %v", n, len(e.Errs), first)
}

// Unwrap returns the failures, for errors.Is and errors.As.
func (e *BatchError) Unwrap() []error {
	var errs []error
	for _, err := range e.Errs {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
