package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// errFailOnce is the error a test's handler nacks with.
var errFailOnce = errors.New("conformance: handler fails this delivery on purpose")

// testAckIsFinal: messages that a subscriber acked are not delivered again
// to its group once it has closed and another subscriber has joined. The
// proof is a marker published afterwards: by the time it arrives, and for
// the quiet window after, none of the acked messages may arrive.
func testAckIsFinal(f *fixture) {
	pub := f.client()
	topic, group := f.topic(), f.group()
	first := newRecorder(topic, group)
	s1 := f.subscribe(f.client(), topic, first.handler(0, nil), subscriber.Group(group))
	f.awaitReady(pub, topic, first)

	msgs := make([]*message.Message, 100)
	for i := range msgs {
		msgs[i] = newMsg(fmt.Sprintf("a-%d", i%8), fmt.Appendf(nil, "acked %d", i), nil)
	}
	f.publish(pub, topic, msgs...)
	if !f.awaitAll(first, msgs, "first subscriber") {
		return
	}
	// Subscribe returns only after settling its acks with the broker.
	f.stop(s1)
	f.verifyExact(first, msgs, "first subscriber")

	second := newRecorder(topic, group)
	f.subscribe(f.client(), topic, second.handler(0, nil), subscriber.Group(group))
	marker := newMsg("", []byte("marker"), nil)
	f.publish(pub, topic, marker)
	if !f.awaitAll(second, []*message.Message{marker}, "marker to the second subscriber") {
		return
	}
	f.observeQuiet()
	var again []string
	for _, m := range msgs {
		if n := second.count(m.ID); n > 0 {
			again = append(again, fmt.Sprintf("%s x%d", m.ID, n))
		}
	}
	if len(again) > 0 {
		f.Errorf("%d of %d acked messages were delivered again to a new subscriber of the group: %s", len(again), len(msgs), sample(again))
	}
}

// testNackRedelivers: a message whose handler fails is delivered again;
// with AttemptCount declared, the first delivery is attempt 1 and the
// second is attempt 2, marked redelivered. Each message fails once, so each
// is handled exactly twice.
func testNackRedelivers(f *fixture) {
	pub := f.client()
	f.require(f.caps.Nack, "Nack")
	topic, group := f.topic(), f.group()
	rec := newRecorder(topic, group)
	h := func(_ context.Context, m *message.Message) error {
		if rec.count(m.ID) == 1 {
			return errFailOnce
		}
		return nil
	}
	f.subscribe(f.client(), topic, rec.handler(0, h), subscriber.Group(group), subscriber.NackDelay(0))
	f.awaitReady(pub, topic, rec)

	msgs := make([]*message.Message, 50)
	for i := range msgs {
		msgs[i] = newMsg("", fmt.Appendf(nil, "nacked %d", i), message.Metadata{"i": fmt.Sprint(i)})
	}
	f.publish(pub, topic, msgs...)
	twice := func() bool {
		for _, m := range msgs {
			if rec.count(m.ID) < 2 {
				return false
			}
		}
		return true
	}
	if !rec.await(f.ctx, twice) {
		var short []string
		for _, m := range msgs {
			if n := rec.count(m.ID); n < 2 {
				short = append(short, fmt.Sprintf("%s x%d", m.ID, n))
			}
		}
		f.Fatalf("%d of %d nacked messages were not delivered again before the deadline: %s", len(short), len(msgs), sample(short))
	}
	f.observeQuiet()
	var bad []string
	for _, m := range msgs {
		ds := rec.deliveries(m.ID)
		if len(ds) != 2 {
			bad = append(bad, fmt.Sprintf("%s delivered %d times, want 2", m.ID, len(ds)))
			continue
		}
		for _, d := range ds {
			if diff := diffMessage(m, d.msg); diff != "" {
				bad = append(bad, fmt.Sprintf("%s delivery %d: %s", m.ID, d.nth, diff))
			}
		}
		if f.caps.AttemptCount {
			if a1, a2 := ds[0].facts.Attempt, ds[1].facts.Attempt; a1 != 1 || a2 != 2 {
				bad = append(bad, fmt.Sprintf("%s attempts %d then %d, want 1 then 2", m.ID, a1, a2))
			}
			if ds[0].facts.Redelivered || !ds[1].facts.Redelivered {
				bad = append(bad, fmt.Sprintf("%s Redelivered %t then %t, want false then true", m.ID, ds[0].facts.Redelivered, ds[1].facts.Redelivered))
			}
		}
	}
	if len(bad) > 0 {
		f.Errorf("nack redelivery: %d problems: %s", len(bad), sample(bad))
	}
}

// testNackDelay: a message nacked with message.RetryAfter(err, d) is not
// delivered again before d has passed since its handler returned. It runs
// for every adapter that declares Nack: where the broker cannot delay a
// redelivery (NackDelay not declared), the portable subscriber holds the
// message and nacks it when the delay is over, and the guarantee is the same.
func testNackDelay(f *fixture) {
	pub := f.client()
	f.require(f.caps.Nack, "Nack")
	delay := 300 * time.Millisecond
	if max := f.caps.MaxNackDelay; max > 0 && delay > max {
		delay = max
	}
	how := "emulated by the portable subscriber"
	if f.caps.NackDelay {
		how = "by the broker"
	}
	f.Logf("nack delay %s, %s", delay, how)

	topic, group := f.topic(), f.group()
	rec := newRecorder(topic, group)
	var mu sync.Mutex
	nackedAt := map[string]time.Time{}
	h := func(_ context.Context, m *message.Message) error {
		if rec.count(m.ID) > 1 {
			return nil
		}
		mu.Lock()
		nackedAt[m.ID] = time.Now() // the delay runs from the handler's return
		mu.Unlock()
		return message.RetryAfter(errFailOnce, delay)
	}
	f.subscribe(f.client(), topic, rec.handler(0, h), subscriber.Group(group))
	f.awaitReady(pub, topic, rec)

	msgs := make([]*message.Message, 20)
	for i := range msgs {
		msgs[i] = newMsg("", fmt.Appendf(nil, "delayed %d", i), nil)
	}
	f.publish(pub, topic, msgs...)
	twice := func() bool {
		for _, m := range msgs {
			if rec.count(m.ID) < 2 {
				return false
			}
		}
		return true
	}
	if !rec.await(f.ctx, twice) {
		f.Fatalf("not every message nacked with a delay of %s was delivered again before the deadline", delay)
	}
	f.observeQuiet()
	var early, extra []string
	mu.Lock()
	defer mu.Unlock()
	for _, m := range msgs {
		ds := rec.deliveries(m.ID)
		if len(ds) != 2 {
			extra = append(extra, fmt.Sprintf("%s x%d", m.ID, len(ds)))
		}
		if after := ds[1].at.Sub(nackedAt[m.ID]); after < delay {
			early = append(early, fmt.Sprintf("%s after %s", m.ID, after.Round(time.Millisecond)))
		}
	}
	if len(early) > 0 {
		f.Errorf("%d of %d messages were redelivered before their nack delay of %s: %s", len(early), len(msgs), delay, sample(early))
	}
	if len(extra) > 0 {
		f.Errorf("%d messages nacked once were not delivered exactly twice: %s", len(extra), sample(extra))
	}
}

// testCrashRecovery: a subscriber stops while its handlers hold messages
// (blocked until the stop cancels them) and more wait in its prefetch
// buffer; a new subscriber of the group then receives every message the
// first one did not ack. Zero loss. Acked messages that come back are
// counted (metric "redelivered_acked"), not failed: the ack-is-final test
// covers them.
func testCrashRecovery(f *fixture) {
	const (
		total       = 100
		ackFirst    = 10
		concurrency = 4
	)
	pub := f.client()
	topic, group := f.topic(), f.group()
	first := newRecorder(topic, group)
	var calls, blocked atomic.Int64
	var mu sync.Mutex
	acked := map[string]bool{}
	h1 := func(ctx context.Context, m *message.Message) error {
		if calls.Add(1) <= ackFirst {
			mu.Lock()
			acked[m.ID] = true
			mu.Unlock()
			return nil
		}
		blocked.Add(1)
		first.notify()
		<-ctx.Done() // the crash: Close's deadline cancels the handler
		return ctx.Err()
	}
	c1 := f.client()
	f.subscribe(c1, topic, first.handler(0, h1), subscriber.Group(group),
		subscriber.Unordered(), subscriber.Concurrency(concurrency), subscriber.Prefetch(4*concurrency))
	f.awaitReady(pub, topic, first)

	msgs := make([]*message.Message, total)
	for i := range msgs {
		msgs[i] = newMsg(fmt.Sprintf("c-%d", i%10), fmt.Appendf(nil, "crash %d", i), nil)
	}
	f.publish(pub, topic, msgs...)
	if !first.await(f.ctx, func() bool { return blocked.Load() == concurrency }) {
		f.Fatalf("handlers blocked: %d, want %d (all workers busy) before the deadline", blocked.Load(), concurrency)
	}

	// Crash: close the first subscriber's client with a deadline that has
	// all but passed, so its in-flight handlers are cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	start := time.Now()
	err := c1.Close(ctx)
	cancel()
	if err != nil {
		f.Errorf("close the crashing client: %v", err)
	}
	if d := time.Since(start); d > promptly {
		f.Errorf("Close with a 50ms deadline took %s with handlers blocked until cancelled", d)
	}

	mu.Lock()
	var want []*message.Message
	for _, m := range msgs {
		if !acked[m.ID] {
			want = append(want, m)
		}
	}
	nAcked := len(acked)
	mu.Unlock()
	if nAcked != ackFirst {
		f.Errorf("first subscriber acked %d messages, want %d", nAcked, ackFirst)
	}

	second := newRecorder(topic, group)
	f.subscribe(f.client(), topic, second.handler(0, nil), subscriber.Group(group), subscriber.Unordered())
	if !f.awaitAll(second, want, "messages not acked before the crash") {
		return
	}
	f.observeQuiet()
	again := 0
	mu.Lock()
	for id := range acked {
		again += second.count(id)
	}
	mu.Unlock()
	f.metric("redelivered_acked", int64(again))
	f.metric("duplicates", int64(second.duplicates()))
	for _, m := range want {
		for _, d := range second.deliveries(m.ID) {
			if diff := diffMessage(m, d.msg); diff != "" {
				f.Errorf("%s redelivered changed: %s", m.ID, diff)
			}
		}
	}
}
