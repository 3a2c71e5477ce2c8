package middleware

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

var errTransient = errors.New("downstream unavailable")

// failing returns a handler that fails with err on its first n calls and
// then succeeds, and a counter of its calls.
func failing(n int, err error) (subscriber.Handler, *atomic.Int32) {
	var calls atomic.Int32
	return func(ctx context.Context, m *message.Message) error {
		if int(calls.Add(1)) <= n {
			return err
		}
		return nil
	}, &calls
}

type retryCall struct {
	attempt int
	delay   time.Duration
	err     error
}

// retryWith builds Retry on a fake clock and records OnRetry calls.
func retryWith(t *testing.T, cfg RetryConfig) (subscriber.Middleware, *fakeClock, *[]retryCall) {
	mw, clk, calls, _ := retrierWith(t, cfg)
	return mw, clk, calls
}

// retrierWith is retryWith that also returns the retrier, for tests that
// look at its attempt counters.
func retrierWith(t *testing.T, cfg RetryConfig) (subscriber.Middleware, *fakeClock, *[]retryCall, *retrier) {
	t.Helper()
	clk := newFakeClock()
	var calls []retryCall
	cfg.sleep, cfg.now = clk.sleep, clk.now
	cfg.OnRetry = func(ctx context.Context, m *message.Message, attempt int, delay time.Duration, err error) {
		calls = append(calls, retryCall{attempt, delay, err})
	}
	r, err := newRetrier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mw := subscriber.Middleware(r.inProcess)
	if r.cfg.Mode == Redelivery {
		mw = r.redelivery
	}
	return mw, clk, &calls, r
}

func ms(ns ...int) []time.Duration {
	out := make([]time.Duration, len(ns))
	for i, n := range ns {
		out[i] = time.Duration(n) * time.Millisecond
	}
	return out
}

func TestRetryInProcessSucceedsAfterTransientFailures(t *testing.T) {
	mw, clk, calls := retryWith(t, RetryConfig{MaxAttempts: 5, InitialInterval: 100 * time.Millisecond, Multiplier: 2, RandomizationFactor: NoJitter})
	h, n := failing(2, errTransient)
	if err := mw(h)(context.Background(), received("m1", "orders", "g", 1)); err != nil {
		t.Fatalf("err = %v, want nil", err)
	}
	if n.Load() != 3 {
		t.Fatalf("handler calls = %d, want 3", n.Load())
	}
	if got, want := clk.slept(), ms(100, 200); !slices.Equal(got, want) {
		t.Fatalf("waits = %v, want %v", got, want)
	}
	want := []retryCall{{1, 100 * time.Millisecond, errTransient}, {2, 200 * time.Millisecond, errTransient}}
	if !slices.Equal(*calls, want) {
		t.Fatalf("OnRetry calls = %v, want %v", *calls, want)
	}
}

func TestRetryInProcessExhausts(t *testing.T) {
	mw, clk, _ := retryWith(t, RetryConfig{MaxAttempts: 4, InitialInterval: 100 * time.Millisecond, Multiplier: 3, MaxInterval: 500 * time.Millisecond, RandomizationFactor: NoJitter})
	h, n := failing(100, errTransient)
	err := mw(h)(context.Background(), received("m1", "orders", "g", 1))
	if n.Load() != 4 {
		t.Fatalf("handler calls = %d, want 4", n.Load())
	}
	// 100, 300, then capped at 500.
	if got, want := clk.slept(), ms(100, 300, 500); !slices.Equal(got, want) {
		t.Fatalf("waits = %v, want %v", got, want)
	}
	var ex *ExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 4 || ex.Err != errTransient {
		t.Fatalf("err = %#v, want ExhaustedError{4, errTransient}", err)
	}
	if !errors.Is(err, errTransient) || !message.IsPermanent(err) {
		t.Fatalf("err = %v: want it to wrap the handler's error and be permanent", err)
	}
	if d, ok := message.RetryDelay(err); !ok || d != 500*time.Millisecond {
		t.Fatalf("redelivery delay = %v, %v; want MaxInterval 500ms", d, ok)
	}
}

func TestRetryBackoffCapsAtMaxInterval(t *testing.T) {
	mw, clk, _ := retryWith(t, RetryConfig{MaxAttempts: 8, InitialInterval: 10 * time.Millisecond, Multiplier: 2, MaxInterval: 50 * time.Millisecond, RandomizationFactor: NoJitter})
	h, _ := failing(100, errTransient)
	_ = mw(h)(context.Background(), received("m1", "orders", "g", 1))
	if got, want := clk.slept(), ms(10, 20, 40, 50, 50, 50, 50); !slices.Equal(got, want) {
		t.Fatalf("waits = %v, want %v", got, want)
	}
}

func TestRetryJitterStaysWithinFactor(t *testing.T) {
	mw, clk, _ := retryWith(t, RetryConfig{MaxAttempts: 4, InitialInterval: 100 * time.Millisecond, Multiplier: 2, RandomizationFactor: 0.5})
	h, _ := failing(1000, errTransient)
	const runs = 200
	for range runs {
		_ = mw(h)(context.Background(), received("m1", "orders", "g", 1))
	}
	waits := clk.slept()
	if len(waits) != 3*runs {
		t.Fatalf("waits = %d, want %d", len(waits), 3*runs)
	}
	distinct := map[time.Duration]bool{}
	for i, w := range waits {
		base := ms(100, 200, 400)[i%3]
		lo, hi := base/2, base+base/2+1
		if w < lo || w > hi {
			t.Fatalf("wait %d = %v, outside [%v, %v]", i, w, lo, hi)
		}
		distinct[w] = true
	}
	if len(distinct) < runs {
		t.Fatalf("only %d distinct waits in %d: jitter is not spreading them", len(distinct), len(waits))
	}
}

func TestRetryDefaultJitterIsHalf(t *testing.T) {
	mw, clk, _ := retryWith(t, RetryConfig{MaxAttempts: 2, InitialInterval: time.Second})
	h, _ := failing(1000, errTransient)
	seen := map[time.Duration]bool{}
	for range 100 {
		_ = mw(h)(context.Background(), received("m1", "orders", "g", 1))
	}
	for _, w := range clk.slept() {
		if w < 500*time.Millisecond || w > 1500*time.Millisecond+1 {
			t.Fatalf("wait %v outside [500ms, 1.5s]", w)
		}
		seen[w] = true
	}
	if len(seen) < 50 {
		t.Fatalf("only %d distinct waits: default jitter missing", len(seen))
	}
}

func TestRetryPermanentIsNotRetried(t *testing.T) {
	for _, mode := range []RetryMode{InProcess, Redelivery} {
		t.Run(mode.String(), func(t *testing.T) {
			mw, clk, calls := retryWith(t, RetryConfig{Mode: mode, MaxAttempts: 5})
			perm := message.PermanentError(errors.New("bad payload"))
			h, n := failing(100, perm)
			err := mw(h)(context.Background(), received("m1", "orders", "g", 1))
			if err != perm {
				t.Fatalf("err = %v, want the handler's permanent error unchanged", err)
			}
			if n.Load() != 1 || len(clk.slept()) != 0 || len(*calls) != 0 {
				t.Fatalf("calls %d, waits %v, OnRetry %v: want 1 call, no wait, no retry", n.Load(), clk.slept(), *calls)
			}
		})
	}
}

func TestRetryHonoursLongerRetryAfter(t *testing.T) {
	mw, clk, _ := retryWith(t, RetryConfig{MaxAttempts: 3, InitialInterval: 100 * time.Millisecond, RandomizationFactor: NoJitter})
	h, _ := failing(1, message.RetryAfter(errTransient, 2*time.Second))
	if err := mw(h)(context.Background(), received("m1", "orders", "g", 1)); err != nil {
		t.Fatal(err)
	}
	if got, want := clk.slept(), []time.Duration{2 * time.Second}; !slices.Equal(got, want) {
		t.Fatalf("waits = %v, want %v", got, want)
	}
}

func TestRetryInProcessReturnsPromptlyOnCancel(t *testing.T) {
	// Real sleeping: the wait is an hour, so only the cancel can end it.
	retrying := make(chan struct{})
	mw, err := Retry(RetryConfig{MaxAttempts: 5, InitialInterval: time.Hour, RandomizationFactor: NoJitter,
		OnRetry: func(context.Context, *message.Message, int, time.Duration, error) { close(retrying) }})
	if err != nil {
		t.Fatal(err)
	}
	h, n := failing(100, errTransient)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mw(h)(ctx, received("m1", "orders", "g", 1)) }()
	<-retrying
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("returned %v after cancel", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Retry did not return after cancel")
	}
	if n.Load() != 1 {
		t.Fatalf("handler calls = %d, want 1", n.Load())
	}
}

func TestRetryStopsWhenContextEndedDuringCall(t *testing.T) {
	for _, mode := range []RetryMode{InProcess, Redelivery} {
		t.Run(mode.String(), func(t *testing.T) {
			mw, clk, _ := retryWith(t, RetryConfig{Mode: mode, MaxAttempts: 5})
			ctx, cancel := context.WithCancel(context.Background())
			var n int
			h := func(ctx context.Context, m *message.Message) error {
				n++
				cancel()
				return ctx.Err()
			}
			err := mw(h)(ctx, received("m1", "orders", "g", 1))
			if err != context.Canceled || n != 1 || len(clk.slept()) != 0 {
				t.Fatalf("err %v, calls %d, waits %v: want context.Canceled, 1 call, no wait", err, n, clk.slept())
			}
			if _, ok := message.RetryDelay(err); ok {
				t.Fatal("a cut-short call asked for a retry delay")
			}
		})
	}
}

func TestRetryRedeliveryUsesBrokerAttempt(t *testing.T) {
	mw, clk, calls := retryWith(t, RetryConfig{Mode: Redelivery, MaxAttempts: 4, InitialInterval: 100 * time.Millisecond, Multiplier: 2, RandomizationFactor: NoJitter})
	h, n := failing(100, errTransient)
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond} {
		err := mw(h)(context.Background(), received("m1", "orders", "g", attempt))
		d, ok := message.RetryDelay(err)
		if !ok || d != want || !errors.Is(err, errTransient) || message.IsPermanent(err) {
			t.Fatalf("attempt %d: err %v, delay %v %v; want transient RetryAfter %v", attempt, err, d, ok, want)
		}
	}
	err := mw(h)(context.Background(), received("m1", "orders", "g", 4))
	var ex *ExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 4 || !errors.Is(err, errTransient) {
		t.Fatalf("attempt 4: err = %v, want ExhaustedError{4}", err)
	}
	if n.Load() != 4 || len(clk.slept()) != 0 || len(*calls) != 3 {
		t.Fatalf("calls %d, waits %v, OnRetry %d: want 4 calls, no in-process wait, 3 retries", n.Load(), clk.slept(), len(*calls))
	}
	// Success on a later delivery passes nil through.
	ok, _ := failing(0, nil)
	if err := mw(ok)(context.Background(), received("m1", "orders", "g", 2)); err != nil {
		t.Fatal(err)
	}
}

func TestRetryRedeliveryCountsInProcessWhenBrokerDoesNot(t *testing.T) {
	mw, _, _, r := retrierWith(t, RetryConfig{Mode: Redelivery, MaxAttempts: 3, InitialInterval: 100 * time.Millisecond, Multiplier: 2, RandomizationFactor: NoJitter})
	h, n := failing(100, errTransient)
	handle := mw(h)
	var delays []time.Duration
	for range 2 {
		err := handle(context.Background(), received("m1", "orders", "g", 0))
		d, _ := message.RetryDelay(err)
		delays = append(delays, d)
	}
	if !slices.Equal(delays, ms(100, 200)) {
		t.Fatalf("delays = %v, want [100ms 200ms]", delays)
	}
	// Another group receives its own copy: counted apart.
	err := handle(context.Background(), received("m1", "orders", "other", 0))
	if d, _ := message.RetryDelay(err); d != 100*time.Millisecond {
		t.Fatalf("other group's first delay = %v, want 100ms", d)
	}
	if r.counters.len() != 2 {
		t.Fatalf("counters = %d, want 2", r.counters.len())
	}
	err = handle(context.Background(), received("m1", "orders", "g", 0))
	var ex *ExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 3 {
		t.Fatalf("third delivery: err = %v, want ExhaustedError{3}", err)
	}
	if n.Load() != 4 || r.counters.len() != 1 {
		t.Fatalf("calls %d, counters %d: want 4 calls, 1 counter left (group other)", n.Load(), r.counters.len())
	}
	// Success forgets the counter.
	ok, _ := failing(0, nil)
	if err := mw(ok)(context.Background(), received("m1", "orders", "other", 0)); err != nil {
		t.Fatal(err)
	}
	if r.counters.len() != 0 {
		t.Fatalf("counters = %d after success, want 0", r.counters.len())
	}
}

func TestRetryRedeliveryReadsAttemptMetadata(t *testing.T) {
	mw, _, _ := retryWith(t, RetryConfig{Mode: Redelivery, MaxAttempts: 3, RandomizationFactor: NoJitter})
	h, _ := failing(100, errTransient)
	m := received("m1", "orders", "g", 0)
	m.Metadata = message.Metadata{message.KeyAttempt: "3"}
	var ex *ExhaustedError
	if err := mw(h)(context.Background(), m); !errors.As(err, &ex) || ex.Attempts != 3 {
		t.Fatalf("err = %v, want ExhaustedError{3} from the metadata's attempt", err)
	}
}

func TestRetryRedeliveryCountersAreBounded(t *testing.T) {
	mw, _, _, r := retrierWith(t, RetryConfig{Mode: Redelivery, MaxAttempts: 5, CounterSize: 2, InitialInterval: 100 * time.Millisecond, Multiplier: 2, RandomizationFactor: NoJitter})
	h, _ := failing(1000, errTransient)
	handle := mw(h)
	for _, id := range []string{"a", "a", "b", "c"} {
		_ = handle(context.Background(), received(id, "orders", "g", 0))
	}
	if r.counters.len() != 2 {
		t.Fatalf("counters = %d, want 2", r.counters.len())
	}
	// "a" was forgotten first (least recently failed): it starts over.
	err := handle(context.Background(), received("a", "orders", "g", 0))
	if d, _ := message.RetryDelay(err); d != 100*time.Millisecond {
		t.Fatalf("forgotten message's delay = %v, want the first delay 100ms", d)
	}
	err = handle(context.Background(), received("c", "orders", "g", 0))
	if d, _ := message.RetryDelay(err); d != 200*time.Millisecond {
		t.Fatalf("remembered message's delay = %v, want the second delay 200ms", d)
	}
}

func TestRetryConfigValidation(t *testing.T) {
	for i, cfg := range []RetryConfig{
		{Mode: RetryMode(7)},
		{MaxAttempts: -1},
		{InitialInterval: -time.Second},
		{MaxInterval: -time.Second},
		{CounterSize: -1},
		{Multiplier: 0.5},
		{RandomizationFactor: 1.5},
		{RandomizationFactor: -0.5},
		{InitialInterval: time.Second, MaxInterval: time.Millisecond},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			mw, err := Retry(cfg)
			wantInvalid(t, err)
			if mw != nil {
				t.Fatal("middleware returned with an error")
			}
		})
	}
	r, err := newRetrier(RetryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c := r.cfg
	if c.MaxAttempts != 5 || c.InitialInterval != 100*time.Millisecond || c.Multiplier != 2 || c.MaxInterval != 30*time.Second || r.jitter != 0.5 || c.CounterSize != 10000 {
		t.Fatalf("defaults = %+v jitter %v", c, r.jitter)
	}
}
