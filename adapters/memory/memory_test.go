package memory_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 20 * time.Second

func open(t *testing.T) *polybus.Client { return pbtest.Open(t, "mem://") }

func publish(t *testing.T, c *polybus.Client, topic string, msgs ...*message.Message) {
	t.Helper()
	if err := c.Publisher().Publish(context.Background(), topic, msgs...); err != nil {
		t.Fatal(err)
	}
}

func TestRoundTripBinaryEmptyAndMetadata(t *testing.T) {
	c := open(t)
	payloads := [][]byte{nil, {}, {0, 0, 0}, {0xff, 0xfe, 0x00, 0x80}, []byte("héllo, 世界")}
	var sent []*message.Message
	for i, p := range payloads {
		m := message.New(p)
		m.Key = fmt.Sprintf("k%d", i)
		m.Metadata = message.Metadata{"Content-Type": "application/octet-stream", "ünï": "cödé ✓", "empty": ""}
		sent = append(sent, m)
	}
	publish(t, c, "rt", sent...)

	var mu sync.Mutex
	got := map[string]*message.Message{}
	pbtest.Consume(t, c, "rt", func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		got[m.ID] = m
		mu.Unlock()
		return nil
	})
	pbtest.WaitFor(t, "all messages", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(sent) })
	mu.Lock()
	defer mu.Unlock()
	for _, s := range sent {
		r := got[s.ID]
		if r == nil {
			t.Fatalf("message %s not received", s.ID)
		}
		if r.Key != s.Key || !bytes.Equal(r.Payload, s.Payload) || !maps.Equal(r.Metadata, s.Metadata) || !r.Time.Equal(s.Time) {
			t.Errorf("message %s changed: sent %+v, got %+v", s.ID, s, r)
		}
		d, ok := r.Delivery()
		if !ok || d.Topic != "rt" || d.Group != subscriber.DefaultGroup || d.Attempt != 1 || d.Redelivered {
			t.Errorf("delivery facts %+v, %v", d, ok)
		}
	}
}

func TestPerKeyOrderUnderConcurrency(t *testing.T) {
	const keys, perKey = 64, 1000
	c := open(t)
	// Publish interleaved across keys, from one goroutine so per-key
	// publish order is defined.
	for i := 0; i < perKey; i++ {
		batch := make([]*message.Message, keys)
		for k := range keys {
			m := message.New([]byte(fmt.Sprint(i)))
			m.Key = fmt.Sprintf("key-%02d", k)
			batch[k] = m
		}
		publish(t, c, "order", batch...)
	}

	var mu sync.Mutex
	seen := map[string][]string{}
	active := map[string]*atomic.Int32{}
	for k := range keys {
		active[fmt.Sprintf("key-%02d", k)] = new(atomic.Int32)
	}
	var overlap, total atomic.Int32
	pbtest.Consume(t, c, "order", func(ctx context.Context, m *message.Message) error {
		a := active[m.Key]
		if a.Add(1) != 1 {
			overlap.Add(1)
		}
		mu.Lock()
		seen[m.Key] = append(seen[m.Key], string(m.Payload))
		mu.Unlock()
		a.Add(-1)
		total.Add(1)
		return nil
	}, subscriber.Concurrency(16))
	pbtest.WaitFor(t, "all messages", func() bool { return total.Load() == keys*perKey })
	if n := overlap.Load(); n != 0 {
		t.Fatalf("%d handler calls overlapped another of the same key", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for key, got := range seen {
		for i, p := range got {
			if p != fmt.Sprint(i) {
				t.Fatalf("key %s: position %d holds message %s", key, i, p)
			}
		}
		if len(got) != perKey {
			t.Fatalf("key %s: %d messages, want %d", key, len(got), perKey)
		}
	}
}

func TestCompetingConsumersHandleEachOnce(t *testing.T) {
	const n = 2000
	c := open(t)
	var b *memory.Broker
	if !c.Subscriber().As(&b) {
		t.Fatal("As(**memory.Broker) failed")
	}
	var mu sync.Mutex
	count := map[string]int{}
	by := [2]int{}
	handler := func(i int) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			mu.Lock()
			count[m.ID]++
			by[i]++
			mu.Unlock()
			return nil
		}
	}
	for i := range 2 {
		pbtest.Consume(t, c, "compete", handler(i), subscriber.Group("g"), subscriber.Concurrency(4))
	}
	// Both have joined and own half the partitions each: keyless messages
	// go round-robin over the partitions, so both must work.
	pbtest.WaitFor(t, "two members owning 8 partitions each", func() bool {
		return slices.Equal(b.Members("compete", "g"), []int{8, 8})
	})
	var msgs []*message.Message
	for i := range n {
		msgs = append(msgs, message.New([]byte(fmt.Sprint(i))))
	}
	publish(t, c, "compete", msgs...)
	pbtest.WaitFor(t, "all messages", func() bool { mu.Lock(); defer mu.Unlock(); return by[0]+by[1] == n })
	mu.Lock()
	defer mu.Unlock()
	for _, m := range msgs {
		if count[m.ID] != 1 {
			t.Fatalf("message %s handled %d times", m.ID, count[m.ID])
		}
	}
	if by != [2]int{n / 2, n / 2} {
		t.Fatalf("work split %v, want %d each (round-robin over partitions split evenly)", by, n/2)
	}
}

func TestFanOutEveryGroupGetsEverything(t *testing.T) {
	const n = 300
	c := open(t)
	var ids []string
	for i := range n {
		m := message.New([]byte(fmt.Sprint(i)))
		ids = append(ids, m.ID)
		publish(t, c, "fan", m)
	}
	var mu sync.Mutex
	got := map[string][]string{}
	for _, g := range []string{"a", "b", "c"} {
		pbtest.Consume(t, c, "fan", func(ctx context.Context, m *message.Message) error {
			mu.Lock()
			got[g] = append(got[g], m.ID)
			mu.Unlock()
			return nil
		}, subscriber.Group(g), subscriber.Concurrency(1))
	}
	pbtest.WaitFor(t, "all groups", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got["a"]) == n && len(got["b"]) == n && len(got["c"]) == n
	})
	mu.Lock()
	defer mu.Unlock()
	for g, seen := range got {
		for i := range ids {
			if seen[i] != ids[i] {
				t.Fatalf("group %s: position %d is %s, want %s", g, i, seen[i], ids[i])
			}
		}
	}
}

func TestNackRedeliversWithRisingAttempt(t *testing.T) {
	const n = 50
	c := open(t)
	for i := range n {
		publish(t, c, "nack", message.New([]byte(fmt.Sprint(i))))
	}
	var mu sync.Mutex
	attempts := map[string][]int{}
	var okCount atomic.Int32
	pbtest.Consume(t, c, "nack", func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		attempts[m.ID] = append(attempts[m.ID], m.Attempt())
		first := len(attempts[m.ID]) == 1
		mu.Unlock()
		if first {
			return errors.New("fail once")
		}
		okCount.Add(1)
		return nil
	})
	pbtest.WaitFor(t, "redeliveries", func() bool { return okCount.Load() == n })
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != n {
		t.Fatalf("%d messages seen, want %d", len(attempts), n)
	}
	for id, a := range attempts {
		if len(a) != 2 || a[0] != 1 || a[1] != 2 {
			t.Fatalf("message %s attempts %v, want [1 2]", id, a)
		}
	}
}

func TestNackWithDelayIsNotRedeliveredEarly(t *testing.T) {
	const delay = 300 * time.Millisecond
	c := open(t)
	publish(t, c, "delay", message.New([]byte("x")), message.New([]byte("y")))
	var mu sync.Mutex
	times := map[string][]time.Time{}
	var done atomic.Int32
	pbtest.Consume(t, c, "delay", func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		times[m.ID] = append(times[m.ID], time.Now())
		n := len(times[m.ID])
		mu.Unlock()
		if n == 1 {
			return message.RetryAfter(errors.New("later"), delay)
		}
		done.Add(1)
		return nil
	})
	pbtest.WaitFor(t, "redeliveries", func() bool { return done.Load() == 2 })
	mu.Lock()
	defer mu.Unlock()
	for id, ts := range times {
		if len(ts) != 2 {
			t.Fatalf("message %s delivered %d times", id, len(ts))
		}
		if gap := ts[1].Sub(ts[0]); gap < delay {
			t.Fatalf("message %s redelivered after %s, before the %s delay", id, gap, delay)
		}
	}
}

func TestCloseDrainsInFlightHandlers(t *testing.T) {
	const n = 40
	ctx := context.Background()
	c, err := polybus.Open(ctx, "mem://drain-test")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range n {
		m := message.New([]byte(fmt.Sprint(i)))
		ids = append(ids, m.ID)
		publish(t, c, "drain", m)
	}
	release := make(chan struct{})
	var started, finished atomic.Int32
	var mu sync.Mutex
	handled := map[string]int{}
	subDone := make(chan error, 1)
	go func() {
		subDone <- c.Subscriber().Subscribe(ctx, "drain", func(ctx context.Context, m *message.Message) error {
			started.Add(1)
			<-release
			mu.Lock()
			handled[m.ID]++
			mu.Unlock()
			finished.Add(1)
			return nil
		}, subscriber.Group("g"), subscriber.Concurrency(4))
	}()
	pbtest.WaitFor(t, "four handlers in flight", func() bool { return started.Load() == 4 })
	closed := make(chan error, 1)
	go func() { closed <- c.Close(ctx) }()
	select {
	case <-closed:
		t.Fatal("Close returned while handlers were in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := <-subDone; err != nil {
		t.Fatal(err)
	}
	if f := finished.Load(); f != 4 {
		t.Fatalf("%d handlers finished before Close returned, want the 4 in flight", f)
	}
	if err := c.Publisher().Publish(ctx, "drain", message.New(nil)); !errors.Is(err, message.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// A new subscriber of the group gets exactly the messages not handled.
	c2, err := polybus.Open(ctx, "mem://drain-test")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close(ctx)
	pbtest.Consume(t, c2, "drain", func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		handled[m.ID]++
		mu.Unlock()
		return nil
	}, subscriber.Group("g"))
	pbtest.WaitFor(t, "the rest", func() bool { mu.Lock(); defer mu.Unlock(); return len(handled) == n })
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if handled[id] != 1 {
			t.Fatalf("message %s handled %d times", id, handled[id])
		}
	}
}

func TestAtMostOnceAcksBeforeHandling(t *testing.T) {
	b, err := memory.New(memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Client(polybus.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	publish(t, c, "amo", message.New([]byte("a")))
	inHandler := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	stop := pbtest.Consume(t, c, "amo", func(ctx context.Context, m *message.Message) error {
		if calls.Add(1) == 1 {
			close(inHandler)
			<-release
		}
		return errors.New("fails, but was already acked")
	}, subscriber.WithAckMode(subscriber.AtMostOnce), subscriber.Group("g"))
	<-inHandler
	if d := b.Depth("amo", "g"); d != 0 {
		t.Fatalf("depth %d while the handler runs: message not acked before handling", d)
	}
	close(release)
	// A marker proves the subscriber moved on without redelivering.
	publish(t, c, "amo", message.New([]byte("marker")))
	pbtest.WaitFor(t, "marker", func() bool { return calls.Load() == 2 })
	stop()
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d handler calls, want 2 (no redelivery)", n)
	}
}

func TestHandlerPanicNacksAndSubscriberGoesOn(t *testing.T) {
	c := open(t)
	publish(t, c, "panic", message.New([]byte("boom")))
	var calls atomic.Int32
	pbtest.Consume(t, c, "panic", func(ctx context.Context, m *message.Message) error {
		if calls.Add(1) == 1 {
			panic("poison")
		}
		return nil
	}, subscriber.WithConfig(subscriber.Config{}))
	pbtest.WaitFor(t, "redelivery after panic", func() bool { return calls.Load() == 2 })
}

// failingBroker returns a broker that keeps at most 10 messages per topic
// and fails a publish that finds no room, and a client of it.
func failingBroker(t *testing.T) (*memory.Broker, *polybus.Client) {
	t.Helper()
	b, err := memory.New(memory.Options{MaxMessages: 10, Full: memory.Fail})
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Client(polybus.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return b, c
}

func TestBoundedRetention(t *testing.T) {
	ctx := context.Background()
	b, c := failingBroker(t)
	// With no group, the oldest messages are trimmed: never full.
	for i := range 25 {
		publish(t, c, "free", message.New([]byte(fmt.Sprint(i))))
	}
	// A group that has not acked holds its messages: the 11th fails.
	sub, err := b.SubscriberDriver().Open(ctx, "held", subscriber.OpenConfig{Group: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for i := range 10 {
		publish(t, c, "held", message.New([]byte(fmt.Sprint(i))))
	}
	err = c.Publisher().Publish(ctx, "held", message.New([]byte("over")))
	if !errors.Is(err, message.ErrResourceExhausted) {
		t.Fatalf("11th publish: %v, want ErrResourceExhausted", err)
	}
	// Acking one makes room for exactly one more.
	recs, err := sub.Receive(ctx, 1)
	if err != nil || len(recs) != 1 {
		t.Fatalf("receive: %v %d", err, len(recs))
	}
	if err := sub.Ack(ctx, []any{recs[0].AckID}); err != nil {
		t.Fatal(err)
	}
	publish(t, c, "held", message.New([]byte("fits")))
	if err := c.Publisher().Publish(ctx, "held", message.New(nil)); !errors.Is(err, message.ErrResourceExhausted) {
		t.Fatalf("publish into a full topic again: %v", err)
	}
}

// A group that joins a topic that has been trimming (with a group acking
// everything) holds the messages retained when it joined: the earlier
// low-water mark no longer lets them go. It reads exactly those, in order.
func TestRetentionHoldsForANewGroup(t *testing.T) {
	ctx := context.Background()
	b, c := failingBroker(t)
	fast, err := b.SubscriberDriver().Open(ctx, "t", subscriber.OpenConfig{Group: "fast"})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	for i := range 25 {
		publish(t, c, "t", message.New([]byte(fmt.Sprint(i))))
		recs, err := fast.Receive(ctx, 1)
		if err != nil || len(recs) != 1 {
			t.Fatalf("receive %d: %v %d", i, err, len(recs))
		}
		if err := fast.Ack(ctx, []any{recs[0].AckID}); err != nil {
			t.Fatal(err)
		}
	}
	late, err := b.SubscriberDriver().Open(ctx, "t", subscriber.OpenConfig{Group: "late", Start: subscriber.Earliest})
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	// The topic retains 15..24 and "late" needs them all: no room.
	if err := c.Publisher().Publish(ctx, "t", message.New([]byte("over"))); !errors.Is(err, message.ErrResourceExhausted) {
		t.Fatalf("publish while the new group holds every message: %v, want ErrResourceExhausted", err)
	}
	var got []string
	for len(got) < 10 {
		recs, err := late.Receive(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			got = append(got, string(r.Msg.Payload))
		}
	}
	if want := []string{"15", "16", "17", "18", "19", "20", "21", "22", "23", "24"}; !slices.Equal(got, want) {
		t.Fatalf("late group read %v, want %v", got, want)
	}
}

func TestBlockPolicyWaitsForRoom(t *testing.T) {
	ctx := context.Background()
	c, err := polybus.Open(ctx, "mem://?max_messages=2")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var b *memory.Broker
	if !c.Subscriber().As(&b) {
		t.Fatal("As(**memory.Broker) failed")
	}
	sub, err := b.SubscriberDriver().Open(ctx, "t", subscriber.OpenConfig{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	publish(t, c, "t", message.New([]byte("1")), message.New([]byte("2")))
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := c.Publisher().Publish(short, "t", message.New([]byte("3"))); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish into a full topic: %v, want it to block until its deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Publisher().Publish(ctx, "t", message.New([]byte("3"))) }()
	recs, err := sub.Receive(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Ack(ctx, []any{recs[0].AckID}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("blocked publish did not go through after an ack made room")
	}
}

func TestPublishValidation(t *testing.T) {
	ctx := context.Background()
	c, err := polybus.Open(ctx, "mem://?max_message_size=10")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	p := c.Publisher()
	cases := []struct {
		name  string
		topic string
		msgs  []*message.Message
		want  error
	}{
		{"empty topic", "", []*message.Message{message.New(nil)}, message.ErrInvalidArgument},
		{"nil message", "t", []*message.Message{message.New(nil), nil}, message.ErrInvalidArgument},
		{"one byte over", "t", []*message.Message{message.New(make([]byte, 11))}, message.ErrTooLarge},
		{"metadata counts", "t", []*message.Message{{Payload: make([]byte, 8), Metadata: message.Metadata{"k": "vv"}}}, message.ErrTooLarge},
		{"empty metadata key", "t", []*message.Message{{Metadata: message.Metadata{"": "v"}}}, message.ErrInvalidArgument},
	}
	for _, tc := range cases {
		if err := p.Publish(ctx, tc.topic, tc.msgs...); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// At the limit goes through; nothing of the rejected calls was sent.
	atLimit := message.New(make([]byte, 10))
	if err := p.Publish(ctx, "t", atLimit); err != nil {
		t.Fatalf("message at the limit: %v", err)
	}
	var b *memory.Broker
	c.Publisher().As(&b)
	sub, _ := b.SubscriberDriver().Open(ctx, "t", subscriber.OpenConfig{Group: "check"})
	defer sub.Close()
	recs, err := sub.Receive(ctx, 10)
	if err != nil || len(recs) != 1 || recs[0].Msg.ID != atLimit.ID {
		t.Fatalf("topic holds %d messages (%v), want only the one at the limit", len(recs), err)
	}
}

func TestOpenURLErrors(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		url, mention string
	}{
		{"", "empty URL"},
		{"mem://x?bogus=1", "unknown query parameter bogus"},
		{"mem://x?max_messages=ten", "max_messages"},
		{"mem://x?full=sometimes", "full"},
		{"mem://x/some/path", "mem://NAME"},
		{"nosuch://host", `unknown scheme "nosuch"`},
		{"://nothing", "malformed URL"},
		{"mem://user:s3cret@x", "mem://NAME"},
	}
	for _, tc := range cases {
		_, err := polybus.Open(ctx, tc.url)
		if !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("%q: %v, want ErrInvalidArgument", tc.url, err)
			continue
		}
		if !bytes.Contains([]byte(err.Error()), []byte(tc.mention)) {
			t.Errorf("%q: error %q does not mention %q", tc.url, err, tc.mention)
		}
		if bytes.Contains([]byte(err.Error()), []byte("s3cret")) {
			t.Errorf("%q: error %q leaks the password", tc.url, err)
		}
	}
}
