// Package subscriber receives messages: the portable [Subscriber] that
// applications hold, over the [Driver] that each adapter implements, and the
// [Handler] and [Middleware] types that handlers and middleware share.
//
// # Semantics
//
// [Subscriber.Subscribe] blocks, receiving messages of one topic for one
// consumer group and running the handler on each, until its context ends
// or [Subscriber.Close] is called. Subscribers of one group compete for
// messages; every group receives every message.
//
//   - At-least-once by default: a message is acked after its handler
//     returns nil and nacked (redelivered) when it returns an error. A
//     handler that panics nacks its message; the subscriber goes on.
//     [AtMostOnce] acks before the handler runs.
//   - Per-key order: two handler calls for one non-empty key never overlap,
//     and run in the order the broker delivered the messages (which is
//     publish order where the adapter declares OrderPerKey). Different keys
//     run concurrently, up to Config.Concurrency. [Unordered] turns this off.
//   - Nack with delay: a handler returns message.RetryAfter(err, d). Where
//     the broker cannot delay a redelivery itself, the subscriber holds the
//     message unacked for d and then nacks it.
//   - Flow control: at most Config.Prefetch messages are outstanding
//     (received and not yet settled with the broker).
//   - Drain: when Subscribe's context ends or Close is called, receiving
//     stops; messages not yet started are nacked (in key order); handlers
//     in flight finish, until Config.DrainTimeout or Close's deadline, when
//     their context is cancelled; their acks are settled; then the call
//     returns. No goroutine outlives Close.
//
// # Errors
//
// Invalid options are message.ErrInvalidArgument before anything is
// opened, a capability the broker lacks is message.ErrUnimplemented, and a
// call after Close is message.ErrClosed. Transient broker errors while
// receiving are logged and retried with backoff; Subscribe returns the
// first error that is not transient.
//
// # As
//
// [Subscriber.As] reaches the adapter's native client where the adapter
// offers it; message.Message.As reaches a received message's native form.
package subscriber
