// Package publisher publishes messages: the portable [Publisher] that
// applications hold, over the [Driver] that each adapter implements.
//
// # Semantics
//
// [Publisher.Publish] returns nil only when the broker has durably accepted
// every message of the call: Kafka acks=all, RabbitMQ publisher confirms, an
// SQS response with no failed entry, a JetStream PubAck. Publish is safe for
// concurrent use. Concurrent calls to one topic are gathered into batches
// (group commit: while one batch is with the broker the next one fills), so
// throughput rises with concurrency without a linger delay. A call's own
// messages stay together and in order.
//
// # Errors
//
// Arguments are checked before anything is sent: an empty topic or a nil
// message is message.ErrInvalidArgument, a message over the adapter's
// declared MaxMessageSize is message.ErrTooLarge, and nothing of that call is
// sent. After Close every call fails with message.ErrClosed. A call of which
// only some messages were accepted fails with a [*PublishError] that lists
// them. Broker errors carry the code the driver gives them and stay
// reachable with errors.As.
//
// # As
//
// [Publisher.As] reaches the adapter's native client where the adapter
// offers it.
package publisher
