package middleware

import (
	"context"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// BenchmarkMiddleware measures the per-message overhead of each middleware
// on the success path (the handler returns nil), against a bare handler,
// in one run:
//
//	go test -run '^$' -bench Middleware -benchmem ./middleware/
//
// Other middleware of this package may add sub-benchmarks here or keep
// theirs in their own files.
func BenchmarkMiddleware(b *testing.B) {
	must := func(mw subscriber.Middleware, err error) subscriber.Middleware {
		if err != nil {
			b.Fatal(err)
		}
		return mw
	}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	nop := &nopPublisher{}
	cases := []struct {
		name string
		mw   subscriber.Middleware
	}{
		{"bare", nil},
		{"retry-inprocess", must(Retry(RetryConfig{}))},
		{"retry-redelivery", must(Retry(RetryConfig{Mode: Redelivery}))},
		{"dlq", must(DLQ(DLQConfig{Publisher: nop}))},
		{"timeout", must(Timeout(TimeoutConfig{Timeout: time.Minute}))},
		{"recoverer", must(Recoverer(RecovererConfig{}))},
		{"breaker", must(Breaker(BreakerConfig{}))},
		{"ratelimit-inf", must(RateLimit(RateLimitConfig{Rate: math.Inf(1)}))},
		{"ratelimit-1e9", must(RateLimit(RateLimitConfig{Rate: 1e9, Burst: 1000}))},
		{"correlation", must(Correlation(CorrelationConfig{}))},
		{"logging-text", must(Logging(LoggingConfig{Logger: discard}))},
		{"logging-disabled", must(Logging(LoggingConfig{Logger: discard, SuccessLevel: slog.LevelDebug}))},
		{"chain-minimal", must(DefaultChain(ChainConfig{}))},
		{"chain-default", must(DefaultChain(ChainConfig{
			Logging: &LoggingConfig{Logger: discard, SuccessLevel: slog.LevelDebug},
			DLQ:     &DLQConfig{Publisher: nop},
			Retry:   &RetryConfig{Mode: Redelivery},
			Timeout: &TimeoutConfig{Timeout: time.Minute},
		}))},
		{"chain-full", must(DefaultChain(ChainConfig{
			Logging:   &LoggingConfig{Logger: discard},
			DLQ:       &DLQConfig{Publisher: nop},
			Retry:     &RetryConfig{},
			Breaker:   &BreakerConfig{},
			RateLimit: &RateLimitConfig{Rate: math.Inf(1)},
			Timeout:   &TimeoutConfig{Timeout: time.Minute},
		}))},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var h subscriber.Handler = func(context.Context, *message.Message) error { return nil }
			if c.mw != nil {
				h = c.mw(h)
			}
			m := received("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "orders", "billing", 1)
			// Like the subscriber's handler context: cancelable, so that
			// contexts derived from it must register with it.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b.ReportAllocs()
			for b.Loop() {
				if err := h(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPropagate measures stamping correlation on one outgoing message.
func BenchmarkPropagate(b *testing.B) {
	ctx := ContextWithCorrelation(context.Background(), CorrelationInfo{CorrelationID: "flow", MessageID: "m1"})
	b.ReportAllocs()
	for b.Loop() {
		Propagate(ctx, &message.Message{ID: "out"})
	}
}

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, string, ...*message.Message) error { return nil }
