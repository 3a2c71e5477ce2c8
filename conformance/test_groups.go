package conformance

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// testPerKeyOrder: 32 keys x 300 messages, published interleaved, handled
// with concurrency 8: each key's messages are handled in publish order
// exactly (no gap, no repeat, no swap), and two calls for one key never
// overlap.
func testPerKeyOrder(f *fixture) {
	const keys, each = 32, 300
	pub := f.client()
	f.require(f.caps.OrderPerKey, "OrderPerKey")
	topic, group := f.topic(), f.group()
	rec := newRecorder(topic, group)

	var mu sync.Mutex
	inflight := map[string]bool{}
	got := map[string][]int{}
	var overlaps []string
	h := func(_ context.Context, m *message.Message) error {
		seq, err := strconv.Atoi(m.Metadata.Get(seqKey))
		if err != nil {
			f.Errorf("message %s has no sequence number: metadata %v", m.ID, m.Metadata)
			return nil
		}
		mu.Lock()
		if inflight[m.Key] {
			overlaps = append(overlaps, fmt.Sprintf("%s #%d", m.Key, seq))
		}
		inflight[m.Key] = true
		got[m.Key] = append(got[m.Key], seq)
		mu.Unlock()
		// Give an overlapping call of the same key the chance to show.
		runtime.Gosched()
		mu.Lock()
		inflight[m.Key] = false
		mu.Unlock()
		return nil
	}
	f.subscribe(f.client(), topic, rec.handler(0, h), subscriber.Group(group), subscriber.Concurrency(8))
	f.awaitReady(pub, topic, rec)

	perKey := make([][]*message.Message, keys)
	for k := range perKey {
		perKey[k] = seqMsgs(fmt.Sprintf("order-%02d", k), each)
	}
	var msgs []*message.Message // interleaved: key 0 #0, key 1 #0, ..., key 0 #1, ...
	for i := range each {
		for k := range keys {
			msgs = append(msgs, perKey[k][i])
		}
	}
	f.publish(pub, topic, msgs...)
	if f.awaitAll(rec, msgs, "per-key order") {
		f.observeQuiet()
	}

	mu.Lock()
	defer mu.Unlock()
	if len(overlaps) > 0 {
		f.Errorf("%d handler calls overlapped another call of the same key: %s", len(overlaps), sample(overlaps))
	}
	var wrong []string
	for k := range keys {
		key := fmt.Sprintf("order-%02d", k)
		if at, ok := firstOutOfOrder(got[key], each); !ok {
			wrong = append(wrong, fmt.Sprintf("%s: %s", key, at))
		}
	}
	if len(wrong) > 0 {
		f.Errorf("%d of %d keys not handled in publish order exactly: %s", len(wrong), keys, sample(wrong))
	}
}

// firstOutOfOrder checks that seqs is exactly 0..n-1 and otherwise
// describes the first difference.
func firstOutOfOrder(seqs []int, n int) (string, bool) {
	for i, s := range seqs {
		if i >= n {
			return fmt.Sprintf("%d handler calls, want %d", len(seqs), n), false
		}
		if s != i {
			return fmt.Sprintf("call %d handled #%d, want #%d", i, s, i), false
		}
	}
	if len(seqs) != n {
		return fmt.Sprintf("%d handler calls, want %d", len(seqs), n), false
	}
	return "", true
}

// testCompetingConsumers: two subscribers of one group share the messages:
// every message is handled exactly once in total, and both do work.
//
// Both join, and each has seen a probe, before anything is published, so no
// rebalance happens during the measured phase: a duplicate is a failure,
// unless the harness is a [Rebalancer] that says its broker redelivers on
// rebalance; then duplicates are counted (metric "duplicates") and only loss
// fails.
// To make "both do work" deterministic rather than a race, each handler
// holds its message until both subscribers have received one (or 10s have
// passed): a subscriber that takes messages keeps them unacked, so the
// broker must hand the rest to the other.
func testCompetingConsumers(f *fixture) {
	const total = 1000
	pub := f.client()
	f.require(f.caps.ConsumerGroups, "ConsumerGroups")
	topic, group := f.topic(), f.group()
	rec := newRecorder(topic, group)
	gateCtx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	gate := func(context.Context, *message.Message) error {
		rec.await(gateCtx, func() bool { return rec.received(0) > 0 && rec.received(1) > 0 })
		return nil
	}
	f.subscribe(f.client(), topic, rec.handler(0, gate), subscriber.Group(group))
	f.subscribe(f.client(), topic, rec.handler(1, gate), subscriber.Group(group))
	f.awaitReady(pub, topic, rec, 0, 1)
	// Partitioned groups move partitions while members join: wait for the
	// declared bound, so that nothing moves while the load flows.
	f.settle()

	msgs := make([]*message.Message, total)
	for i := range msgs {
		msgs[i] = newMsg(fmt.Sprintf("cc-%d", i%64), fmt.Appendf(nil, "competing %d", i), nil)
	}
	f.publish(pub, topic, msgs...)
	if f.awaitAll(rec, msgs, "competing consumers") {
		f.observeQuiet()
	}
	rb, ok := f.s.h.(Rebalancer)
	dupsOK := ok && rb.RedeliversOnRebalance()
	f.verifySet(rec, msgs, "competing consumers", dupsOK)
	f.metric("duplicates", int64(rec.duplicates()))
	n0, n1 := rec.received(0), rec.received(1)
	f.metric("subscriber_1", int64(n0))
	f.metric("subscriber_2", int64(n1))
	if n0 == 0 || n1 == 0 {
		f.Errorf("one subscriber did all the work: %d and %d messages", n0, n1)
	}
}
