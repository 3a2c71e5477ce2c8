package subscriber

import (
	"context"
	"time"

	"github.com/polybus/polybus/message"
)

// Start is where a new consumer group begins reading a topic. A group that
// already exists continues where it left off.
type Start int

const (
	// Earliest reads from the oldest retained message. It is the default.
	Earliest Start = iota
	// Latest reads only messages published after the group is created.
	Latest
)

func (s Start) String() string {
	if s == Latest {
		return "latest"
	}
	return "earliest"
}

// OpenConfig is what a driver needs to open a subscription.
type OpenConfig struct {
	// Group names the consumer group. Subscribers of one group compete
	// for messages; each group gets every message. Never empty: the
	// portable layer fills in a default.
	Group string
	// Start applies when Group does not exist yet.
	Start Start
	// Prefetch is how many messages the subscriber keeps outstanding at
	// most: a hint for the driver's own buffers and broker-side limits
	// (AMQP QoS, JetStream MaxAckPending).
	Prefetch int
	// AckDeadline is how long the broker should wait for an ack before
	// redelivering, where the broker lets the subscriber choose. 0 is the
	// adapter's default.
	AckDeadline time.Duration
}

// Received is one message as a driver delivers it.
type Received struct {
	// Msg has its delivery facts attached with message.Received.
	Msg *message.Message
	// AckID is the driver's handle for acking or nacking Msg.
	AckID any
}

// Driver is what an adapter implements to receive. The portable
// [Subscriber] does the work that is the same for every broker: the handler
// pool and its concurrency limit, per-key serialisation, ack bookkeeping and
// batching, nack delays where the broker has none, graceful drain and error
// classification.
type Driver interface {
	// Open starts a subscription to topic for cfg.Group. It fails with a
	// coded error (NotFound, InvalidArgument, Unimplemented, Unavailable)
	// rather than later in Receive when it can tell.
	Open(ctx context.Context, topic string, cfg OpenConfig) (Subscription, error)
	// Capabilities declares what the broker guarantees; it must return the
	// same value every time.
	Capabilities() message.Capabilities
	// ErrorCode classifies an error that the driver returned and that is
	// not already a *message.Error.
	ErrorCode(err error) message.Code
	// Close releases the driver's resources, after every subscription is
	// closed.
	Close() error
}

// Subscription is one open subscription.
//
// Obligations: Receive is called by one goroutine at a time; Ack and Nack
// are called by one other goroutine at a time, concurrently with Receive.
// None of them retries a failed broker call except to reconnect: Receive
// returns an Unavailable error and is called again after a backoff. Close is
// called once, after the last Receive, Ack and Nack have returned.
type Subscription interface {
	// Receive blocks until at least one message is available or ctx ends,
	// and returns at most max (>= 1) messages. Messages of one key are
	// returned in the order the broker delivers them.
	Receive(ctx context.Context, max int) ([]Received, error)
	// Ack acknowledges messages: the broker must not deliver them to this
	// group again. It returns when the broker has confirmed, where the
	// broker confirms acks.
	Ack(ctx context.Context, ackIDs []any) error
	// Nack asks for redelivery, no sooner than delay from now where the
	// capabilities declare NackDelay (the portable layer never passes a
	// delay otherwise).
	Nack(ctx context.Context, ackIDs []any, delay time.Duration) error
	// Close stops the subscription. Messages received and neither acked
	// nor nacked are redelivered by the broker later.
	Close() error
}
