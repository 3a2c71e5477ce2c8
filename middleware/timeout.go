package middleware

import (
	"context"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TimeoutConfig configures Timeout.
type TimeoutConfig struct {
	// Timeout bounds each handler call. Required, above 0.
	Timeout time.Duration
}

// Timeout returns middleware that gives each handler call a deadline: the
// context passed down ends Timeout after the call starts (or earlier, when
// the incoming context ends earlier). The deadline lives only in that
// context, never in the message, so each retry made by a Retry placed
// outside Timeout gets a fresh deadline.
//
// The handler must honour its context. Timeout does not run the handler on
// another goroutine and abandon it at the deadline (as net/http's
// TimeoutHandler does): an abandoned handler would still be working on a
// message that has already been nacked and perhaps redelivered to another
// handler, breaking per-key order and doubling side effects. A handler
// that returns context.DeadlineExceeded fails like any transient error and
// is retried; a handler that returns nil after its deadline has still done
// its work, and the message is acked.
//
// Errors: InvalidArgument for a Timeout of 0 or less.
func Timeout(cfg TimeoutConfig) (subscriber.Middleware, error) {
	if cfg.Timeout <= 0 {
		return nil, message.Errorf(message.InvalidArgument, "middleware: timeout", "timeout %s is not above 0", cfg.Timeout)
	}
	return func(next subscriber.Handler) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			defer cancel()
			return next(ctx, m)
		}
	}, nil
}
