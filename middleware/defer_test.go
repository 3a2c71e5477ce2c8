package middleware

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
)

func TestIsDeferred(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errTransient, false},
		{message.RetryAfter(errTransient, time.Second), false},
		{Defer(errTransient, time.Second), true},
		{Defer(nil, 0), true},
		{message.RetryAfter(ErrOutOfOrder, time.Second), true},
		{message.RetryAfter(ErrGap, time.Second), true},
		{message.PermanentError(ErrGap), false},
		{message.PermanentError(Defer(errTransient, 0)), false},
	} {
		if got := IsDeferred(c.err); got != c.want {
			t.Errorf("IsDeferred(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	err := Defer(errTransient, time.Second)
	if d, ok := message.RetryDelay(err); !errors.Is(err, errTransient) || !ok || d != time.Second {
		t.Fatalf("Defer: %v, delay %v %v", err, d, ok)
	}
}

func TestRetryPassesDeferralsThroughUncounted(t *testing.T) {
	for _, mode := range []RetryMode{InProcess, Redelivery} {
		t.Run(mode.String(), func(t *testing.T) {
			mw, clk, calls := retryWith(t, RetryConfig{Mode: mode, MaxAttempts: 2})
			for _, deferral := range []error{Defer(errTransient, time.Second), message.RetryAfter(ErrOutOfOrder, time.Second)} {
				h, n := failing(100, deferral)
				// Far beyond MaxAttempts by the broker's count, and
				// uncounted (attempt 0): never exhausted.
				for _, attempt := range []int{0, 0, 0, 5} {
					if err := mw(h)(context.Background(), received("m1", "orders", "g", attempt)); err != deferral {
						t.Fatalf("attempt %d: err = %v, want the deferral untouched", attempt, err)
					}
				}
				if n.Load() != 4 {
					t.Fatalf("calls = %d, want 4", n.Load())
				}
			}
			if len(clk.slept()) != 0 || len(*calls) != 0 {
				t.Fatalf("waits %v, retries %v: want none", clk.slept(), *calls)
			}
		})
	}
}

func TestRetryRedeliverySubtractsDeferralsFromBrokerCount(t *testing.T) {
	mw, _, _, r := retrierWith(t, RetryConfig{Mode: Redelivery, MaxAttempts: 3, InitialInterval: 100 * time.Millisecond, Multiplier: 2, RandomizationFactor: NoJitter})
	deferring, _ := failing(100, Defer(errTransient, time.Millisecond))
	failingH, _ := failing(100, errTransient)
	ctx := context.Background()
	// Deliveries 1 and 2 are deferred; delivery 3 is the first failure.
	_ = mw(deferring)(ctx, received("m1", "orders", "g", 1))
	_ = mw(deferring)(ctx, received("m1", "orders", "g", 2))
	err := mw(failingH)(ctx, received("m1", "orders", "g", 3))
	if d, _ := message.RetryDelay(err); d != 100*time.Millisecond || message.IsPermanent(err) {
		t.Fatalf("delivery 3: err = %v, want the first failure's delay 100ms", err)
	}
	_ = mw(failingH)(ctx, received("m1", "orders", "g", 4))
	var ex *ExhaustedError
	if err := mw(failingH)(ctx, received("m1", "orders", "g", 5)); !errors.As(err, &ex) || ex.Attempts != 3 {
		t.Fatalf("delivery 5: err = %v, want ExhaustedError{3}", err)
	}
	if r.counters.len() != 0 {
		t.Fatalf("counters = %d, want 0 after exhaustion", r.counters.len())
	}
}

func TestDLQPassesDeferralsThrough(t *testing.T) {
	pub := &fakePublisher{}
	mw, _ := dlqWith(t, DLQConfig{Publisher: pub, MaxAttempts: 1})
	deferral := Defer(errTransient, time.Second)
	if err := mw(returning(deferral))(context.Background(), received("m1", "orders", "g", 9)); err != deferral {
		t.Fatalf("err = %v, want the deferral untouched", err)
	}
	if len(pub.got()) != 0 {
		t.Fatalf("publishes = %v, want none", pub.got())
	}
}
