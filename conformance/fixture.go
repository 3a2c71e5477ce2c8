package conformance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// Metadata keys of the suite's own messages. They are ordinary application
// keys, outside message.MetadataPrefix.
const (
	// probeKey marks a readiness probe: handlers ack it and the recorder
	// notes which subscriber saw it, nothing else.
	probeKey = "conformance-probe"
	// seqKey carries a message's position in its key's sequence.
	seqKey = "conformance-seq"
)

// promptly bounds calls that must return "promptly": Subscribe after its
// context ends, Close of an idle client. Generous, because closing a real
// broker connection can take a round trip or two.
const promptly = 10 * time.Second

// fixture is one test's view of the suite: its T, its deadline, and helpers
// that open clients, publish and subscribe, each cleaned up with the test.
type fixture struct {
	T
	s *suite
	// ctx ends at the test's deadline, or when a subscription fails.
	ctx   context.Context
	abort context.CancelFunc
	caps  message.Capabilities
}

func (s *suite) newFixture(t T) *fixture {
	ctx, cancel := context.WithTimeout(t.Context(), s.opts.Timeout)
	t.Cleanup(cancel)
	return &fixture{T: t, s: s, ctx: ctx, abort: cancel}
}

// client opens a client on the broker under test, closed when the test
// ends. The first client's capabilities become f.caps.
func (f *fixture) client() *polybus.Client {
	f.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	c, err := f.s.h.Open(ctx)
	if err != nil {
		f.Fatalf("open a client: %v", err)
	}
	if c == nil {
		f.Fatalf("open a client: the harness returned a nil client and no error")
	}
	if f.caps.Name == "" {
		f.caps = c.Capabilities()
		f.s.setCapabilities(f.caps)
	}
	f.Cleanup(func() { f.closeClient(c) })
	return c
}

// closeClient closes c (again: Close is idempotent) within a bound.
func (f *fixture) closeClient(c *polybus.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		f.Errorf("close client: %v", err)
	}
}

// require skips the test unless the adapter declares capability.
func (f *fixture) require(declared bool, capability string) {
	f.Helper()
	if !declared {
		f.Skipf("adapter %q does not declare %s", f.caps.Name, capability)
	}
}

func (f *fixture) topic() string { return f.s.topic() }
func (f *fixture) group() string { return f.s.h.Name("group") }

// publish publishes msgs to topic in calls of up to 100 messages, in
// order, and ends the test on the first error.
func (f *fixture) publish(c *polybus.Client, topic string, msgs ...*message.Message) {
	f.Helper()
	for len(msgs) > 0 {
		n := min(len(msgs), 100)
		if err := c.Publisher().Publish(f.ctx, topic, msgs[:n]...); err != nil {
			f.Fatalf("publish %d messages to %s: %v", n, topic, err)
		}
		msgs = msgs[n:]
	}
}

// running is one Subscribe call running in its own goroutine.
type running struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Subscribe's result, set before done is closed
}

// subscribe runs Subscribe in a goroutine until stop or the end of the
// test. A Subscribe that returns an error fails the test and aborts its
// waits.
func (f *fixture) subscribe(c *polybus.Client, topic string, h subscriber.Handler, opts ...subscriber.Option) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = c.Subscriber().Subscribe(ctx, topic, h, opts...)
		if r.err != nil {
			f.Errorf("Subscribe(%q) returned: %v", topic, r.err)
			f.abort()
		}
	}()
	f.Cleanup(func() { f.stop(r) })
	return r
}

// stop ends a Subscribe call and waits until it returns. A handler still
// blocked delays it by up to the subscriber's drain timeout.
func (f *fixture) stop(r *running) {
	r.cancel()
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
		f.Errorf("Subscribe did not return within a minute of its context ending")
	}
}

// awaitReady publishes a probe to topic, again every 100ms, until ready
// holds: how the suite knows that subscriptions are open before it
// publishes, on brokers where a group sees only what is published after it
// exists.
func (f *fixture) awaitReady(pub *polybus.Client, topic string, r *recorder, subs ...int) {
	f.Helper()
	if len(subs) == 0 {
		subs = []int{0}
	}
	ready := func() bool {
		for _, s := range subs {
			if !r.ready(s) {
				return false
			}
		}
		return true
	}
	for n := 0; ; n++ {
		p := message.New(nil)
		p.Key = fmt.Sprintf("cf-probe-%d", n)
		p.Metadata = message.Metadata{probeKey: "1"}
		if err := pub.Publisher().Publish(f.ctx, topic, p); err != nil {
			// Until the subscriptions have made their groups, a broker
			// without retention may refuse the topic (NotFound), and a
			// busy one may refuse a message (Unavailable): try again.
			retry := errors.Is(err, message.ErrNotFound) || errors.Is(err, message.ErrUnavailable)
			if !retry || f.ctx.Err() != nil {
				f.Fatalf("publish a readiness probe to %s: %v", topic, err)
			}
		}
		ctx, cancel := context.WithTimeout(f.ctx, 100*time.Millisecond)
		ok := r.await(ctx, ready)
		cancel()
		if ok {
			return
		}
		if f.ctx.Err() != nil {
			f.Fatalf("subscribers %v of %s saw none of %d readiness probes before the deadline", subs, topic, n+1)
		}
	}
}

// awaitAll waits until every message of want has been delivered to r at
// least once, and reports the missing ones when the deadline passes first.
func (f *fixture) awaitAll(r *recorder, want []*message.Message, what string) bool {
	f.Helper()
	if r.await(f.ctx, func() bool { return r.hasAll(want) }) {
		return true
	}
	missing := r.missing(want)
	f.Errorf("%s: %d of %d messages not delivered before the deadline; missing %s",
		what, len(missing), len(want), sample(missing))
	return false
}

// observeQuiet waits out the observation window in which deliveries that
// must not happen (duplicates, redeliveries of acked messages) would show.
func (f *fixture) observeQuiet() {
	t := time.NewTimer(f.s.opts.Quiet)
	defer t.Stop()
	select {
	case <-t.C:
	case <-f.ctx.Done():
	}
}

// verifyExact checks that r received every message of want exactly once,
// unchanged, and nothing else (probes aside).
func (f *fixture) verifyExact(r *recorder, want []*message.Message, what string) {
	f.Helper()
	f.verifySet(r, want, what, false)
}

// verifySet checks that r received every message of want, unchanged, and
// nothing else (probes aside); each exactly once unless dupsOK.
func (f *fixture) verifySet(r *recorder, want []*message.Message, what string, dupsOK bool) {
	f.Helper()
	byID := make(map[string]*message.Message, len(want))
	for _, m := range want {
		byID[m.ID] = m
	}
	var missing, dups, extra, changed []string
	for _, m := range want {
		ds := r.deliveries(m.ID)
		switch {
		case len(ds) == 0:
			missing = append(missing, m.ID)
		case len(ds) > 1:
			dups = append(dups, fmt.Sprintf("%s x%d", m.ID, len(ds)))
		}
		for _, d := range ds {
			if diff := diffMessage(m, d.msg); diff != "" {
				changed = append(changed, m.ID+": "+diff)
			}
		}
	}
	for _, id := range r.ids() {
		if byID[id] == nil {
			extra = append(extra, id)
		}
	}
	if len(missing) > 0 {
		f.Errorf("%s: %d of %d messages never delivered: %s", what, len(missing), len(want), sample(missing))
	}
	if len(dups) > 0 && !dupsOK {
		f.Errorf("%s: %d messages delivered more than once (no handler failed): %s", what, len(dups), sample(dups))
	}
	if len(extra) > 0 {
		f.Errorf("%s: %d messages delivered that were not published to this topic: %s", what, len(extra), sample(extra))
	}
	if len(changed) > 0 {
		f.Errorf("%s: %d deliveries differ from what was published: %s", what, len(changed), sample(changed))
	}
	f.verifyFacts(r, what)
}

// verifyFacts checks each delivery's facts: received through an adapter,
// from the recorder's topic and group, first attempt unless redelivered.
func (f *fixture) verifyFacts(r *recorder, what string) {
	f.Helper()
	var bad []string
	approx := false
	if a, ok := f.s.h.(ApproximateAttempts); ok {
		approx = a.AttemptsApproximate()
	}
	above := 0
	for _, d := range r.all() {
		if approx && d.hasFacts && d.nth == 1 && d.facts.Attempt > 1 {
			above++
			continue
		}
		switch {
		case !d.hasFacts:
			bad = append(bad, d.msg.ID+": no delivery facts (adapter did not call message.Received)")
		case d.facts.Topic != r.topic:
			bad = append(bad, fmt.Sprintf("%s: Delivery.Topic %q, want %q", d.msg.ID, d.facts.Topic, r.topic))
		case r.group != "" && d.facts.Group != r.group:
			bad = append(bad, fmt.Sprintf("%s: Delivery.Group %q, want %q", d.msg.ID, d.facts.Group, r.group))
		case f.caps.AttemptCount && d.nth == 1 && d.facts.Attempt != 1 && !r.crashes:
			bad = append(bad, fmt.Sprintf("%s: first delivery has Attempt %d, want 1", d.msg.ID, d.facts.Attempt))
		}
	}
	if approx {
		f.metric("first_attempt_above_1", int64(above))
	}
	if len(bad) > 0 {
		f.Errorf("%s: %d deliveries with wrong facts: %s", what, len(bad), sample(bad))
	}
}

// sample lists up to five items of a report, and how many more there are.
func sample(items []string) string {
	const n = 5
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s, ... (%d more)", strings.Join(items[:n], ", "), len(items)-n)
}

// newMsg returns a message with a fresh ID.
func newMsg(key string, payload []byte, md message.Metadata) *message.Message {
	m := message.New(payload)
	m.Key = key
	m.Metadata = md
	return m
}

// seqMsgs returns n messages with key, numbered 0..n-1 in seqKey.
func seqMsgs(key string, n int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = newMsg(key, fmt.Appendf(nil, "%s/%d", key, i), message.Metadata{seqKey: fmt.Sprint(i)})
	}
	return msgs
}

// watch is a condition variable with deadlines: notify wakes every await,
// which re-checks its condition.
type watch struct {
	mu sync.Mutex
	ch chan struct{}
}

func (w *watch) changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *watch) notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// await waits until cond holds or ctx ends, and reports whether cond
// holds. cond must do its own locking.
func (w *watch) await(ctx context.Context, cond func() bool) bool {
	for {
		ch := w.changed() // before cond: a change after it closes ch
		if cond() {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return cond()
		}
	}
}
