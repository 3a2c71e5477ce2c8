package middleware

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

func rateLimitWith(t *testing.T, cfg RateLimitConfig) (subscriber.Middleware, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	cfg.now, cfg.sleep = clk.now, clk.sleep
	mw, err := RateLimit(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return mw, clk
}

func TestRateLimitWaitsForTokens(t *testing.T) {
	mw, clk := rateLimitWith(t, RateLimitConfig{Rate: 10, Burst: 2})
	h, n := failing(0, nil)
	for range 5 {
		if err := mw(h)(context.Background(), received("m", "t", "g", 1)); err != nil {
			t.Fatal(err)
		}
	}
	// Two from the burst at once, then one every 100ms.
	if got, want := clk.slept(), ms(100, 100, 100); !slices.Equal(got, want) {
		t.Fatalf("waits = %v, want %v", got, want)
	}
	if n.Load() != 5 {
		t.Fatalf("calls = %d, want 5", n.Load())
	}
	// A quiet second refills the bucket up to the burst.
	clk.advance(time.Second)
	for range 2 {
		_ = mw(h)(context.Background(), received("m", "t", "g", 1))
	}
	if got := len(clk.slept()); got != 3 {
		t.Fatalf("waits = %v after a quiet second, want no new wait", clk.slept())
	}
}

func TestRateLimitRealTime(t *testing.T) {
	mw, err := RateLimit(RateLimitConfig{Rate: 50})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := failing(0, nil)
	start := time.Now()
	for range 5 {
		if err := mw(h)(context.Background(), received("m", "t", "g", 1)); err != nil {
			t.Fatal(err)
		}
	}
	// One at once, four more at 20ms intervals.
	if took := time.Since(start); took < 75*time.Millisecond || took > 5*time.Second {
		t.Fatalf("5 calls at 50/s took %v, want about 80ms", took)
	}
}

func TestRateLimitCancelReturnsTokenAndSkipsHandler(t *testing.T) {
	mw, clk := rateLimitWith(t, RateLimitConfig{Rate: 10})
	h, n := failing(0, nil)
	_ = mw(h)(context.Background(), received("m", "t", "g", 1))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := mw(h)(ctx, received("m", "t", "g", 1)); err != context.Canceled {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n.Load() != 1 || len(clk.slept()) != 0 {
		t.Fatalf("calls %d, waits %v: want the handler skipped and no wait", n.Load(), clk.slept())
	}
}

func TestRateLimitCancelDuringWaitGivesTokenBack(t *testing.T) {
	lim := rate.NewLimiter(10, 1)
	clk := newFakeClock()
	ctx, cancel := context.WithCancel(context.Background())
	mw, err := RateLimit(RateLimitConfig{Limiter: lim, now: clk.now, sleep: func(context.Context, time.Duration) error {
		cancel()
		return context.Canceled
	}})
	if err != nil {
		t.Fatal(err)
	}
	h, n := failing(0, nil)
	_ = mw(h)(context.Background(), received("m", "t", "g", 1))
	if err := mw(h)(ctx, received("m", "t", "g", 1)); err != context.Canceled {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// The cancelled reservation was given back: the next token is still
	// due 100ms after the first call, not 200ms.
	if r := lim.ReserveN(clk.now(), 1); r.DelayFrom(clk.now()) != 100*time.Millisecond {
		t.Fatalf("next delay = %v, want 100ms", r.DelayFrom(clk.now()))
	}
	if n.Load() != 1 {
		t.Fatalf("calls = %d, want 1", n.Load())
	}
}

func TestRateLimitDoesNotWaitPastDeadline(t *testing.T) {
	mw, err := RateLimit(RateLimitConfig{Rate: 1})
	if err != nil {
		t.Fatal(err)
	}
	h, n := failing(0, nil)
	_ = mw(h)(context.Background(), received("m", "t", "g", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = mw(h)(ctx, received("m", "t", "g", 1))
	if !errors.Is(err, message.ErrResourceExhausted) || message.IsPermanent(err) {
		t.Fatalf("err = %v, want a transient ResourceExhausted", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("took %v: it waited", took)
	}
	if n.Load() != 1 {
		t.Fatalf("calls = %d, want 1", n.Load())
	}
}

func TestRateLimitInfiniteRate(t *testing.T) {
	mw, clk := rateLimitWith(t, RateLimitConfig{Rate: math.Inf(1)})
	h, _ := failing(0, nil)
	for range 100 {
		_ = mw(h)(context.Background(), received("m", "t", "g", 1))
	}
	if len(clk.slept()) != 0 {
		t.Fatalf("waits = %v, want none", clk.slept())
	}
}

func TestRateLimitConfigValidation(t *testing.T) {
	for _, cfg := range []RateLimitConfig{
		{},
		{Rate: -1},
		{Rate: math.NaN()},
		{Rate: 1, Burst: -1},
		{Limiter: rate.NewLimiter(1, 1), Rate: 1},
		{Limiter: rate.NewLimiter(1, 1), Burst: 1},
	} {
		mw, err := RateLimit(cfg)
		wantInvalid(t, err)
		if mw != nil {
			t.Fatal("middleware returned with an error")
		}
	}
}
