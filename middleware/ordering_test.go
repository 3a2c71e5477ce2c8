package middleware

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// seqMsg returns a received message of key numbered seq.
func seqMsg(key string, seq uint64) *message.Message {
	m := &message.Message{
		ID: key + "#" + strconv.FormatUint(seq, 10), Key: key,
		Metadata: message.Metadata{message.KeySequence: strconv.FormatUint(seq, 10)},
	}
	return message.Received(m, message.Delivery{Topic: "t", Group: "g", Attempt: 1}, nil)
}

// waitUntil polls cond until it holds, failing the test after a deadline.
func ordWaitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// ordRecorder is a handler that records, per key, the numbers it ran in call
// order, and fails when two calls of one key overlap.
type ordRecorder struct {
	mu       sync.Mutex
	calls    map[string][]uint64
	running  map[string]int
	overlaps int
	// gate, when set, is waited on by the call for the given id.
	gates map[string]chan struct{}
	// fail makes the call of the given id return this error, once.
	fail map[string]error
}

func newOrdRecorder() *ordRecorder {
	return &ordRecorder{calls: map[string][]uint64{}, running: map[string]int{}, gates: map[string]chan struct{}{}, fail: map[string]error{}}
}

func (r *ordRecorder) handle(ctx context.Context, m *message.Message) error {
	seq, _ := strconv.ParseUint(m.Metadata[message.KeySequence], 10, 64)
	r.mu.Lock()
	r.running[m.Key]++
	if r.running[m.Key] > 1 {
		r.overlaps++
	}
	r.calls[m.Key] = append(r.calls[m.Key], seq)
	gate := r.gates[m.ID]
	err := r.fail[m.ID]
	delete(r.fail, m.ID)
	r.mu.Unlock()
	if gate != nil {
		<-gate
	}
	r.mu.Lock()
	r.running[m.Key]--
	r.mu.Unlock()
	return err
}

func (r *ordRecorder) got(key string) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls[key])
}

func (r *ordRecorder) n(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls[key])
}

func (o *ordering) heldNow() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.held
}

func (o *ordering) usage() (held, pending, keys int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.held, o.pending, len(o.keys)
}

func mustOrdering(t testing.TB, cfg OrderingConfig) *ordering {
	t.Helper()
	o, err := newOrdering(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// async calls h on m in a goroutine; the result arrives on the channel.
func ordAsync(h subscriber.Handler, m *message.Message) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- h(context.Background(), m) }()
	return ch
}

func wantSeqs(t *testing.T, r *ordRecorder, key string, want ...uint64) {
	t.Helper()
	if got := r.got(key); !slices.Equal(got, want) {
		t.Fatalf("handler calls of %s = %v, want %v", key, got, want)
	}
}

func TestOrderingDuplicatesAndPassThrough(t *testing.T) {
	var dups atomic.Int32
	o := mustOrdering(t, OrderingConfig{OnDuplicate: func(context.Context, *message.Message) { dups.Add(1) }})
	r := newOrdRecorder()
	h := o.wrap(r.handle)
	ctx := context.Background()
	for _, seq := range []uint64{1, 2, 2, 1, 3} {
		if err := h(ctx, seqMsg("a", seq)); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
	}
	wantSeqs(t, r, "a", 1, 2, 3)
	if n := dups.Load(); n != 2 {
		t.Fatalf("OnDuplicate called %d times, want 2", n)
	}

	// No number, or no key: straight through, every time.
	plain := message.Received(&message.Message{ID: "p", Key: "a"}, message.Delivery{Topic: "t", Group: "g"}, nil)
	noKey := seqMsg("", 7)
	for i := 0; i < 2; i++ {
		if err := h(ctx, plain); err != nil {
			t.Fatal(err)
		}
		if err := h(ctx, noKey); err != nil {
			t.Fatal(err)
		}
	}
	wantSeqs(t, r, "a", 1, 2, 3, 0, 0)
	wantSeqs(t, r, "", 7, 7)

	for _, bad := range []string{"0", "-1", "x", "", "18446744073709551616"} {
		m := seqMsg("a", 1)
		m.Metadata[message.KeySequence] = bad
		err := h(ctx, m)
		if !message.IsPermanent(err) || !errors.Is(err, message.ErrInvalidArgument) {
			t.Fatalf("sequence %q: err = %v, want permanent InvalidArgument", bad, err)
		}
	}
	wantSeqs(t, r, "a", 1, 2, 3, 0, 0)
}

func TestOrderingHoldsUntilTheGapFills(t *testing.T) {
	o := mustOrdering(t, OrderingConfig{GapTimeout: time.Minute})
	r := newOrdRecorder()
	h := o.wrap(r.handle)
	c4 := ordAsync(h, seqMsg("a", 4))
	ordWaitUntil(t, "4 held", func() bool { return o.heldNow() == 1 })
	c2 := ordAsync(h, seqMsg("a", 2))
	ordWaitUntil(t, "2 held", func() bool { return o.heldNow() == 2 })
	c3 := ordAsync(h, seqMsg("a", 3))
	ordWaitUntil(t, "3 held", func() bool { return o.heldNow() == 3 })
	if n := r.n("a"); n != 0 {
		t.Fatalf("%d calls while the gap is open", n)
	}
	if err := h(context.Background(), seqMsg("a", 1)); err != nil {
		t.Fatal(err)
	}
	for i, c := range []<-chan error{c2, c3, c4} {
		if err := <-c; err != nil {
			t.Fatalf("held call %d: %v", i+2, err)
		}
	}
	wantSeqs(t, r, "a", 1, 2, 3, 4)
	if held, pending, _ := o.usage(); held != 0 || pending != 0 {
		t.Fatalf("after the gap filled: %d held, %d remembered; want none", held, pending)
	}
}

// TestOrderingShuffledDirectCalls delivers every permutation's worth of
// chaos at once: many keys, shuffled, with duplicates, each call in its own
// goroutine, and expects each key's handler calls to be exactly 1..n.
func TestOrderingShuffledDirectCalls(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 1))
	var dups atomic.Int32
	o := mustOrdering(t, OrderingConfig{GapTimeout: time.Minute, OnDuplicate: func(context.Context, *message.Message) { dups.Add(1) }})
	r := newOrdRecorder()
	h := o.wrap(r.handle)
	const keys, per = 6, 30
	var msgs []*message.Message
	for k := 0; k < keys; k++ {
		for s := uint64(1); s <= per; s++ {
			msgs = append(msgs, seqMsg(fmt.Sprint("k", k), s))
			if rnd.IntN(5) == 0 {
				msgs = append(msgs, seqMsg(fmt.Sprint("k", k), s))
			}
		}
	}
	rnd.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	var wg sync.WaitGroup
	for _, m := range msgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h(context.Background(), m); err != nil {
				t.Errorf("%s: %v", m.ID, err)
			}
		}()
	}
	wg.Wait()
	want := make([]uint64, per)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	for k := 0; k < keys; k++ {
		wantSeqs(t, r, fmt.Sprint("k", k), want...)
	}
	if r.overlaps != 0 {
		t.Fatalf("%d overlapping calls of one key", r.overlaps)
	}
	if got, want := int(dups.Load()), len(msgs)-keys*per; got != want {
		t.Fatalf("%d duplicates counted, want %d", got, want)
	}
}

func TestOrderingInFlightDuplicateWaitsForTheOutcome(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("first fails=%v", fail), func(t *testing.T) {
			o := mustOrdering(t, OrderingConfig{GapTimeout: time.Minute})
			r := newOrdRecorder()
			gate := make(chan struct{})
			first := seqMsg("a", 1)
			r.gates[first.ID] = gate
			errBoom := errors.New("boom")
			if fail {
				r.fail[first.ID] = errBoom
			}
			h := o.wrap(r.handle)
			c1 := ordAsync(h, first)
			ordWaitUntil(t, "the first call to run", func() bool { return r.n("a") == 1 })
			delete(r.gates, first.ID) // the duplicate must not block
			dup := ordAsync(h, seqMsg("a", 1))
			ordWaitUntil(t, "the duplicate to be held", func() bool { return o.heldNow() == 1 })
			close(gate)
			if err := <-c1; fail != (err != nil) {
				t.Fatalf("first call: err = %v", err)
			}
			if err := <-dup; err != nil {
				t.Fatalf("duplicate: %v", err)
			}
			if fail {
				wantSeqs(t, r, "a", 1, 1) // the duplicate ran in its place
			} else {
				wantSeqs(t, r, "a", 1)
			}
		})
	}
}

func TestOrderingFailureKeepsThePosition(t *testing.T) {
	o := mustOrdering(t, OrderingConfig{GapTimeout: time.Minute})
	r := newOrdRecorder()
	h := o.wrap(r.handle)
	errBoom := errors.New("boom")
	m1 := seqMsg("a", 1)
	r.fail[m1.ID] = errBoom
	if err := h(context.Background(), m1); !errors.Is(err, errBoom) {
		t.Fatalf("err = %v, want the handler's", err)
	}
	c2 := ordAsync(h, seqMsg("a", 2))
	ordWaitUntil(t, "2 held", func() bool { return o.heldNow() == 1 })
	if err := h(context.Background(), seqMsg("a", 1)); err != nil {
		t.Fatal(err)
	}
	if err := <-c2; err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, r, "a", 1, 1, 2)
}

func TestOrderingPanicKeepsThePosition(t *testing.T) {
	o := mustOrdering(t, OrderingConfig{GapTimeout: time.Minute})
	calls := 0
	h := o.wrap(func(ctx context.Context, m *message.Message) error {
		calls++
		if calls == 1 {
			panic("boom")
		}
		return nil
	})
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Fatalf("recovered %v, want the handler's panic", v)
			}
		}()
		_ = h(context.Background(), seqMsg("a", 1))
	}()
	if err := h(context.Background(), seqMsg("a", 1)); err != nil || calls != 2 {
		t.Fatalf("after a panic: err = %v, calls = %d; want nil, 2", err, calls)
	}
	if err := h(context.Background(), seqMsg("a", 1)); err != nil || calls != 2 {
		t.Fatalf("duplicate after success: err = %v, calls = %d; want nil, 2", err, calls)
	}
}

func TestOrderingGapPolicies(t *testing.T) {
	const gap = 400 * time.Millisecond

	t.Run("DeliverAnyway", func(t *testing.T) {
		var gaps []string
		var mu sync.Mutex
		o := mustOrdering(t, OrderingConfig{GapTimeout: gap, GapPolicy: GapDeliverAnyway,
			OnGap: func(_ context.Context, m *message.Message, expected uint64) {
				mu.Lock()
				gaps = append(gaps, fmt.Sprintf("%s@%d", m.ID, expected))
				mu.Unlock()
			}})
		r := newOrdRecorder()
		h := o.wrap(r.handle)
		if err := h(context.Background(), seqMsg("a", 1)); err != nil {
			t.Fatal(err)
		}
		// 2 is lost; 5, 3 and 4 arrive in that order and are held.
		var held []<-chan error
		for i, seq := range []uint64{5, 3, 4} {
			held = append(held, ordAsync(h, seqMsg("a", seq)))
			ordWaitUntil(t, "held", func() bool { return o.heldNow() == i+1 })
		}
		for _, c := range held {
			if err := <-c; err != nil {
				t.Fatalf("held call: %v", err)
			}
		}
		wantSeqs(t, r, "a", 1, 3, 4, 5)
		mu.Lock()
		if !slices.Equal(gaps, []string{"a#3@2"}) {
			t.Fatalf("OnGap calls %v, want [a#3@2]", gaps)
		}
		mu.Unlock()
		// The lost message, arriving late, is below the position.
		if err := h(context.Background(), seqMsg("a", 2)); err != nil {
			t.Fatal(err)
		}
		if err := h(context.Background(), seqMsg("a", 6)); err != nil {
			t.Fatal(err)
		}
		wantSeqs(t, r, "a", 1, 3, 4, 5, 6)
	})

	t.Run("DeliverAnywayWaitsForALowerNackedNumber", func(t *testing.T) {
		// One held call per key: 4 is held, so 3 is nacked for room and
		// comes back every 10ms, as a broker would redeliver it. The
		// buffer remembers 3, so when the gap (1, 2) times out it skips
		// to 3, not to 4. (The two may swap roles: a held call that
		// wakes to re-read the store can lose its place to the other.)
		o := mustOrdering(t, OrderingConfig{GapTimeout: gap, GapPolicy: GapDeliverAnyway, MaxHeldPerKey: 1, RetryDelay: 10 * time.Millisecond})
		r := newOrdRecorder()
		h := o.wrap(r.handle)
		var nacks atomic.Int32
		deliver := func(seq uint64) error {
			for {
				err := h(context.Background(), seqMsg("a", seq))
				if err == nil {
					return nil
				}
				if d, ok := message.RetryDelay(err); !ok || d != 10*time.Millisecond || !errors.Is(err, ErrOutOfOrder) {
					return fmt.Errorf("%d over the limit: err = %v, want RetryAfter(ErrOutOfOrder, 10ms)", seq, err)
				}
				nacks.Add(1)
				time.Sleep(10 * time.Millisecond) // the broker's redelivery delay
			}
		}
		c4 := make(chan error, 1)
		go func() { c4 <- deliver(4) }()
		ordWaitUntil(t, "4 held", func() bool { return o.heldNow() == 1 })
		if err := deliver(3); err != nil {
			t.Fatal(err)
		}
		if err := <-c4; err != nil {
			t.Fatal(err)
		}
		wantSeqs(t, r, "a", 3, 4)
		if nacks.Load() == 0 {
			t.Fatal("nothing was nacked; want the call over the limit nacked until the gap timed out")
		}
	})

	t.Run("DeadLetter", func(t *testing.T) {
		o := mustOrdering(t, OrderingConfig{GapTimeout: gap, GapPolicy: GapDeadLetter})
		r := newOrdRecorder()
		h := o.wrap(r.handle)
		if err := h(context.Background(), seqMsg("a", 1)); err != nil {
			t.Fatal(err)
		}
		c3 := ordAsync(h, seqMsg("a", 3))
		ordWaitUntil(t, "3 held", func() bool { return o.heldNow() == 1 })
		c4 := ordAsync(h, seqMsg("a", 4))
		for _, c := range []<-chan error{c3, c4} {
			err := <-c
			if !message.IsPermanent(err) || !errors.Is(err, ErrGap) || IsDeferred(err) {
				t.Fatalf("err = %v, want permanent ErrGap", err)
			}
		}
		wantSeqs(t, r, "a", 1)
		// The position did not move: 2 runs, then the replayed 3 and 4.
		for _, seq := range []uint64{2, 3, 4} {
			if err := h(context.Background(), seqMsg("a", seq)); err != nil {
				t.Fatal(err)
			}
		}
		wantSeqs(t, r, "a", 1, 2, 3, 4)
	})

	t.Run("Nack", func(t *testing.T) {
		o := mustOrdering(t, OrderingConfig{GapTimeout: gap})
		r := newOrdRecorder()
		h := o.wrap(r.handle)
		c2 := ordAsync(h, seqMsg("a", 2))
		err := <-c2
		if d, ok := message.RetryDelay(err); !ok || d != gap || !errors.Is(err, ErrGap) || !IsDeferred(err) {
			t.Fatalf("err = %v, want RetryAfter(ErrGap, %s)", err, gap)
		}
		// Still open: the next arrival is nacked at once, not held.
		if err := h(context.Background(), seqMsg("a", 2)); !errors.Is(err, ErrGap) {
			t.Fatalf("err = %v, want ErrGap", err)
		}
		wantSeqs(t, r, "a")
		for _, seq := range []uint64{1, 2} {
			if err := h(context.Background(), seqMsg("a", seq)); err != nil {
				t.Fatal(err)
			}
		}
		wantSeqs(t, r, "a", 1, 2)
	})
}

func TestOrderingBackPressure(t *testing.T) {
	o := mustOrdering(t, OrderingConfig{GapTimeout: time.Minute, MaxHeldPerKey: 2, MaxHeld: 3, RetryDelay: 7 * time.Millisecond})
	r := newOrdRecorder()
	h := o.wrap(r.handle)
	wantNack := func(m *message.Message) {
		t.Helper()
		err := h(context.Background(), m)
		if d, ok := message.RetryDelay(err); !ok || d != 7*time.Millisecond || !errors.Is(err, ErrOutOfOrder) || !IsDeferred(err) {
			t.Fatalf("%s: err = %v, want RetryAfter(ErrOutOfOrder, 7ms)", m.ID, err)
		}
	}
	var held []<-chan error
	hold := func(m *message.Message, n int) {
		held = append(held, ordAsync(h, m))
		ordWaitUntil(t, m.ID+" held", func() bool { return o.heldNow() == n })
	}
	hold(seqMsg("a", 3), 1)
	hold(seqMsg("a", 2), 2)
	wantNack(seqMsg("a", 4)) // per-key limit
	hold(seqMsg("b", 2), 3)
	wantNack(seqMsg("b", 3)) // total limit
	wantNack(seqMsg("c", 9))
	for _, k := range []string{"a", "b"} {
		if err := h(context.Background(), seqMsg(k, 1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range held {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	wantSeqs(t, r, "a", 1, 2, 3)
	wantSeqs(t, r, "b", 1, 2)
	if o.peak != 3 {
		t.Fatalf("peak held = %d, want the limit 3", o.peak)
	}
}

func TestOrderingContextEndsAHold(t *testing.T) {
	o := mustOrdering(t, OrderingConfig{GapTimeout: time.Minute})
	r := newOrdRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- o.wrap(r.handle)(ctx, seqMsg("a", 2)) }()
	ordWaitUntil(t, "2 held", func() bool { return o.heldNow() == 1 })
	cancel()
	if err := <-ch; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	wantSeqs(t, r, "a")
}

// TestOrderingHoldTimeoutDefers: a held call whose missing number does not
// come within HoldTimeout is deferred, long before the gap times out, and
// holds nothing after.
func TestOrderingHoldTimeoutDefers(t *testing.T) {
	o := mustOrdering(t, OrderingConfig{GapTimeout: time.Minute, RetryDelay: 7 * time.Millisecond, HoldTimeout: 50 * time.Millisecond})
	r := newOrdRecorder()
	start := time.Now()
	err := o.wrap(r.handle)(context.Background(), seqMsg("a", 3))
	if d, ok := message.RetryDelay(err); !ok || d != 7*time.Millisecond || !errors.Is(err, ErrOutOfOrder) || !IsDeferred(err) {
		t.Fatalf("err = %v, want Defer(ErrOutOfOrder, 7ms)", err)
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Fatalf("deferred after %s, before the hold timeout", took)
	}
	if held, _, _ := o.usage(); held != 0 {
		t.Fatalf("%d held after the deferral", held)
	}
	wantSeqs(t, r, "a")
}

func TestOrderingRestartContinuesFromTheStore(t *testing.T) {
	store := NewMemoryOrderingStore()
	r := newOrdRecorder()
	first := mustOrdering(t, OrderingConfig{Store: store, GapTimeout: time.Minute})
	for _, seq := range []uint64{1, 2, 3} {
		if err := first.wrap(r.handle)(context.Background(), seqMsg("a", seq)); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := store.Last(context.Background(), "g/t/a"); n != 3 {
		t.Fatalf("stored position = %d, want 3 (key scoped by group and topic)", n)
	}
	// A new buffer over the same store: 3 is a duplicate, 5 waits for 4.
	again := mustOrdering(t, OrderingConfig{Store: store, GapTimeout: time.Minute})
	h := again.wrap(r.handle)
	if err := h(context.Background(), seqMsg("a", 3)); err != nil {
		t.Fatal(err)
	}
	c5 := ordAsync(h, seqMsg("a", 5))
	ordWaitUntil(t, "5 held", func() bool { return again.heldNow() == 1 })
	if err := h(context.Background(), seqMsg("a", 4)); err != nil {
		t.Fatal(err)
	}
	if err := <-c5; err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, r, "a", 1, 2, 3, 4, 5)
}

func TestOrderingSeesPositionsMovedByAnotherConsumer(t *testing.T) {
	store := NewMemoryOrderingStore()
	cfg := OrderingConfig{Store: store, GapTimeout: time.Minute, RetryDelay: 5 * time.Millisecond}
	a, b := mustOrdering(t, cfg), mustOrdering(t, cfg)
	r := newOrdRecorder()
	// a learns the key at position 0, then holds 2.
	c2 := ordAsync(a.wrap(r.handle), seqMsg("k", 2))
	ordWaitUntil(t, "2 held by a", func() bool { return a.heldNow() == 1 })
	// b handles 1; a finds out by re-reading the store.
	if err := b.wrap(r.handle)(context.Background(), seqMsg("k", 1)); err != nil {
		t.Fatal(err)
	}
	if err := <-c2; err != nil {
		t.Fatal(err)
	}
	wantSeqs(t, r, "k", 1, 2)
}

func TestOrderingForgetsIdleKeysButNotTheirPositions(t *testing.T) {
	o := mustOrdering(t, OrderingConfig{MaxKeys: 10})
	r := newOrdRecorder()
	h := o.wrap(r.handle)
	for k := 0; k < 100; k++ {
		if err := h(context.Background(), seqMsg(fmt.Sprint("k", k), 1)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, keys := o.usage(); keys > 10 {
		t.Fatalf("%d keys in memory, want at most 10", keys)
	}
	for k := 0; k < 100; k++ {
		key := fmt.Sprint("k", k)
		if err := h(context.Background(), seqMsg(key, 1)); err != nil {
			t.Fatal(err)
		}
		if err := h(context.Background(), seqMsg(key, 2)); err != nil {
			t.Fatal(err)
		}
		wantSeqs(t, r, key, 1, 2)
	}
}

func TestOrderingConfigValidation(t *testing.T) {
	for name, cfg := range map[string]OrderingConfig{
		"negative timeout":           {GapTimeout: -1},
		"negative retry":             {RetryDelay: -1},
		"negative hold":              {HoldTimeout: -1},
		"negative held":              {MaxHeld: -1},
		"negative per key":           {MaxHeldPerKey: -1},
		"negative keys":              {MaxKeys: -1},
		"unknown policy":             {GapPolicy: 7},
		"retry not below gap":        {GapTimeout: time.Second, RetryDelay: time.Second},
		"per key over total":         {MaxHeldPerKey: 10, MaxHeld: 5},
		"default per key over total": {MaxHeld: 5},
	} {
		if _, err := Ordering(cfg); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want InvalidArgument", name, err)
		}
	}
	o := mustOrdering(t, OrderingConfig{})
	if o.cfg.GapTimeout != 10*time.Second || o.cfg.RetryDelay != 200*time.Millisecond || o.cfg.MaxHeldPerKey != 64 ||
		o.cfg.MaxHeld != 1024 || o.cfg.MaxKeys != 10000 || o.cfg.GapPolicy != GapNack || o.cfg.HoldTimeout != time.Second {
		t.Fatalf("defaults: %+v", o.cfg)
	}
	if small := mustOrdering(t, OrderingConfig{GapTimeout: 100 * time.Millisecond}); small.cfg.RetryDelay != 50*time.Millisecond {
		t.Fatalf("retry delay for a 100ms gap timeout = %s, want 50ms", small.cfg.RetryDelay)
	}
	for p, s := range map[GapPolicy]string{GapNack: "nack", GapDeliverAnyway: "deliver-anyway", GapDeadLetter: "dead-letter", 9: "GapPolicy(9)"} {
		if p.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(p), p.String(), s)
		}
	}
}

func TestSequencerStamps(t *testing.T) {
	s := NewSequencer(nil)
	ctx := context.Background()
	a1, b1, a2, none := &message.Message{Key: "a"}, &message.Message{Key: "b"}, &message.Message{Key: "a"}, &message.Message{}
	pre := &message.Message{Key: "a", Metadata: message.Metadata{message.KeySequence: "77", "x": "y"}}
	if err := s.Stamp(ctx, "t", a1, b1, pre, a2, none); err != nil {
		t.Fatal(err)
	}
	a3, other := &message.Message{Key: "a"}, &message.Message{Key: "a"}
	if err := s.Stamp(ctx, "t", a3); err != nil {
		t.Fatal(err)
	}
	if err := s.Stamp(ctx, "u", other); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m    *message.Message
		want string
	}{{a1, "1"}, {a2, "2"}, {a3, "3"}, {b1, "1"}, {pre, "77"}, {other, "1"}, {none, ""}} {
		if got := tc.m.Metadata.Get(message.KeySequence); got != tc.want {
			t.Errorf("message of key %q: sequence %q, want %q", tc.m.Key, got, tc.want)
		}
	}
	if none.Metadata != nil {
		t.Errorf("a message without key got metadata %v", none.Metadata)
	}
	// Stamping again keeps the numbers.
	if err := s.Stamp(ctx, "t", a1, a2); err != nil || a1.Metadata.Get(message.KeySequence) != "1" {
		t.Fatalf("restamp: err = %v, seq %q", err, a1.Metadata.Get(message.KeySequence))
	}
	if err := s.Stamp(ctx, "", a1); !errors.Is(err, message.ErrInvalidArgument) {
		t.Fatalf("empty topic: err = %v", err)
	}
	if err := s.Stamp(ctx, "t", a1, nil); !errors.Is(err, message.ErrInvalidArgument) {
		t.Fatalf("nil message: err = %v", err)
	}
}

// failingCounter fails reservations of one key.
type failingCounter struct {
	*MemorySequenceCounter
	bad string
}

func (c failingCounter) Reserve(ctx context.Context, key string, n uint64) (uint64, error) {
	if key == c.bad {
		return 0, errors.New("counter down")
	}
	return c.MemorySequenceCounter.Reserve(ctx, key, n)
}

func TestSequencerStampsWhatItReservedBeforeAFailure(t *testing.T) {
	s := NewSequencer(failingCounter{NewMemorySequenceCounter(), "t/b"})
	a, b := &message.Message{Key: "a"}, &message.Message{Key: "b"}
	err := s.Stamp(context.Background(), "t", a, b)
	if !errors.Is(err, message.ErrUnavailable) {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	if a.Metadata.Get(message.KeySequence) != "1" || b.Metadata.Get(message.KeySequence) != "" {
		t.Fatalf("stamped a=%q b=%q, want a=1 and b unstamped", a.Metadata.Get(message.KeySequence), b.Metadata.Get(message.KeySequence))
	}
}
