// Package middleware holds handler middleware: retry, dead-lettering,
// timeouts, panic recovery, circuit breaking, rate limiting, correlation
// and logging (deduplication and ordering live beside them). Every one is a
// subscriber.Middleware, made by a constructor of one shape,
//
//	func X(XConfig) (subscriber.Middleware, error)
//
// that checks its config once and fills in the documented defaults. Compose
// them with subscriber.Chain or subscriber.Use, or take DefaultChain, which
// puts them in the order below.
//
// # Semantics
//
// A handler's result decides a message's fate: nil acks it, an error nacks
// it (redelivery, after the delay that message.RetryAfter asks for), and an
// error that message.IsPermanent reports is one that retrying cannot fix.
// The middlewares speak this vocabulary, plus deferral, to one another, so
// each one also works alone and with handlers and middleware written
// elsewhere:
//
//   - Retry retries transient errors, in process (InProcess) or by asking
//     the broker to redeliver later (Redelivery), and never retries a
//     permanent one. When the attempts run out it returns an
//     *ExhaustedError, which is permanent.
//   - DLQ publishes a permanent or exhausted failure to a dead-letter topic
//     and acks the message only once that publish has succeeded; other
//     failures pass through to be redelivered.
//   - Recoverer turns a panic into a permanent error (by default), so a
//     poison message that crashes its handler is dead-lettered like any
//     other.
//   - A deferral (Defer, IsDeferred) holds a message back for a reason
//     outside it: Breaker while open, Ordering while an earlier message of
//     the key is missing. Retry passes it through uncounted and DLQ never
//     dead-letters it; the broker redelivers the message after the delay
//     it asks for.
//   - RateLimit makes calls wait for a token.
//   - Timeout and the context carry deadlines; nothing is stored in a
//     message, so a retry always starts from the delivery's own context.
//
// DefaultChain's order, outermost first, is
//
//	Correlation → Logging → DLQ → Retry → Breaker → RateLimit → Timeout → (Dedupe → Ordering) → Recoverer → handler
//
// and each stage sits where it does for a reason:
//
//   - Correlation is outermost so that every stage, Logging included, finds
//     the flow's correlation ID in the context.
//   - Logging is outside DLQ and Retry so that it logs one line per
//     delivery with its final outcome: acked, dead-lettered (with the
//     reason) or nacked, and how many calls Retry made.
//   - DLQ is outside Retry so that it sees the verdict of the retry policy
//     (ExhaustedError) rather than each transient failure.
//   - Retry is outside Breaker, RateLimit and Timeout so that each retry
//     passes the breaker again, waits for a token again and gets a fresh
//     deadline.
//   - Breaker is outside RateLimit so that an open breaker rejects messages
//     without spending tokens, and inside Retry so that it counts each
//     handler call.
//   - RateLimit is outside Timeout so that waiting for a token does not eat
//     into the handler's time.
//   - Timeout is outside the handler (and deduplication's store calls) to
//     bound one call.
//   - Recoverer is innermost, next to the handler: a panic becomes an error
//     that Retry, DLQ and Logging classify. The subscriber recovers panics
//     by itself too, but only to nack the message, which would then be
//     redelivered, and panic, for ever. A panic in a middleware is still
//     caught by the subscriber.
//
// Deferrals must not be retried in process: under per-key serialisation
// the message that Ordering waits for is queued behind the very call that
// would be retrying.
//
// Retry and DLQ tell each other about a message through the handler's
// context (how many calls were made, when the first one failed) and
// through ExhaustedError; Logging learns from the context that DLQ
// dead-lettered a message. These are the only couplings, and each stage
// still works without the others.
//
// # Errors
//
// Constructors return message.ErrInvalidArgument (a *message.Error of code
// InvalidArgument) for a bad config, naming the setting. At run time the
// middlewares return the handler's errors unchanged, or wrapped so that
// errors.Is and errors.As still reach them: *ExhaustedError (Retry),
// message.RetryAfter delays (Retry in Redelivery mode), deferrals (Breaker,
// Ordering), a
// *message.Error with a *PanicError cause (Recoverer), code Unavailable
// (Breaker, open) and ResourceExhausted (RateLimit, no token before the
// deadline). Context errors are returned as they are.
package middleware
