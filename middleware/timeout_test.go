package middleware

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

func TestTimeoutGivesEachCallADeadline(t *testing.T) {
	mw, err := Timeout(TimeoutConfig{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var deadline time.Time
	before := time.Now()
	err = mw(func(ctx context.Context, m *message.Message) error {
		var ok bool
		deadline, ok = ctx.Deadline()
		if !ok {
			t.Error("no deadline")
		}
		return nil
	})(context.Background(), received("m1", "t", "g", 1))
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if deadline.Before(before.Add(time.Minute)) || deadline.After(after.Add(time.Minute)) {
		t.Fatalf("deadline %v not a minute after the call (%v..%v)", deadline, before, after)
	}
}

func TestTimeoutEndsASlowCallAndRetryGetsAFreshDeadline(t *testing.T) {
	timeout, err := Timeout(TimeoutConfig{Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	retry, err := Retry(RetryConfig{MaxAttempts: 3, RandomizationFactor: NoJitter, sleep: clk.sleep})
	if err != nil {
		t.Fatal(err)
	}
	var calls int
	h := func(ctx context.Context, m *message.Message) error {
		calls++
		if calls < 3 {
			// Slow: wait for the deadline (bounded, in case it never comes).
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Second):
				return errors.New("no deadline")
			}
		}
		if err := ctx.Err(); err != nil {
			return err // the deadline of an earlier call leaked into this one
		}
		return nil
	}
	start := time.Now()
	if err := subscriber.Chain(retry, timeout)(h)(context.Background(), received("m1", "t", "g", 1)); err != nil {
		t.Fatalf("err = %v, want nil on the third call", err)
	}
	if calls != 3 {
		t.Fatalf("calls = %d, want 3", calls)
	}
	if took := time.Since(start); took < 40*time.Millisecond {
		t.Fatalf("two timed-out calls took %v, want at least 40ms", took)
	}
}

func TestTimeoutReturnsDeadlineExceededUnwrapped(t *testing.T) {
	mw, err := Timeout(TimeoutConfig{Timeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = mw(func(ctx context.Context, m *message.Message) error {
		<-ctx.Done()
		return ctx.Err()
	})(context.Background(), received("m1", "t", "g", 1))
	if err != context.DeadlineExceeded {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestTimeoutConfigValidation(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		mw, err := Timeout(TimeoutConfig{Timeout: d})
		wantInvalid(t, err)
		if mw != nil {
			t.Fatal("middleware returned with an error")
		}
	}
}

func TestTimeoutEndsDerivedContexts(t *testing.T) {
	mw, err := Timeout(TimeoutConfig{Timeout: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = mw(func(ctx context.Context, m *message.Message) error {
		child, cancel := context.WithCancel(context.WithValue(ctx, struct{}{}, 1))
		defer cancel()
		select {
		case <-child.Done():
		case <-time.After(10 * time.Second):
			return errors.New("derived context not ended at the deadline")
		}
		if c := context.Cause(child); c != context.DeadlineExceeded {
			return errors.New("cause is not DeadlineExceeded")
		}
		return ctx.Err()
	})(context.Background(), received("m1", "t", "g", 1))
	if err != context.DeadlineExceeded {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestTimeoutConcurrentCallsEachEndAtTheirDeadline(t *testing.T) {
	mw, err := Timeout(TimeoutConfig{Timeout: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	h := mw(func(ctx context.Context, m *message.Message) error {
		if m.ID == "fast" {
			return ctx.Err()
		}
		<-ctx.Done()
		return ctx.Err()
	})
	errs := make(chan error, 40)
	for i := range 40 {
		id := "slow"
		if i%2 == 0 {
			id = "fast"
		}
		go func() { errs <- h(context.Background(), received(id, "t", "g", 1)) }()
	}
	slow := 0
	for range 40 {
		switch err := <-errs; err {
		case nil:
		case context.DeadlineExceeded:
			slow++
		default:
			t.Fatal(err)
		}
	}
	if slow < 20 {
		t.Fatalf("%d calls ended by their deadline, want at least the 20 slow ones", slow)
	}
}
