package nats_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus"
	polynats "github.com/polybus/polybus/adapters/nats"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// scaleLoad is the load: keys x perKey messages, published
// interleaved (message i of every key before message i+1 of any).
const (
	scaleKeys   = 32
	scalePerKey = 300
)

// orderRecorder checks per-key order across every subscriber of a group:
// one in-flight map shared by all handlers.
type orderRecorder struct {
	t        testing.TB
	mu       sync.Mutex
	inflight map[string]int // key -> subscriber handling it
	overlaps int
	handled  map[string][]int // key -> sequence numbers, in handling order
	by       map[int]int      // subscriber -> handled count
	total    int
	changed  chan struct{}
}

func newOrderRecorder(t testing.TB) *orderRecorder {
	return &orderRecorder{
		t: t, inflight: map[string]int{}, handled: map[string][]int{}, by: map[int]int{},
		changed: make(chan struct{}, 1),
	}
}

// handler returns subscriber sub's handler; work is the time each call
// takes.
func (r *orderRecorder) handler(sub int, work time.Duration) subscriber.Handler {
	return func(ctx context.Context, m *message.Message) error {
		var seq int
		fmt.Sscan(string(m.Payload), &seq)
		r.mu.Lock()
		if other, busy := r.inflight[m.Key]; busy {
			r.overlaps++
			r.t.Errorf("key %s handled by subscribers %d and %d at once", m.Key, other, sub)
		}
		r.inflight[m.Key] = sub
		r.mu.Unlock()
		if work > 0 {
			select {
			case <-time.After(work):
			case <-ctx.Done():
				r.mu.Lock()
				delete(r.inflight, m.Key)
				r.mu.Unlock()
				return ctx.Err()
			}
		}
		r.mu.Lock()
		delete(r.inflight, m.Key)
		r.handled[m.Key] = append(r.handled[m.Key], seq)
		r.by[sub]++
		r.total++
		r.mu.Unlock()
		select {
		case r.changed <- struct{}{}:
		default:
		}
		return nil
	}
}

// distinct returns how many distinct messages have been handled.
func (r *orderRecorder) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, seqs := range r.handled {
		seen := map[int]bool{}
		for _, s := range seqs {
			seen[s] = true
		}
		n += len(seen)
	}
	return n
}

func (r *orderRecorder) waitDistinct(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for r.distinct() < n {
		select {
		case <-r.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			t.Fatalf("handled %d distinct messages of %d after %s", r.distinct(), n, timeout)
		}
	}
}

// check verifies every key: exact order (exact) or, with repeats removed
// keeping first occurrences, exactly 0..perKey-1. It returns the number of
// duplicate handlings.
func (r *orderRecorder) check(t testing.TB, exact bool) (dups int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	want := make([]int, scalePerKey)
	for i := range want {
		want[i] = i
	}
	for k := range scaleKeys {
		key := scaleKey(k)
		seqs := r.handled[key]
		got := seqs
		if !exact {
			seen := map[int]bool{}
			got = nil
			for _, s := range seqs {
				if !seen[s] {
					seen[s] = true
					got = append(got, s)
				}
			}
		}
		dups += len(seqs) - len(got)
		if !slices.Equal(got, want) {
			t.Errorf("key %s handled out of order or incomplete (%d handled, %d distinct): %v", key, len(seqs), len(got), firstBreak(got))
		}
	}
	return dups
}

func firstBreak(seqs []int) string {
	for i, s := range seqs {
		if s != i {
			return fmt.Sprintf("position %d holds %d (around %v)", i, s, seqs[max(0, i-3):min(len(seqs), i+4)])
		}
	}
	return fmt.Sprintf("ends after %d", len(seqs))
}

func scaleKey(k int) string { return fmt.Sprintf("key-%02d", k) }

// publishInterleaved publishes the load in batches of one message per key.
func publishInterleaved(t testing.TB, c *polybus.Client, topic string) {
	t.Helper()
	for i := range scalePerKey {
		batch := make([]*message.Message, scaleKeys)
		for k := range scaleKeys {
			m := message.New([]byte(fmt.Sprint(i)))
			m.Key = scaleKey(k)
			batch[k] = m
		}
		publish(t, c, topic, batch...)
	}
}

// runMember runs one subscriber of group on its own client until stop is
// called: graceful (a generous drain) or a crash (a drain deadline that
// has passed already).
type member struct {
	c    *polybus.Client
	done chan error
}

func startMember(t testing.TB, rawURL, topic, group string, h subscriber.Handler) *member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := polybus.Open(ctx, rawURL)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{c: c, done: make(chan error, 1)}
	go func() {
		m.done <- c.Subscriber().Subscribe(context.Background(), topic, h,
			subscriber.Group(group), subscriber.Concurrency(4), subscriber.Prefetch(16))
	}()
	t.Cleanup(func() { m.close(t, 30*time.Second) })
	return m
}

func (m *member) close(t testing.TB, drain time.Duration) {
	if m.c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := m.c.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := <-m.done; err != nil {
		t.Errorf("subscribe: %v", err)
	}
	m.c = nil
}

// waitGroupSettled waits until the group's members have all joined and
// each holds its partitions: a probe message per key reaches a handler.
func waitMembers(t testing.TB, c *polybus.Client, topic, group string, n int) {
	t.Helper()
	// Membership is visible in the KV bucket; the assignment follows
	// within one beat. Wait until n member keys exist.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if got := memberCount(t, c, topic, group); got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s has %d members, want %d", group, memberCount(t, c, topic, group), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestScaleOutPerKeyOrder: three subscribers of one group, each on its own
// client, concurrency 4 each; 32 keys x 300 messages published after all
// three joined. Exactly once, exact per-key order, no overlap of a key
// across subscribers, everyone works, nobody more than 60%.
func TestScaleOutPerKeyOrder(t *testing.T) {
	u := embeddedURL(t)
	pub := open(t, u)
	topic, group := unique("scale"), unique("g")
	r := newOrderRecorder(t)
	for i := range 3 {
		startMember(t, u, topic, group, r.handler(i, 100*time.Microsecond))
	}
	waitMembers(t, pub, topic, group, 3)
	publishInterleaved(t, pub, topic)
	r.waitDistinct(t, scaleKeys*scalePerKey, 2*time.Minute)
	if dups := r.check(t, true); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Logf("handled per subscriber: %v", r.by)
	for i := range 3 {
		if share := float64(r.by[i]) / float64(r.total); r.by[i] == 0 || share > 0.6 {
			t.Errorf("subscriber %d handled %d of %d (%.0f%%)", i, r.by[i], r.total, 100*share)
		}
	}
}

// memberCount returns the number of member keys of group on topic's
// stream (a topic and group of plain lower-case letters, digits and '-').
func memberCount(t testing.TB, c *polybus.Client, topic, group string) int {
	t.Helper()
	var js jetstream.JetStream
	if !c.Publisher().As(&js) {
		t.Fatal("no JetStream")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, polynats.MembersBucket)
	if err != nil {
		return 0
	}
	keys, err := kv.ListKeysFiltered(ctx, "PB_"+topic+"."+group+".*")
	if err != nil {
		return 0
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	return n
}

// TestRebalancePerKeyOrder is the scale-out load while membership changes:
// a fourth subscriber joins, one leaves gracefully, one crashes (its
// client closed with a drain deadline that has passed already). Nothing is
// lost; per key, with repeats removed, the handled order is exact; the
// graceful leave causes no duplicate.
func TestRebalancePerKeyOrder(t *testing.T) {
	u := embeddedURL(t)
	pub := open(t, u)
	topic, group := unique("rebal"), unique("g")
	r := newOrderRecorder(t)
	r.t = nopErrors{t} // overlaps are counted here, not failures
	var ms []*member
	for i := range 3 {
		ms = append(ms, startMember(t, u, topic, group, r.handler(i, 200*time.Microsecond)))
	}
	waitMembers(t, pub, topic, group, 3)
	total := scaleKeys * scalePerKey
	published := make(chan error, 1)
	go func() {
		// Not publishInterleaved: t.Fatal belongs to the test's goroutine.
		for i := range scalePerKey {
			batch := make([]*message.Message, scaleKeys)
			for k := range scaleKeys {
				batch[k] = message.New([]byte(fmt.Sprint(i)))
				batch[k].Key = scaleKey(k)
			}
			if err := pub.Publisher().Publish(context.Background(), topic, batch...); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	defer func() {
		if err := <-published; err != nil {
			t.Errorf("publish: %v", err)
		}
	}()
	r.waitDistinct(t, total/4, time.Minute)
	ms = append(ms, startMember(t, u, topic, group, r.handler(3, 200*time.Microsecond)))
	r.waitDistinct(t, total/2, time.Minute)
	r.mu.Lock()
	dupsBefore := r.total - r.distinctLocked()
	r.mu.Unlock()
	ms[0].close(t, 30*time.Second)
	r.mu.Lock()
	dupsGraceful := r.total - r.distinctLocked() - dupsBefore
	r.mu.Unlock()
	r.waitDistinct(t, 3*total/4, time.Minute)
	ms[1].close(t, time.Nanosecond)
	r.waitDistinct(t, total, 2*time.Minute)
	dups := r.check(t, false)
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Logf("handled per subscriber %v; %d duplicates (%d around the graceful leave); %d overlaps", r.by, dups, dupsGraceful, r.overlaps)
	if dupsGraceful != 0 {
		t.Errorf("the graceful leave caused %d duplicates", dupsGraceful)
	}
}

// nopErrors turns Errorf into a log line.
type nopErrors struct{ testing.TB }

func (n nopErrors) Errorf(format string, args ...any) { n.Logf(format, args...) }

func (r *orderRecorder) distinctLocked() int {
	n := 0
	for _, seqs := range r.handled {
		seen := map[int]bool{}
		for _, s := range seqs {
			seen[s] = true
		}
		n += len(seen)
	}
	return n
}
