package conformance

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// The scale-out load: 32 keys x 300 messages, published interleaved.
const (
	scaleKeys = 32
	scaleEach = 300
)

// keyOrder watches the handler calls of every subscriber of a group: one
// in-flight map shared by all of them, each key's handled sequence numbers
// in call order, and every overlap of two calls of one key.
type keyOrder struct {
	f  *fixture
	mu sync.Mutex
	// inflight maps a key to the subscriber running a call of it, if any.
	inflight map[string]int
	got      map[string][]int
	// overlaps lists calls that began while another call of their key
	// ran; cross counts those where the other call ran on another
	// subscriber.
	overlaps []string
	cross    int
	// work is simulated per-message work, so that messages are in flight
	// when membership changes.
	work time.Duration
}

func newKeyOrder(f *fixture) *keyOrder {
	return &keyOrder{f: f, inflight: map[string]int{}, got: map[string][]int{}}
}

// wrap returns subscriber sub's handler: order bookkeeping, then the
// simulated work. It goes behind a recorder, so it never sees probes.
func (o *keyOrder) wrap(sub int) subscriber.Handler {
	return func(_ context.Context, m *message.Message) error {
		seq, err := strconv.Atoi(m.Metadata.Get(seqKey))
		if err != nil {
			o.f.Errorf("message %s has no sequence number: metadata %v", m.ID, m.Metadata)
			return nil
		}
		o.mu.Lock()
		if other, busy := o.inflight[m.Key]; busy {
			o.overlaps = append(o.overlaps, fmt.Sprintf("%s #%d on subscriber %d while subscriber %d ran it", m.Key, seq, sub+1, other+1))
			if other != sub {
				o.cross++
			}
		}
		o.inflight[m.Key] = sub
		o.got[m.Key] = append(o.got[m.Key], seq)
		o.mu.Unlock()
		// Give an overlapping call of the same key the chance to show.
		runtime.Gosched()
		if o.work > 0 {
			time.Sleep(o.work)
		}
		o.mu.Lock()
		if o.inflight[m.Key] == sub {
			delete(o.inflight, m.Key)
		}
		o.mu.Unlock()
		return nil
	}
}

// scaleMessages returns the load: keys fresh for the run (so they fall on
// different partitions each time), interleaved (key 0 #0, key 1 #0, ...,
// key 0 #1, ...).
func scaleMessages() (keys []string, msgs []*message.Message) {
	prefix := randomHex(3)
	perKey := make([][]*message.Message, scaleKeys)
	for k := range perKey {
		keys = append(keys, fmt.Sprintf("so-%s-%02d", prefix, k))
		perKey[k] = seqMsgs(keys[k], scaleEach)
	}
	for i := range scaleEach {
		for k := range scaleKeys {
			msgs = append(msgs, perKey[k][i])
		}
	}
	return keys, msgs
}

// settle waits for the bound the adapter declares for a group to reach a
// balanced assignment after its membership changed.
func (f *fixture) settle() {
	if f.caps.Rebalance <= 0 {
		return
	}
	t := time.NewTimer(f.caps.Rebalance)
	defer t.Stop()
	select {
	case <-t.C:
	case <-f.ctx.Done():
	}
}

// testPerKeyOrderScaleOut: three subscribers of one group, each on its own
// client, concurrency 4 each; 32 keys x 300 messages published interleaved
// once all three have joined and the group has settled. Every message is
// handled exactly once; each key's messages in publish order exactly; no
// two calls of one key overlap, across subscribers or within one; every
// subscriber works and none handles more than 60%.
func testPerKeyOrderScaleOut(f *fixture) {
	const subs = 3
	pub := f.client()
	f.require(f.caps.OrderPerKeyScaleOut, "OrderPerKeyScaleOut")
	topic, group := f.topic(), f.group()
	rec := newRecorder(topic, group)
	order := newKeyOrder(f)
	for i := range subs {
		f.subscribe(f.client(), topic, rec.handler(i, order.wrap(i)),
			subscriber.Group(group), subscriber.Concurrency(4))
	}
	f.awaitReady(pub, topic, rec, 0, 1, 2)
	f.settle()

	keys, msgs := scaleMessages()
	f.publish(pub, topic, msgs...)
	if f.awaitAll(rec, msgs, "per-key order, scaled out") {
		f.observeQuiet()
	}
	f.verifyExact(rec, msgs, "per-key order, scaled out")

	order.mu.Lock()
	defer order.mu.Unlock()
	f.metric("overlaps", int64(len(order.overlaps)))
	if len(order.overlaps) > 0 {
		f.Errorf("%d handler calls overlapped another call of the same key (%d across subscribers): %s",
			len(order.overlaps), order.cross, sample(order.overlaps))
	}
	var wrong []string
	for _, key := range keys {
		if at, ok := firstOutOfOrder(order.got[key], scaleEach); !ok {
			wrong = append(wrong, fmt.Sprintf("%s: %s", key, at))
		}
	}
	if len(wrong) > 0 {
		f.Errorf("%d of %d keys not handled in publish order exactly: %s", len(wrong), len(keys), sample(wrong))
	}
	total := len(msgs)
	for i := range subs {
		n := rec.received(i)
		f.metric(fmt.Sprintf("subscriber_%d", i+1), int64(n))
		switch {
		case n == 0:
			f.Errorf("subscriber %d handled nothing: the group did not scale out", i+1)
		case n*10 > total*6:
			f.Errorf("subscriber %d handled %d of %d messages, more than 60%%: the group is not balanced", i+1, n, total)
		}
	}
}

// testPerKeyOrderRebalance: the scale-out load while the group's
// membership changes mid-stream: a fourth subscriber joins, then one of the
// first three leaves gracefully, then another crashes (its client closed
// with a drain deadline that has all but passed). Nothing is lost, and for
// each key the handled sequence with repeats removed (first occurrence
// kept) is exactly 0..n-1: a later message of a key is never handled before
// an earlier one was handled once. Duplicates and overlaps are metrics.
// Once the declared rebalance bound has passed after the crash, the last
// quarter of the load is shared by both survivors.
func testPerKeyOrderRebalance(f *fixture) {
	pub := f.client()
	f.require(f.caps.OrderPerKeyScaleOut, "OrderPerKeyScaleOut")
	topic, group := f.topic(), f.group()
	rec := newRecorder(topic, group)
	rec.crashes = true
	order := newKeyOrder(f)
	order.work = 200 * time.Microsecond
	opts := []subscriber.Option{subscriber.Group(group), subscriber.Concurrency(4)}
	clients := make([]*polybus.Client, 4)
	runs := make([]*running, 4)
	start := func(i int) {
		clients[i] = f.client()
		runs[i] = f.subscribe(clients[i], topic, rec.handler(i, order.wrap(i)), opts...)
	}
	for i := range 3 {
		start(i)
	}
	f.awaitReady(pub, topic, rec, 0, 1, 2)
	f.settle()

	keys, msgs := scaleMessages()
	quarter := len(msgs) / 4
	handled := func(n int) bool {
		ok := rec.await(f.ctx, func() bool { return rec.handledAtLeast(n) })
		if !ok {
			f.Errorf("only %d of %d messages handled before the deadline (waiting for %d)", rec.handledDistinct(), len(msgs), n)
		}
		return ok
	}

	// Quarter 1; a fourth subscriber joins half-way through it.
	f.publish(pub, topic, msgs[:quarter]...)
	if !handled(quarter / 2) {
		return
	}
	start(3)
	// Quarter 2; subscriber 1 leaves gracefully half-way through it.
	f.publish(pub, topic, msgs[quarter:2*quarter]...)
	if !handled(quarter + quarter/2) {
		return
	}
	graceful := rec.deliveredBy(0)
	f.stop(runs[0])
	f.closeClient(clients[0])
	// Quarter 3; subscriber 2 crashes half-way through it.
	f.publish(pub, topic, msgs[2*quarter:3*quarter]...)
	if !handled(2*quarter + quarter/2) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := clients[1].Close(ctx); err != nil {
		f.Errorf("close the crashing client: %v", err)
	}
	cancel()
	f.settle()
	// Quarter 4, shared by the survivors, subscribers 3 and 4.
	rest := msgs[3*quarter:]
	before := map[int]int{2: rec.received(2), 3: rec.received(3)}
	f.publish(pub, topic, rest...)
	if f.awaitAll(rec, msgs, "per-key order across rebalances") {
		f.observeQuiet()
	}
	f.verifySet(rec, msgs, "per-key order across rebalances", true)

	dupsGraceful := 0
	for id := range graceful {
		if rec.count(id) > 1 {
			dupsGraceful++
		}
	}
	f.metric("duplicates", int64(rec.duplicates()))
	f.metric("duplicates_after_graceful_leave", int64(dupsGraceful))

	order.mu.Lock()
	defer order.mu.Unlock()
	f.metric("overlaps", int64(len(order.overlaps)))
	f.metric("overlaps_across_subscribers", int64(order.cross))
	var wrong []string
	for _, key := range keys {
		if at, ok := firstOutOfOrder(firstOccurrences(order.got[key]), scaleEach); !ok {
			wrong = append(wrong, fmt.Sprintf("%s: %s", key, at))
		}
	}
	if len(wrong) > 0 {
		f.Errorf("%d of %d keys: a later message was handled before an earlier one was handled once: %s",
			len(wrong), len(keys), sample(wrong))
	}
	for i := 0; i < 4; i++ {
		f.metric(fmt.Sprintf("subscriber_%d", i+1), int64(rec.received(i)))
	}
	// The last quarter: both survivors work, neither more than 80% (two
	// members sharing 32 keys).
	n2, n3 := rec.received(2)-before[2], rec.received(3)-before[3]
	f.metric("last_quarter_subscriber_3", int64(n2))
	f.metric("last_quarter_subscriber_4", int64(n3))
	for _, n := range []int{n2, n3} {
		if n == 0 || n*10 > (n2+n3)*8 {
			f.Errorf("after the declared rebalance bound (%s), the survivors handled %d and %d messages of the last quarter: not balanced",
				f.caps.Rebalance, n2, n3)
			break
		}
	}
}

// firstOccurrences returns seqs with repeats removed, each first
// occurrence kept in place.
func firstOccurrences(seqs []int) []int {
	seen := make(map[int]bool, len(seqs))
	out := make([]int, 0, len(seqs))
	for _, s := range seqs {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// handledDistinct returns how many distinct messages were delivered.
func (r *recorder) handledDistinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// handledAtLeast reports whether at least n distinct messages were
// delivered.
func (r *recorder) handledAtLeast(n int) bool { return r.handledDistinct() >= n }

// deliveredBy returns the IDs whose first delivery was to subscriber sub.
func (r *recorder) deliveredBy(sub int) map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := map[string]bool{}
	for id, idx := range r.byID {
		if r.list[idx[0]].sub == sub {
			ids[id] = true
		}
	}
	return ids
}
