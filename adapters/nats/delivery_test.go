package nats_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TestStartPositions publishes before any group exists: a new Earliest
// group gets every message in order, a new Latest group only later ones,
// and a group that exists resumes where it stopped.
func TestStartPositions(t *testing.T) {
	// One partition: stream order across keys, which this test checks.
	c := open(t, embeddedURL(t)+"?partitions=1")
	topic := unique("start")
	before := numbered(20, "")
	publish(t, c, topic, before...)

	early := newSink()
	stopEarly := subscribe(t, c, topic, early.handle, subscriber.Group("early"), subscriber.Concurrency(1))
	if got := early.waitCount(t, 20); !slices.Equal(ids(got), ids(before)) {
		t.Fatalf("earliest group got %v, want %v", ids(got), ids(before))
	}
	late := newSink()
	subscribe(t, c, topic, late.handle, subscriber.Group("late"), subscriber.StartAt(subscriber.Latest), subscriber.Concurrency(1))
	// The Latest group exists once a probe published now reaches it.
	var after []*message.Message
	late.waitFor(t, 30*time.Second, "the latest group to see a message", func(got []*message.Message) bool {
		if len(got) > 0 {
			return true
		}
		m := message.New([]byte("probe"))
		after = append(after, m)
		publish(t, c, topic, m)
		return false
	})
	stopEarly()
	more := numbered(5, "")
	publish(t, c, topic, more...)
	// Probes published before the group existed are legitimately missed:
	// expect every message from the first probe it received on.
	allProbes := after
	first := slices.Index(ids(after), late.all()[0].ID)
	after = append(slices.Clone(after[first:]), more...)
	got := late.waitCount(t, len(after))
	if !slices.Equal(ids(got), ids(after)) {
		t.Fatalf("latest group got %v, want %v", ids(got), ids(after))
	}
	for _, m := range got {
		if slices.Contains(ids(before), m.ID) {
			t.Fatalf("latest group got %s, published before it existed", m.ID)
		}
	}
	// The early group resumes after its acks: exactly the messages of the
	// topic that it did not handle before it stopped, in order.
	handled := map[string]bool{}
	for _, m := range early.all() {
		handled[m.ID] = true
	}
	var rest []string
	for _, id := range append(ids(before), ids(allProbes)...) {
		if !handled[id] {
			rest = append(rest, id)
		}
	}
	rest = append(rest, ids(more)...)
	resumed := newSink()
	subscribe(t, c, topic, resumed.handle, subscriber.Group("early"), subscriber.Concurrency(1))
	if got := resumed.waitCount(t, len(rest)); !slices.Equal(ids(got), rest) {
		t.Fatalf("resumed group got %v, want %v", ids(got), rest)
	}
}

// TestCompetingAndFanOut runs two subscribers in one group and one in
// another: the group's two handle each message exactly once between them,
// the other group gets every message.
func TestCompetingAndFanOut(t *testing.T) {
	c1 := open(t, embeddedURL(t))
	topic := unique("groups")
	msgs := numbered(300, "")
	a, b, other := newSink(), newSink(), newSink()
	subscribe(t, c1, topic, a.handle, subscriber.Group("g"))
	subscribe(t, c1, topic, b.handle, subscriber.Group("g"))
	subscribe(t, c1, topic, other.handle, subscriber.Group("other"), subscriber.Concurrency(1))
	publish(t, c1, topic, msgs...)

	all := func() []string {
		return append(ids(a.all()), ids(b.all())...)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(all()) < len(msgs) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := all()
	slices.Sort(got)
	want := ids(msgs)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("group g handled %d messages (%d distinct), want each of %d once", len(got), len(slices.Compact(slices.Clone(got))), len(want))
	}
	if len(a.all()) == 0 || len(b.all()) == 0 {
		t.Errorf("one competing subscriber did all the work: %d and %d", len(a.all()), len(b.all()))
	}
	// Keyless messages are spread over the partitions: every one once,
	// in no particular order.
	o := ids(other.waitCount(t, len(msgs)))
	slices.Sort(o)
	if !slices.Equal(o, want) {
		t.Fatalf("group other got %d messages, want each of %d once", len(o), len(msgs))
	}
}

// TestNackRedelivery fails each message's first two handlings and checks
// the attempt numbers and redelivered flags of all three.
func TestNackRedelivery(t *testing.T) {
	c := open(t, embeddedURL(t))
	topic := unique("nack")
	msgs := numbered(10, "")
	var mu sync.Mutex
	seen := map[string][]message.Delivery{}
	done := make(chan struct{})
	var finished atomic.Int64
	h := func(_ context.Context, m *message.Message) error {
		d, _ := m.Delivery()
		mu.Lock()
		seen[m.ID] = append(seen[m.ID], d)
		n := len(seen[m.ID])
		mu.Unlock()
		if n < 3 {
			return errors.New("not yet")
		}
		if finished.Add(1) == int64(len(msgs)) {
			close(done)
		}
		return nil
	}
	subscribe(t, c, topic, h)
	publish(t, c, topic, msgs...)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("not every message was handled three times")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, m := range msgs {
		ds := seen[m.ID]
		if len(ds) != 3 {
			t.Errorf("%s handled %d times, want 3", m.ID, len(ds))
			continue
		}
		for i, d := range ds {
			if d.Attempt != i+1 || d.Redelivered != (i > 0) {
				t.Errorf("%s handling %d: attempt %d redelivered %v", m.ID, i+1, d.Attempt, d.Redelivered)
			}
		}
	}
}

// TestNackDelay checks that a message nacked with a delay does not come
// back before the delay.
func TestNackDelay(t *testing.T) {
	c := open(t, embeddedURL(t))
	topic := unique("delay")
	const delay = 400 * time.Millisecond
	var mu sync.Mutex
	var times []time.Time
	var nackedAt time.Time
	done := make(chan struct{})
	h := func(_ context.Context, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if len(times) == 1 {
			nackedAt = time.Now()
			return message.RetryAfter(errors.New("later"), delay)
		}
		close(done)
		return nil
	}
	subscribe(t, c, topic, h)
	publish(t, c, topic, message.New([]byte("x")))
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the nacked message did not come back")
	}
	mu.Lock()
	defer mu.Unlock()
	if gap := times[1].Sub(nackedAt); gap < delay {
		t.Fatalf("redelivered %s after the nack, before the %s delay", gap, delay)
	}
}

// TestPerKeyOrder publishes 16 keys concurrently, each key's messages in
// order from its own goroutine, and checks that every key is handled in
// publish order by a subscriber running 8 handlers at once.
func TestPerKeyOrder(t *testing.T) {
	c := open(t, embeddedURL(t))
	topic := unique("order")
	const keys, perKey = 16, 100
	var wg sync.WaitGroup
	for k := range keys {
		wg.Go(func() {
			for i := range perKey {
				m := message.New([]byte(fmt.Sprint(i)))
				m.Key = fmt.Sprintf("key-%d", k)
				m.ID = fmt.Sprintf("key-%d-%03d", k, i)
				publish(t, c, topic, m)
			}
		})
	}
	var mu sync.Mutex
	got := map[string][]string{}
	running := map[string]bool{}
	var total atomic.Int64
	done := make(chan struct{})
	h := func(_ context.Context, m *message.Message) error {
		mu.Lock()
		if running[m.Key] {
			t.Errorf("two handlers ran at once for %s", m.Key)
		}
		running[m.Key] = true
		got[m.Key] = append(got[m.Key], m.ID)
		mu.Unlock()
		time.Sleep(time.Duration(len(m.ID)%3) * 100 * time.Microsecond)
		mu.Lock()
		running[m.Key] = false
		mu.Unlock()
		if total.Add(1) == keys*perKey {
			close(done)
		}
		return nil
	}
	subscribe(t, c, topic, h, subscriber.Concurrency(8))
	wg.Wait()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("handled %d of %d", total.Load(), keys*perKey)
	}
	mu.Lock()
	defer mu.Unlock()
	for k := range keys {
		key := fmt.Sprintf("key-%d", k)
		var want []string
		for i := range perKey {
			want = append(want, fmt.Sprintf("key-%d-%03d", k, i))
		}
		if !slices.Equal(got[key], want) {
			t.Errorf("%s handled out of order or incomplete: %v", key, got[key])
		}
	}
}

// TestSizeLimit checks the declared limit: a message of exactly
// MaxMessageSize goes through (payload only, and with key and metadata);
// one byte more fails with TooLarge before anything of the call is sent;
// a message under the limit whose headers blow past max_payload fails alone.
func TestSizeLimit(t *testing.T) {
	// One partition: stream order across keys, which this test checks.
	c := open(t, embeddedURL(t)+"?partitions=1")
	topic := unique("size")
	limit := c.Capabilities().MaxMessageSize
	var nc *natsgo.Conn
	if !c.Publisher().As(&nc) {
		t.Fatal("no connection")
	}
	if want := int(nc.MaxPayload()) - 1024; limit != want {
		t.Fatalf("MaxMessageSize %d, want max_payload-1024 = %d", limit, want)
	}
	exact := message.New(make([]byte, limit))
	withMeta := &message.Message{Key: "ord-1", Metadata: message.Metadata{}}
	for i := range 100 {
		withMeta.Metadata[fmt.Sprintf("k%02d", i)] = "v"
	}
	withMeta.Payload = make([]byte, limit-withMeta.Size())
	if withMeta.Size() != limit {
		t.Fatalf("size %d", withMeta.Size())
	}
	publish(t, c, topic, exact, withMeta)

	over := message.New(make([]byte, limit+1))
	small := message.New([]byte("small"))
	ctx := context.Background()
	if err := c.Publisher().Publish(ctx, topic, small, over); !errors.Is(err, message.ErrTooLarge) {
		t.Fatalf("limit+1: got %v, want TooLarge", err)
	}
	// Under the limit by Size, over max_payload once encoded: 2,000
	// metadata entries whose keys must be base64-encoded.
	encoded := &message.Message{Metadata: message.Metadata{}}
	for i := 0; encoded.Size() < limit-200; i++ {
		encoded.Metadata[fmt.Sprintf("key with space %05d", i)] = strings.Repeat("v", 200)
	}
	ok := message.New([]byte("ok"))
	err := c.Publisher().Publish(ctx, topic, ok, encoded)
	var pe interface{ Unwrap() []error }
	if !errors.Is(err, message.ErrTooLarge) || !errors.As(err, &pe) || len(pe.Unwrap()) != 1 {
		t.Fatalf("encoded over max_payload: got %v, want a PublishError with one TooLarge", err)
	}

	s := newSink()
	subscribe(t, c, topic, s.handle, subscriber.Concurrency(1))
	got := s.waitCount(t, 3)
	if !slices.Equal(ids(got), []string{exact.ID, withMeta.ID, ok.ID}) {
		t.Fatalf("delivered %v, want the exact-size ones and ok", ids(got))
	}
	if len(got[0].Payload) != limit || len(got[1].Metadata) != 100 {
		t.Fatalf("exact-size messages changed")
	}
}

// TestBadTopicsAndGroups checks that topics that cannot be NATS subjects
// are refused with InvalidArgument, and that any group name works.
func TestBadTopicsAndGroups(t *testing.T) {
	// One partition: stream order across keys, which this test checks.
	c := open(t, embeddedURL(t)+"?partitions=1")
	ctx := context.Background()
	for _, topic := range []string{"a b", "a\tb", "a.*", "a.>", ">", "*", "a..b", ".a", "a.", "$JS.API.x", "_INBOX.x", "a\x00b", "bad\xff"} {
		if err := c.Publisher().Publish(ctx, topic, message.New(nil)); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("publish to %q: got %v, want InvalidArgument", topic, err)
		}
		err := c.Subscriber().Subscribe(ctx, topic, func(context.Context, *message.Message) error { return nil })
		if !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("subscribe to %q: got %v, want InvalidArgument", topic, err)
		}
	}
	// Groups that differ only in case, or by characters stream names
	// refuse, are distinct consumers.
	topic := "orders.Created-ü"
	msgs := numbered(3, "")
	publish(t, c, topic, msgs...)
	for _, g := range []string{"Billing", "billing", "bill ing", "bill.ing", "bill_ing", "счёт", strings.Repeat("g", 400)} {
		s := newSink()
		stop := subscribe(t, c, topic, s.handle, subscriber.Group(g), subscriber.Concurrency(1))
		if got := s.waitCount(t, 3); !slices.Equal(ids(got), ids(msgs)) {
			t.Errorf("group %q got %v", g, ids(got))
		}
		stop()
	}
}

// TestForeignStream uses a stream that someone else created for a
// wildcard of subjects: polybus publishes into it and reads from it, with
// one consumer per (group, topic).
func TestForeignStream(t *testing.T) {
	c := open(t, embeddedURL(t))
	var js jetstream.JetStream
	if !c.Publisher().As(&js) {
		t.Fatal("no JetStream")
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	a, b := numbered(3, ""), numbered(4, "")
	publish(t, c, "orders.a", a...)
	publish(t, c, "orders.b", b...)
	info, err := js.Stream(ctx, "ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 7 {
		t.Fatalf("ORDERS holds %d messages, want 7", n)
	}
	sa, sb := newSink(), newSink()
	subscribe(t, c, "orders.a", sa.handle, subscriber.Group("g"), subscriber.Concurrency(1))
	subscribe(t, c, "orders.b", sb.handle, subscriber.Group("g"), subscriber.Concurrency(1))
	if got := sa.waitCount(t, 3); !slices.Equal(ids(got), ids(a)) {
		t.Errorf("orders.a got %v", ids(got))
	}
	if got := sb.waitCount(t, 4); !slices.Equal(ids(got), ids(b)) {
		t.Errorf("orders.b got %v", ids(got))
	}
	// A plain NATS client's message arrives with its headers as metadata.
	var nc *natsgo.Conn
	c.Publisher().As(&nc)
	raw := natsgo.NewMsg("orders.a")
	raw.Data = []byte("raw")
	raw.Header.Set("X-Origin", "plain client")
	if _, err := js.PublishMsg(ctx, raw); err != nil {
		t.Fatal(err)
	}
	got := sa.waitCount(t, 4)[3]
	if string(got.Payload) != "raw" || got.Metadata["X-Origin"] != "plain client" || got.ID != "ORDERS:8" || got.Time.IsZero() {
		t.Errorf("plain message: id %q payload %q metadata %v time %v", got.ID, got.Payload, got.Metadata, got.Time)
	}
}

// TestCloseAndCancel checks that Subscribe returns promptly when its
// context ends or the client closes, that calls after Close fail with
// Closed, and (TestMain's goleak) that nothing is left running.
func TestCloseAndCancel(t *testing.T) {
	ctx := context.Background()
	c, err := polybus.Open(ctx, embeddedURL(t))
	if err != nil {
		t.Fatal(err)
	}
	topic := unique("close")
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Subscriber().Subscribe(sctx, topic, func(context.Context, *message.Message) error { return nil })
	}()
	publish(t, c, topic, message.New([]byte("x")))
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Subscribe did not return after its context ended")
	}
	running := make(chan struct{}, 1)
	go func() {
		done <- c.Subscriber().Subscribe(ctx, topic, func(context.Context, *message.Message) error {
			select {
			case running <- struct{}{}:
			default:
			}
			return nil
		}, subscriber.Group("second"))
	}()
	<-running // the group's first message: Subscribe is running
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Subscribe did not return after Close")
	}
	if err := c.Publisher().Publish(ctx, topic, message.New(nil)); !errors.Is(err, message.ErrClosed) {
		t.Errorf("publish after close: %v", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Errorf("second close: %v", err)
	}
}
