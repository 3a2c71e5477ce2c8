package middleware

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// innerProbe is an Inner middleware that records what each call sees.
type innerProbe struct {
	calls        int
	deadlines    int
	correlations []string
}

func (p *innerProbe) mw(next subscriber.Handler) subscriber.Handler {
	return func(ctx context.Context, m *message.Message) error {
		p.calls++
		if _, ok := ctx.Deadline(); ok {
			p.deadlines++
		}
		info, _ := CorrelationFromContext(ctx)
		p.correlations = append(p.correlations, info.CorrelationID)
		return next(ctx, m)
	}
}

// fullChain builds DefaultChain with every stage, on fake clocks.
func fullChain(t *testing.T, pub *fakePublisher, probe *innerProbe) (subscriber.Middleware, *recorder) {
	t.Helper()
	rec := &recorder{level: slog.LevelDebug}
	clk := newFakeClock()
	mw, err := DefaultChain(ChainConfig{
		Logging:   &LoggingConfig{Logger: slog.New(rec)},
		DLQ:       &DLQConfig{Publisher: pub},
		Retry:     &RetryConfig{MaxAttempts: 3, sleep: clk.sleep},
		Breaker:   &BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: time.Hour},
		RateLimit: &RateLimitConfig{Rate: 1000, Burst: 100},
		Timeout:   &TimeoutConfig{Timeout: time.Minute},
		Inner:     []subscriber.Middleware{probe.mw},
	})
	if err != nil {
		t.Fatal(err)
	}
	return mw, rec
}

func TestDefaultChainDeadLettersAPanicAtOnce(t *testing.T) {
	pub, probe := &fakePublisher{}, &innerProbe{}
	mw, rec := fullChain(t, pub, probe)
	if err := mw(panicking("boom"))(context.Background(), received("m1", "orders", "g", 1)); err != nil {
		t.Fatalf("err = %v, want nil (dead-lettered)", err)
	}
	// Recoverer is inside Retry: the panic is permanent, so one call.
	if probe.calls != 1 || probe.deadlines != 1 || probe.correlations[0] != "m1" {
		t.Fatalf("inner probe = %+v, want one call with a deadline and the correlation", probe)
	}
	md := oneDeadLetter(t, pub, "orders.dlq").Metadata
	if md[message.KeyDLQReason] != "permanent" || md[message.KeyDLQAttempts] != "1" || !strings.Contains(md[message.KeyDLQError], "handler panicked: boom") {
		t.Fatalf("dead letter metadata = %v", md)
	}
	if got := rec.got(); len(got) != 1 || got[0].attrs["outcome"] != "dead-lettered" || got[0].attrs["correlation_id"] != "m1" {
		t.Fatalf("log records = %+v", got)
	}
}

func TestDefaultChainBreakerCountsEachRetryAndDefers(t *testing.T) {
	pub, probe := &fakePublisher{}, &innerProbe{}
	mw, rec := fullChain(t, pub, probe)
	err := mw(returning(errTransient))(context.Background(), received("m1", "orders", "g", 1))
	// Two failures open the breaker inside Retry; the third attempt is
	// rejected without reaching the inner stages, and the rejection is a
	// deferral: neither retried nor dead-lettered, but nacked until the
	// breaker may close.
	if !IsDeferred(err) || !errors.Is(err, gobreaker.ErrOpenState) {
		t.Fatalf("err = %v, want the breaker's deferral", err)
	}
	if d, ok := message.RetryDelay(err); !ok || d <= 59*time.Minute || d > time.Hour {
		t.Fatalf("redelivery delay = %v %v, want the hour left in the open state", d, ok)
	}
	if probe.calls != 2 || len(pub.got()) != 0 {
		t.Fatalf("inner calls %d, publishes %v: want 2 calls, no dead letter", probe.calls, pub.got())
	}
	if got := rec.got(); len(got) != 1 || got[0].attrs["outcome"] != "deferred" || got[0].level != slog.LevelInfo {
		t.Fatalf("log records = %+v", got)
	}
}

func TestDefaultChainMinimal(t *testing.T) {
	mw, err := DefaultChain(ChainConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var info CorrelationInfo
	err = mw(func(ctx context.Context, m *message.Message) error {
		info, _ = CorrelationFromContext(ctx)
		panic("boom")
	})(context.Background(), received("m1", "orders", "g", 1))
	if !message.IsPermanent(err) || info.CorrelationID != "m1" {
		t.Fatalf("err %v, correlation %+v: want Correlation and Recoverer always present", err, info)
	}
}

func TestDefaultChainReportsStageErrors(t *testing.T) {
	for _, cfg := range []ChainConfig{
		{DLQ: &DLQConfig{}},
		{Retry: &RetryConfig{MaxAttempts: -1}},
		{Breaker: &BreakerConfig{OpenTimeout: -1}},
		{RateLimit: &RateLimitConfig{}},
		{Timeout: &TimeoutConfig{}},
	} {
		mw, err := DefaultChain(cfg)
		wantInvalid(t, err)
		if mw != nil {
			t.Fatal("middleware returned with an error")
		}
	}
}
