package middleware

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

type transition struct{ from, to gobreaker.State }

// breakerWith builds a Breaker that records its state changes.
func breakerWith(t *testing.T, cfg BreakerConfig) (subscriber.Middleware, func() []transition) {
	t.Helper()
	var mu sync.Mutex
	var changes []transition
	cfg.OnStateChange = func(name string, from, to gobreaker.State) {
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, transition{from, to})
	}
	mw, err := Breaker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return mw, func() []transition {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(changes)
	}
}

// switchable is a handler whose result the test sets, counting calls.
type switchable struct {
	mu    sync.Mutex
	err   error
	calls int
}

func (s *switchable) set(err error) { s.mu.Lock(); s.err = err; s.mu.Unlock() }
func (s *switchable) n() int        { s.mu.Lock(); defer s.mu.Unlock(); return s.calls }
func (s *switchable) handle(ctx context.Context, m *message.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	return s.err
}

func wantRejected(t *testing.T, err error, cause error, maxDelay time.Duration) {
	t.Helper()
	d, ok := message.RetryDelay(err)
	if !errors.Is(err, cause) || message.CodeOf(err) != message.Unavailable || message.IsPermanent(err) || !ok || d <= 0 || d > maxDelay {
		t.Fatalf("err = %v (code %v, delay %v %v), want Unavailable wrapping %v with a delay in (0, %v]", err, message.CodeOf(err), d, ok, cause, maxDelay)
	}
}

func TestBreakerOpensHalfOpensAndCloses(t *testing.T) {
	const open = 100 * time.Millisecond
	mw, changes := breakerWith(t, BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: open})
	s := &switchable{err: errTransient}
	h := mw(s.handle)
	ctx := context.Background()
	for i := range 3 {
		if err := h(ctx, received("m", "t", "g", 1)); err != errTransient {
			t.Fatalf("call %d: err = %v, want the handler's error", i, err)
		}
	}
	// Open: the handler is not called; redeliver when the open state ends.
	wantRejected(t, h(ctx, received("m", "t", "g", 1)), gobreaker.ErrOpenState, open)
	if s.n() != 3 {
		t.Fatalf("handler calls = %d, want 3", s.n())
	}
	if got, want := changes(), []transition{{gobreaker.StateClosed, gobreaker.StateOpen}}; !slices.Equal(got, want) {
		t.Fatalf("state changes = %v, want %v", got, want)
	}
	// After OpenTimeout one probe goes through; its success closes.
	s.set(nil)
	start := time.Now()
	eventually(t, "a probe call", func() bool { return h(ctx, received("m", "t", "g", 1)) == nil })
	if waited := time.Since(start); waited > open+time.Second {
		t.Fatalf("probe after %v, want about %v", waited, open)
	}
	if s.n() != 4 {
		t.Fatalf("handler calls = %d, want 4", s.n())
	}
	want := []transition{{gobreaker.StateClosed, gobreaker.StateOpen}, {gobreaker.StateOpen, gobreaker.StateHalfOpen}, {gobreaker.StateHalfOpen, gobreaker.StateClosed}}
	if got := changes(); !slices.Equal(got, want) {
		t.Fatalf("state changes = %v, want %v", got, want)
	}
}

func TestBreakerFailedProbeReopens(t *testing.T) {
	mw, changes := breakerWith(t, BreakerConfig{ConsecutiveFailures: 1, OpenTimeout: 20 * time.Millisecond})
	s := &switchable{err: errTransient}
	h := mw(s.handle)
	ctx := context.Background()
	_ = h(ctx, received("m", "t", "g", 1))
	eventually(t, "a probe call", func() bool { return h(ctx, received("m", "t", "g", 1)) == errTransient })
	want := []transition{{gobreaker.StateClosed, gobreaker.StateOpen}, {gobreaker.StateOpen, gobreaker.StateHalfOpen}, {gobreaker.StateHalfOpen, gobreaker.StateOpen}}
	if got := changes(); !slices.Equal(got, want) {
		t.Fatalf("state changes = %v, want %v", got, want)
	}
	wantRejected(t, h(ctx, received("m", "t", "g", 1)), gobreaker.ErrOpenState, 20*time.Millisecond)
}

func TestBreakerRejectsBeyondHalfOpenCalls(t *testing.T) {
	const open = 20 * time.Millisecond
	mw, _ := breakerWith(t, BreakerConfig{ConsecutiveFailures: 1, OpenTimeout: open})
	ctx := context.Background()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var fail = true
	h := mw(func(ctx context.Context, m *message.Message) error {
		if fail {
			return errTransient
		}
		entered <- struct{}{}
		<-release
		return nil
	})
	_ = h(ctx, received("m", "t", "g", 1))
	fail = false
	// Once the open state is over, a probe goes through and blocks.
	probe := make(chan error, 1)
	go func() {
		var err error
		for {
			err = h(ctx, received("m", "t", "g", 1))
			if _, rejected := message.RetryDelay(err); !rejected {
				break
			}
			time.Sleep(time.Millisecond)
		}
		probe <- err
	}()
	<-entered
	wantRejected(t, h(ctx, received("m2", "t", "g", 1)), gobreaker.ErrTooManyRequests, open)
	close(release)
	if err := <-probe; err != nil {
		t.Fatalf("probe: %v", err)
	}
}

func TestBreakerIgnoresPermanentAndCutShortErrors(t *testing.T) {
	mw, changes := breakerWith(t, BreakerConfig{ConsecutiveFailures: 2})
	perm := message.PermanentError(errors.New("bad payload"))
	s := &switchable{err: perm}
	h := mw(s.handle)
	for range 10 {
		if err := h(context.Background(), received("m", "t", "g", 1)); err != perm {
			t.Fatalf("err = %v, want the permanent error", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.set(context.Canceled)
	for range 10 {
		if err := h(ctx, received("m", "t", "g", 1)); err != context.Canceled {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	}
	if s.n() != 20 || len(changes()) != 0 {
		t.Fatalf("calls %d, changes %v: want 20 calls and a closed breaker", s.n(), changes())
	}

	trip, changes := breakerWith(t, BreakerConfig{ConsecutiveFailures: 2, TripOnPermanent: true})
	h = trip(returning(perm))
	_ = h(context.Background(), received("m", "t", "g", 1))
	_ = h(context.Background(), received("m", "t", "g", 1))
	if got, want := changes(), []transition{{gobreaker.StateClosed, gobreaker.StateOpen}}; !slices.Equal(got, want) {
		t.Fatalf("TripOnPermanent: state changes = %v, want %v", got, want)
	}
}

func TestBreakerSuccessResetsConsecutiveFailures(t *testing.T) {
	mw, changes := breakerWith(t, BreakerConfig{ConsecutiveFailures: 3})
	s := &switchable{}
	h := mw(s.handle)
	for _, err := range []error{errTransient, errTransient, nil, errTransient, errTransient} {
		s.set(err)
		_ = h(context.Background(), received("m", "t", "g", 1))
	}
	if len(changes()) != 0 || s.n() != 5 {
		t.Fatalf("changes %v, calls %d: want closed after 2+2 failures split by a success", changes(), s.n())
	}
}

func TestBreakerDefaultsAndValidation(t *testing.T) {
	for _, cfg := range []BreakerConfig{{ConsecutiveFailures: -1}, {OpenTimeout: -1}, {HalfOpenCalls: -1}, {Interval: -1}} {
		mw, err := Breaker(cfg)
		wantInvalid(t, err)
		if mw != nil {
			t.Fatal("middleware returned with an error")
		}
	}
	// Default: five failures in a row open it.
	mw, changes := breakerWith(t, BreakerConfig{})
	h := mw(returning(errTransient))
	for i := range 5 {
		if len(changes()) != 0 {
			t.Fatalf("open after %d failures, want 5", i)
		}
		_ = h(context.Background(), received("m", "t", "g", 1))
	}
	wantRejected(t, h(context.Background(), received("m", "t", "g", 1)), gobreaker.ErrOpenState, 30*time.Second)
}
