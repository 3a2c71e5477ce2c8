package middleware

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

func idMsg(id, group string) *message.Message {
	return message.Received(&message.Message{ID: id, Key: "k"}, message.Delivery{Topic: "t", Group: group, Attempt: 1}, nil)
}

func mustDedupe(t testing.TB, cfg DedupeConfig) subscriber.Middleware {
	t.Helper()
	mw, err := Dedupe(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return mw
}

// countingHandler counts calls per message ID and returns what fn returns.
type countingHandler struct {
	mu    sync.Mutex
	calls map[string]int
	fn    func(ctx context.Context, m *message.Message, call int) error
}

func (c *countingHandler) handle(ctx context.Context, m *message.Message) error {
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	c.calls[m.ID]++
	n := c.calls[m.ID]
	c.mu.Unlock()
	if c.fn != nil {
		return c.fn(ctx, m, n)
	}
	return nil
}

func (c *countingHandler) n(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

func TestDedupeRunsOnceAndAcksDuplicates(t *testing.T) {
	var dups atomic.Int32
	store, _ := NewMemoryDedupeStore(0)
	h := &countingHandler{}
	run := mustDedupe(t, DedupeConfig{Store: store, OnDuplicate: func(context.Context, *message.Message) { dups.Add(1) }})(h.handle)
	for i := 0; i < 3; i++ {
		if err := run(context.Background(), idMsg("m1", "g")); err != nil {
			t.Fatal(err)
		}
	}
	if h.n("m1") != 1 || dups.Load() != 2 {
		t.Fatalf("handler ran %d times, %d duplicates counted; want 1 and 2", h.n("m1"), dups.Load())
	}
	// Another group has its own marks (default key); so does a message
	// received nowhere (its bare ID).
	if err := run(context.Background(), idMsg("m1", "other")); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), &message.Message{ID: "m1"}); err != nil {
		t.Fatal(err)
	}
	if h.n("m1") != 3 {
		t.Fatalf("handler ran %d times, want 3", h.n("m1"))
	}
	// No ID, no key: no deduplication.
	for i := 0; i < 2; i++ {
		if err := run(context.Background(), idMsg("", "g")); err != nil {
			t.Fatal(err)
		}
	}
	if h.n("") != 2 {
		t.Fatalf("message without ID ran %d times, want 2", h.n(""))
	}
}

func TestDedupeMarksOnlyAfterSuccess(t *testing.T) {
	errBoom := errors.New("boom")
	h := &countingHandler{fn: func(_ context.Context, _ *message.Message, call int) error {
		switch call {
		case 1:
			return errBoom
		case 2:
			panic("crash")
		}
		return nil
	}}
	run := mustDedupe(t, DedupeConfig{})(h.handle)
	if err := run(context.Background(), idMsg("m", "g")); !errors.Is(err, errBoom) {
		t.Fatalf("err = %v, want the handler's", err)
	}
	func() {
		defer func() {
			if v := recover(); v != "crash" {
				t.Fatalf("recovered %v, want the handler's panic", v)
			}
		}()
		_ = run(context.Background(), idMsg("m", "g"))
	}()
	for i := 0; i < 2; i++ {
		if err := run(context.Background(), idMsg("m", "g")); err != nil {
			t.Fatal(err)
		}
	}
	if h.n("m") != 3 {
		t.Fatalf("handler ran %d times, want 3 (fail, panic, success; then a duplicate)", h.n("m"))
	}
}

func TestDedupeConcurrentDeliveriesRunOnce(t *testing.T) {
	var inFlight atomic.Int32
	release := make(chan struct{})
	h := &countingHandler{fn: func(context.Context, *message.Message, int) error { <-release; return nil }}
	run := mustDedupe(t, DedupeConfig{InFlightDelay: 25 * time.Millisecond, OnInFlight: func(context.Context, *message.Message) { inFlight.Add(1) }})(h.handle)
	first := make(chan error, 1)
	go func() { first <- run(context.Background(), idMsg("m", "g")) }()
	ordWaitUntil(t, "the first delivery to run", func() bool { return h.n("m") == 1 })
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := run(context.Background(), idMsg("m", "g"))
			if d, ok := message.RetryDelay(err); !ok || d != 25*time.Millisecond || !errors.Is(err, ErrInFlight) || !IsDeferred(err) {
				t.Errorf("concurrent duplicate: err = %v, want Defer(ErrInFlight, 25ms)", err)
			}
		}()
	}
	wg.Wait()
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The nacked duplicates come back: now acked without running.
	if err := run(context.Background(), idMsg("m", "g")); err != nil {
		t.Fatal(err)
	}
	if h.n("m") != 1 || inFlight.Load() != 8 {
		t.Fatalf("handler ran %d times, %d in-flight nacks; want 1 and 8", h.n("m"), inFlight.Load())
	}
}

// flakyStore fails the calls it is told to.
type flakyStore struct {
	DedupeStore
	claim, complete, release error
}

func (s *flakyStore) Claim(ctx context.Context, key string, lease time.Duration) (ClaimState, int64, error) {
	if s.claim != nil {
		return 0, 0, s.claim
	}
	return s.DedupeStore.Claim(ctx, key, lease)
}

func (s *flakyStore) Complete(ctx context.Context, key string, tok int64, ttl time.Duration) error {
	if s.complete != nil {
		return s.complete
	}
	return s.DedupeStore.Complete(ctx, key, tok, ttl)
}

func (s *flakyStore) Release(ctx context.Context, key string, tok int64) error {
	if s.release != nil {
		return s.release
	}
	return s.DedupeStore.Release(ctx, key, tok)
}

func TestDedupeStoreFailures(t *testing.T) {
	mem, _ := NewMemoryDedupeStore(0)
	errDown := errors.New("store down")
	store := &flakyStore{DedupeStore: mem, claim: errDown}
	var reported []error
	h := &countingHandler{}
	run := mustDedupe(t, DedupeConfig{Store: store, OnStoreError: func(_ context.Context, _ *message.Message, err error) { reported = append(reported, err) }})(h.handle)

	// A failed claim nacks without running the handler.
	err := run(context.Background(), idMsg("m", "g"))
	if !errors.Is(err, message.ErrUnavailable) || !errors.Is(err, errDown) || h.n("m") != 0 {
		t.Fatalf("claim failure: err = %v, calls %d; want Unavailable wrapping the cause, no call", err, h.n("m"))
	}
	// A failed complete acks (the work is done) and reports.
	store.claim, store.complete = nil, errDown
	if err := run(context.Background(), idMsg("m", "g")); err != nil {
		t.Fatalf("complete failure: err = %v, want nil", err)
	}
	if len(reported) != 1 || !errors.Is(reported[0], errDown) || h.n("m") != 1 {
		t.Fatalf("reported %v, calls %d", reported, h.n("m"))
	}
	// A failed release returns the handler's error and reports.
	store.complete, store.release = nil, errDown
	errBoom := errors.New("boom")
	h.fn = func(context.Context, *message.Message, int) error { return errBoom }
	if err := run(context.Background(), idMsg("n", "g")); !errors.Is(err, errBoom) {
		t.Fatalf("release failure: err = %v, want the handler's", err)
	}
	if len(reported) != 2 || !errors.Is(reported[1], errDown) {
		t.Fatalf("reported %v", reported)
	}
	// Context errors are not wrapped.
	store.claim = context.Canceled
	if err := run(context.Background(), idMsg("o", "g")); err != context.Canceled {
		t.Fatalf("err = %#v, want context.Canceled itself", err)
	}
}

func TestDedupeCustomKeyAndTTL(t *testing.T) {
	h := &countingHandler{}
	run := mustDedupe(t, DedupeConfig{
		TTL: 100 * time.Millisecond,
		Key: func(m *message.Message) string { return m.Metadata.Get("order") },
	})(h.handle)
	a := &message.Message{ID: "1", Metadata: message.Metadata{"order": "o-1"}}
	b := &message.Message{ID: "2", Metadata: message.Metadata{"order": "o-1"}}
	if err := run(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	done := time.Now()
	if err := run(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if h.n("2") != 0 {
		t.Fatal("same custom key ran twice")
	}
	ordWaitUntil(t, "the mark to expire", func() bool {
		_ = run(context.Background(), b)
		return h.n("2") == 1
	})
	if el := time.Since(done); el < 100*time.Millisecond {
		t.Fatalf("mark with TTL 100ms forgotten after %s", el)
	}
}

func TestDedupeLeaseExpiryLetsARedeliveryRun(t *testing.T) {
	// The first delivery's process "crashed": it claimed and never ended
	// the claim. After the lease, the redelivery runs.
	store, _ := NewMemoryDedupeStore(0)
	if _, _, err := store.Claim(context.Background(), "g/t/m", 80*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	h := &countingHandler{}
	run := mustDedupe(t, DedupeConfig{Store: store})(h.handle)
	if err := run(context.Background(), idMsg("m", "g")); !errors.Is(err, ErrInFlight) {
		t.Fatalf("during the lease: err = %v, want ErrInFlight", err)
	}
	ordWaitUntil(t, "the redelivery to run", func() bool {
		return run(context.Background(), idMsg("m", "g")) == nil && h.n("m") == 1
	})
}

func TestDedupeConfigValidation(t *testing.T) {
	for name, cfg := range map[string]DedupeConfig{
		"negative TTL":   {TTL: -1},
		"negative lease": {Lease: -1},
		"negative delay": {InFlightDelay: -1},
	} {
		if _, err := Dedupe(cfg); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want InvalidArgument", name, err)
		}
	}
	if _, err := NewMemoryDedupeStore(-1); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("negative size: err = %v", err)
	}
	for s, want := range map[ClaimState]string{Claimed: "claimed", AlreadyDone: "already-done", InProgress: "in-progress", 0: "ClaimState(0)"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(s), s.String(), want)
		}
	}
}

func TestMemoryDedupeStoreIsBounded(t *testing.T) {
	s, err := NewMemoryDedupeStore(3)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		key := fmt.Sprint("k", i)
		_, tok, _ := s.Claim(ctx, key, time.Minute)
		if err := s.Complete(ctx, key, tok, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if s.Len() != 3 || s.Evicted() != 2 {
		t.Fatalf("len %d, evicted %d; want 3 and 2", s.Len(), s.Evicted())
	}
	// The two oldest were evicted: they run again; the newest are done.
	for i, want := range []ClaimState{Claimed, Claimed, AlreadyDone, AlreadyDone, AlreadyDone} {
		if st, _, _ := s.Claim(ctx, fmt.Sprint("k", i), time.Minute); st != want {
			t.Errorf("k%d: %v, want %v", i, st, want)
		}
	}
	// Expired marks are swept, not counted as evictions.
	s2, _ := NewMemoryDedupeStore(10)
	for i := 0; i < 4; i++ {
		key := fmt.Sprint("k", i)
		_, tok, _ := s2.Claim(ctx, key, time.Minute)
		_ = s2.Complete(ctx, key, tok, time.Millisecond)
	}
	ordWaitUntil(t, "marks to expire", func() bool {
		_, _, _ = s2.Claim(ctx, "other", time.Minute)
		return s2.Len() == 0
	})
	if s2.Evicted() != 0 {
		t.Fatalf("expired marks counted as %d evictions", s2.Evicted())
	}
}

// TestDedupeUnderSubscriberWithDuplicates runs Dedupe under a real
// Subscriber over a broker that shuffles and duplicates deliveries, at
// several concurrencies: every message's handler must run exactly once.
func TestDedupeUnderSubscriberWithDuplicates(t *testing.T) {
	for _, conc := range []int{1, 8, 64} {
		t.Run(fmt.Sprint("concurrency=", conc), func(t *testing.T) {
			seed := rand.Uint64()
			t.Logf("seed %d", seed)
			bus := newChaosBus(t, seed, 0.5)
			var ids []string
			var msgs []*message.Message
			for i := 0; i < 200; i++ {
				m := message.New(nil)
				m.Key = fmt.Sprint("k", i%7)
				msgs = append(msgs, m)
				ids = append(ids, m.ID)
			}
			if err := bus.pub.Publish(context.Background(), "t", msgs...); err != nil {
				t.Fatal(err)
			}
			var dups atomic.Int32
			h := &countingHandler{fn: func(context.Context, *message.Message, int) error {
				time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond) // let duplicates overlap
				return nil
			}}
			dd := mustDedupe(t, DedupeConfig{InFlightDelay: time.Millisecond, OnDuplicate: func(context.Context, *message.Message) { dups.Add(1) }})
			stop := runSubscribe(t, bus.subscriber(t), "t", h.handle, subscriber.Concurrency(conc), subscriber.Unordered(), subscriber.Use(dd))
			ordWaitUntil(t, "every message handled", func() bool {
				for _, id := range ids {
					if h.n(id) == 0 {
						return false
					}
				}
				return true
			})
			ordWaitUntil(t, "the group to ack everything", func() bool { return bus.broker.Depth("t", subscriber.DefaultGroup) == 0 })
			stop()
			for _, id := range ids {
				if n := h.n(id); n != 1 {
					t.Fatalf("message %s handled %d times, want 1", id, n)
				}
			}
			if _, invented := bus.chaos.counts(); invented == 0 || dups.Load() == 0 {
				t.Fatalf("%d duplicates delivered, %d acked as duplicates: no duplicates tested", invented, dups.Load())
			}
		})
	}
}
