package middleware

import (
	"github.com/polybus/polybus/subscriber"
)

// ChainConfig selects and configures the stages of DefaultChain. A nil
// stage is left out; a pointer to a zero config includes the stage with
// its defaults. Correlation and Recoverer are always included.
type ChainConfig struct {
	// Logging logs one line per delivery, seeing its final outcome.
	Logging *LoggingConfig
	// DLQ dead-letters permanent failures and exhausted retries.
	DLQ *DLQConfig
	// Retry retries transient failures.
	Retry *RetryConfig
	// Breaker stops calling a handler whose dependency is down.
	Breaker *BreakerConfig
	// RateLimit spaces handler calls.
	RateLimit *RateLimitConfig
	// Timeout bounds each handler call.
	Timeout *TimeoutConfig
	// Inner middleware runs inside Timeout and outside Recoverer, in the
	// order given: the place for deduplication and ordering middleware.
	Inner []subscriber.Middleware
	// Recoverer configures the innermost stage, which turns a panic of
	// the handler into a (by default permanent) error.
	Recoverer RecovererConfig
}

// DefaultChain builds the stages that cfg selects into one middleware, in
// the order that makes them compose, outermost first:
//
//	Correlation → Logging → DLQ → Retry → Breaker → RateLimit → Timeout → Inner... → Recoverer → handler
//
// The package documentation gives the reason for each position. The result
// is built with subscriber.Chain; pass it to subscriber.Use.
//
// Errors: the first stage constructor's error (InvalidArgument).
func DefaultChain(cfg ChainConfig) (subscriber.Middleware, error) {
	var mws []subscriber.Middleware
	add := func(mw subscriber.Middleware, err error) error {
		if err != nil {
			return err
		}
		mws = append(mws, mw)
		return nil
	}
	if err := add(Correlation(CorrelationConfig{})); err != nil {
		return nil, err
	}
	if cfg.Logging != nil {
		if err := add(Logging(*cfg.Logging)); err != nil {
			return nil, err
		}
	}
	if cfg.DLQ != nil {
		if err := add(DLQ(*cfg.DLQ)); err != nil {
			return nil, err
		}
	}
	if cfg.Retry != nil {
		if err := add(Retry(*cfg.Retry)); err != nil {
			return nil, err
		}
	}
	if cfg.Breaker != nil {
		if err := add(Breaker(*cfg.Breaker)); err != nil {
			return nil, err
		}
	}
	if cfg.RateLimit != nil {
		if err := add(RateLimit(*cfg.RateLimit)); err != nil {
			return nil, err
		}
	}
	if cfg.Timeout != nil {
		if err := add(Timeout(*cfg.Timeout)); err != nil {
			return nil, err
		}
	}
	mws = append(mws, cfg.Inner...)
	if err := add(Recoverer(cfg.Recoverer)); err != nil {
		return nil, err
	}
	return subscriber.Chain(mws...), nil
}
