package middleware

import (
	"context"
	"math"
	"time"

	"golang.org/x/time/rate"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// RateLimitConfig configures RateLimit: either Rate (and Burst), or a
// Limiter of your own, not both.
type RateLimitConfig struct {
	// Rate is the most handler calls per second, on average. Required
	// unless Limiter is set; math.Inf(1) allows every call.
	Rate float64
	// Burst is how many calls may start at once after a quiet spell.
	// Default 1.
	Burst int
	// Limiter, when set, is used instead of Rate and Burst, so that
	// several subscriptions (or other code) can share one budget.
	Limiter *rate.Limiter

	// now and sleep are the clock; tests replace them.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// RateLimit returns middleware that starts at most Rate handler calls per
// second (a token bucket, golang.org/x/time/rate): each call waits for a
// token first. One RateLimit value is one budget, shared by every
// subscription that uses the returned middleware.
//
// The wait honours the context: when the context ends, RateLimit returns
// its error at once and gives the token back; when the context's deadline
// would pass before a token is free, it does not wait and returns a
// ResourceExhausted error, a transient one, so the message is nacked.
//
// Errors: InvalidArgument for a Rate of 0 or less, a negative Burst, or
// both Limiter and Rate/Burst.
func RateLimit(cfg RateLimitConfig) (subscriber.Middleware, error) {
	const op = "middleware: ratelimit"
	lim := cfg.Limiter
	switch {
	case lim != nil && (cfg.Rate != 0 || cfg.Burst != 0):
		return nil, message.Errorf(message.InvalidArgument, op, "both a limiter and a rate or burst")
	case lim == nil && !(cfg.Rate > 0):
		return nil, message.Errorf(message.InvalidArgument, op, "rate %v is not above 0", cfg.Rate)
	case cfg.Burst < 0:
		return nil, message.Errorf(message.InvalidArgument, op, "negative burst %d", cfg.Burst)
	}
	if lim == nil {
		burst := max(cfg.Burst, 1)
		limit := rate.Limit(cfg.Rate)
		if math.IsInf(cfg.Rate, 1) {
			limit = rate.Inf
		}
		lim = rate.NewLimiter(limit, burst)
	}
	now, wait := cfg.now, cfg.sleep
	if now == nil {
		now = time.Now
	}
	if wait == nil {
		wait = sleep
	}
	return func(next subscriber.Handler) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			// Reserve and wait, as rate.Limiter.Wait does, but on our
			// clock so that tests need not sleep.
			if err := ctx.Err(); err != nil {
				return err
			}
			t := now()
			r := lim.ReserveN(t, 1)
			if !r.OK() {
				// Only when the burst is 0: never possible here unless a
				// shared Limiter was built that way.
				return message.Errorf(message.ResourceExhausted, op, "limiter with burst %d admits no call", lim.Burst())
			}
			if d := r.DelayFrom(t); d > 0 {
				if dl, ok := ctx.Deadline(); ok && dl.Before(t.Add(d)) {
					r.CancelAt(t)
					return message.Errorf(message.ResourceExhausted, op, "no token before the context's deadline (wait %s)", d)
				}
				if err := wait(ctx, d); err != nil {
					r.CancelAt(now())
					return err
				}
			}
			return next(ctx, m)
		}
	}, nil
}
