// Package message is polybus's model: the [Message] that is published and
// delivered, its [Metadata], the read-only [Delivery] facts of a received
// message, the adapters' [Capabilities] declaration, and the error codes
// shared by every package.
//
// # Semantics
//
// A message's ID is its idempotency key. It is assigned by the producer
// (UUIDv7 by [New] and by publishers when empty) and is kept across
// redelivery, dead-lettering and replay. Key orders and partitions. Payload is
// opaque bytes. Metadata keys starting with [MetadataPrefix] are reserved for
// polybus.
//
// # Errors
//
// Every error that polybus returns carries a [Code]. Test for a code with
// errors.Is against its sentinel (errors.Is(err, message.ErrTooLarge)) or
// with [CodeOf]. The broker's own error stays reachable with errors.As.
// Context errors are returned as they are, never wrapped in a code.
//
// A handler returns [PermanentError] for a failure that retrying cannot fix,
// and [RetryAfter] to ask for redelivery after a delay.
//
// # As
//
// [Message.As] reaches the broker's native message of a received message;
// each adapter documents the types it offers.
package message
