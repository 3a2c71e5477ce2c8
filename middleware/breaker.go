package middleware

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// BreakerConfig configures Breaker. The zero value is valid: every field
// documents its default.
type BreakerConfig struct {
	// Name names the breaker in errors and OnStateChange. Default
	// "handler".
	Name string
	// ConsecutiveFailures is how many handler failures in a row open the
	// breaker. Default 5.
	ConsecutiveFailures int
	// OpenTimeout is how long the breaker stays open before it lets
	// probe calls through (half-open). Default 30s.
	OpenTimeout time.Duration
	// HalfOpenCalls is how many calls may run while half-open; that many
	// successes in a row close the breaker, one failure opens it again.
	// Default 1.
	HalfOpenCalls int
	// Interval, when above 0, clears the failure counts every Interval
	// while closed. Default 0: counts clear only on a success.
	Interval time.Duration
	// TripOnPermanent counts permanent errors (message.IsPermanent) as
	// failures. Default false: a permanent error says the message is bad,
	// not that what the handler depends on is down, so it counts neither
	// as a failure nor as a success.
	TripOnPermanent bool
	// OnStateChange, when set, is called on every change of state.
	OnStateChange func(name string, from, to gobreaker.State)
}

// Breaker returns middleware with a circuit breaker
// (github.com/sony/gobreaker/v2) around the handler. After
// ConsecutiveFailures failures in a row it opens: for OpenTimeout the
// handler is not called, and each message is deferred (Defer) with an
// error of code Unavailable wrapping gobreaker.ErrOpenState, and a
// redelivery delay of the time left until the breaker half-opens. Then it
// lets HalfOpenCalls probe calls through and closes when they succeed; a
// message that arrives while the probes run is deferred the same way
// (wrapping gobreaker.ErrTooManyRequests) for OpenTimeout, as if the probes
// will fail.
//
// A rejection is a deferral, not a failure of the message: Retry neither
// retries nor counts it and DLQ never dead-letters it; the message comes
// back from the broker when the breaker may let it through. Errors
// returned after the handler's context ended (drain, shutdown) are not
// counted by the breaker. One Breaker value is one breaker: every
// subscription that uses the returned middleware shares it.
//
// Place Breaker inside Retry, where it sees each handler call, so that a
// dependency failing under retries opens it quickly.
//
// Errors: InvalidArgument for a negative setting.
func Breaker(cfg BreakerConfig) (subscriber.Middleware, error) {
	if cfg.ConsecutiveFailures < 0 || cfg.OpenTimeout < 0 || cfg.HalfOpenCalls < 0 || cfg.Interval < 0 {
		return nil, message.Errorf(message.InvalidArgument, "middleware: breaker", "negative setting in %+v", cfg)
	}
	if cfg.Name == "" {
		cfg.Name = "handler"
	}
	if cfg.ConsecutiveFailures == 0 {
		cfg.ConsecutiveFailures = 5
	}
	if cfg.OpenTimeout == 0 {
		cfg.OpenTimeout = 30 * time.Second
	}
	if cfg.HalfOpenCalls == 0 {
		cfg.HalfOpenCalls = 1
	}
	b := &breaker{cfg: cfg}
	trip := uint32(cfg.ConsecutiveFailures)
	b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        cfg.Name,
		MaxRequests: uint32(cfg.HalfOpenCalls),
		Interval:    cfg.Interval,
		Timeout:     cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= trip },
		OnStateChange: func(name string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				// gobreaker keeps the open state's expiry to itself; keep
				// our own to tell redeliveries when to come back.
				b.openUntil.Store(time.Now().Add(cfg.OpenTimeout).UnixNano())
			}
			if cfg.OnStateChange != nil {
				cfg.OnStateChange(name, from, to)
			}
		},
		IsExcluded: func(err error) bool {
			return errors.Is(err, errExcluded)
		},
	})
	return b.middleware, nil
}

// errExcluded marks a handler error that must not move the breaker; the
// handler's own error travels beside it.
var errExcluded = errors.New("excluded from breaker counts")

type excluded struct{ err error }

func (e excluded) Error() string   { return e.err.Error() }
func (e excluded) Unwrap() []error { return []error{e.err, errExcluded} }

type breaker struct {
	cfg       BreakerConfig
	cb        *gobreaker.CircuitBreaker[struct{}]
	openUntil atomic.Int64 // UnixNano
}

func (b *breaker) middleware(next subscriber.Handler) subscriber.Handler {
	return func(ctx context.Context, m *message.Message) error {
		var herr error
		_, err := b.cb.Execute(func() (struct{}, error) {
			herr = next(ctx, m)
			if herr != nil && (ctx.Err() != nil || (!b.cfg.TripOnPermanent && message.IsPermanent(herr))) {
				return struct{}{}, excluded{herr}
			}
			return struct{}{}, herr
		})
		if err == nil || herr != nil {
			// The handler ran: its own error (or nil) is the outcome.
			return herr
		}
		// Rejected without calling the handler.
		delay := b.cfg.OpenTimeout
		if errors.Is(err, gobreaker.ErrOpenState) {
			delay = max(time.Until(time.Unix(0, b.openUntil.Load())), time.Millisecond)
		}
		return Defer(message.Errorf(message.Unavailable, "middleware: breaker", "circuit breaker %q: %w", b.cfg.Name, err), delay)
	}
}
