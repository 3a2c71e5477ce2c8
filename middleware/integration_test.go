package middleware_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
)

// These tests run the middleware on the memory broker, through the portable
// subscriber, as an application does.

func openMem(t *testing.T) (*polybus.Client, *memory.Broker) {
	t.Helper()
	c, err := polybus.Open(context.Background(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	var b *memory.Broker
	if !c.Publisher().As(&b) {
		t.Fatal("memory publisher does not offer *memory.Broker")
	}
	return c, b
}

// collector gathers the messages a handler receives.
type collector struct {
	mu   sync.Mutex
	msgs []*message.Message
}

func (c *collector) handle(_ context.Context, m *message.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, m)
	return nil
}

func (c *collector) got() []*message.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

// attempts records, per message ID, the delivery attempts its handler saw.
type attempts struct {
	mu   sync.Mutex
	seen map[string][]int
}

func (a *attempts) add(m *message.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen == nil {
		a.seen = map[string][]int{}
	}
	a.seen[m.ID] = append(a.seen[m.ID], m.Attempt())
}

func (a *attempts) of(id string) []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.seen[id])
}

func msg(id string) *message.Message {
	return &message.Message{ID: id, Key: id, Payload: []byte("payload of " + id)}
}

var errDown = errors.New("downstream unavailable")

func TestMemoryPoisonMessageIsDeadLetteredAfterRedeliveries(t *testing.T) {
	c, b := openMem(t)
	chain, err := middleware.DefaultChain(middleware.ChainConfig{
		DLQ:   &middleware.DLQConfig{Publisher: c.Publisher()},
		Retry: &middleware.RetryConfig{Mode: middleware.Redelivery, MaxAttempts: 3, InitialInterval: 10 * time.Millisecond, RandomizationFactor: middleware.NoJitter},
	})
	if err != nil {
		t.Fatal(err)
	}
	var seen attempts
	handler := func(ctx context.Context, m *message.Message) error {
		seen.add(m)
		if m.ID == "poison" {
			return errDown
		}
		return nil
	}
	if err := c.Publisher().Publish(context.Background(), "orders", msg("good-1"), msg("poison"), msg("good-2")); err != nil {
		t.Fatal(err)
	}
	var dead collector
	stopDLQ := pbtest.Consume(t, c, "orders.dlq", dead.handle, subscriber.Group("ops"))
	stop := pbtest.Consume(t, c, "orders", handler, subscriber.Group("billing"), subscriber.Use(chain))

	pbtest.WaitFor(t, "the dead letter and every ack", func() bool {
		return len(dead.got()) == 1 && b.Depth("orders", "billing") == 0
	})
	stop()
	stopDLQ()

	if got, want := seen.of("poison"), []int{1, 2, 3}; !slices.Equal(got, want) {
		t.Fatalf("poison delivered at attempts %v, want %v", got, want)
	}
	for _, id := range []string{"good-1", "good-2"} {
		if got := seen.of(id); !slices.Equal(got, []int{1}) {
			t.Fatalf("%s delivered at attempts %v, want [1]", id, got)
		}
	}
	d := dead.got()[0]
	md := d.Metadata
	if d.ID != "poison" || d.Key != "poison" || string(d.Payload) != "payload of poison" ||
		md[message.KeyDLQReason] != "max-attempts" || md[message.KeyDLQAttempts] != "3" ||
		md[message.KeyDLQTopic] != "orders" || md[message.KeyDLQGroup] != "billing" ||
		md[message.KeyDLQError] != "polybus: retry: gave up after 3 attempts: downstream unavailable" {
		t.Fatalf("dead letter %s %q %q %v", d.ID, d.Key, d.Payload, md)
	}
	first, err1 := time.Parse(time.RFC3339Nano, md[message.KeyDLQFirstFailure])
	last, err2 := time.Parse(time.RFC3339Nano, md[message.KeyDLQLastFailure])
	if err1 != nil || err2 != nil {
		t.Fatalf("failure times: %v, %v", err1, err2)
	}
	// The broker honoured the backoff: 10ms, then 20ms, between failures.
	if gap := last.Sub(first); gap < 30*time.Millisecond {
		t.Fatalf("first to last failure %v, want at least 30ms of backoff", gap)
	}
	if d, _ := dead.got()[0].Delivery(); d.Topic != "orders.dlq" {
		t.Fatalf("dead letter received from %q", d.Topic)
	}
	if b.Depth("orders.dlq", "ops") != 0 {
		t.Fatal("dead letter not acked on the DLQ topic")
	}
}

func TestMemoryPanicIsDeadLetteredAtOnce(t *testing.T) {
	c, b := openMem(t)
	chain, err := middleware.DefaultChain(middleware.ChainConfig{
		DLQ:   &middleware.DLQConfig{Publisher: c.Publisher()},
		Retry: &middleware.RetryConfig{MaxAttempts: 5, InitialInterval: time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	var seen attempts
	handler := func(ctx context.Context, m *message.Message) error {
		seen.add(m)
		var nothing map[string]*int
		return errors.New(strings.Repeat("x", *nothing["x"])) // nil dereference
	}
	if err := c.Publisher().Publish(context.Background(), "payments", msg("crash")); err != nil {
		t.Fatal(err)
	}
	var dead collector
	pbtest.Consume(t, c, "payments.dlq", dead.handle)
	stop := pbtest.Consume(t, c, "payments", handler, subscriber.Use(chain))
	pbtest.WaitFor(t, "the dead letter", func() bool { return len(dead.got()) == 1 && b.Depth("payments", subscriber.DefaultGroup) == 0 })
	stop()
	if got := seen.of("crash"); !slices.Equal(got, []int{1}) {
		t.Fatalf("handler calls at attempts %v, want [1]: a panic is permanent", got)
	}
	md := dead.got()[0].Metadata
	if md[message.KeyDLQReason] != "permanent" || md[message.KeyDLQAttempts] != "1" ||
		!strings.Contains(md[message.KeyDLQError], "invalid memory address or nil pointer dereference") {
		t.Fatalf("dead letter metadata = %v", md)
	}
}

// flaky publishes through p but fails its first n calls.
type flaky struct {
	p  middleware.Publisher
	mu sync.Mutex
	n  int
}

func (f *flaky) Publish(ctx context.Context, topic string, msgs ...*message.Message) error {
	f.mu.Lock()
	fail := f.n > 0
	f.n--
	f.mu.Unlock()
	if fail {
		return message.Errorf(message.Unavailable, "publish", "dead-letter broker down")
	}
	return f.p.Publish(ctx, topic, msgs...)
}

func TestMemoryFailedDeadLetterPublishLosesNothing(t *testing.T) {
	c, b := openMem(t)
	pub := &flaky{p: c.Publisher(), n: 1}
	chain, err := middleware.DefaultChain(middleware.ChainConfig{
		DLQ:   &middleware.DLQConfig{Publisher: pub},
		Retry: &middleware.RetryConfig{Mode: middleware.Redelivery, MaxAttempts: 2, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	var seen attempts
	handler := func(ctx context.Context, m *message.Message) error {
		seen.add(m)
		return errDown
	}
	if err := c.Publisher().Publish(context.Background(), "orders", msg("poison")); err != nil {
		t.Fatal(err)
	}
	var dead collector
	pbtest.Consume(t, c, "orders.dlq", dead.handle)
	stop := pbtest.Consume(t, c, "orders", handler, subscriber.Use(chain))
	pbtest.WaitFor(t, "the dead letter", func() bool { return len(dead.got()) == 1 && b.Depth("orders", subscriber.DefaultGroup) == 0 })
	stop()
	// Attempt 2 exhausted the retries but the dead-letter publish failed:
	// the message was nacked, came back, failed once more and was then
	// dead-lettered.
	if got, want := seen.of("poison"), []int{1, 2, 3}; !slices.Equal(got, want) {
		t.Fatalf("handler calls at attempts %v, want %v", got, want)
	}
	if md := dead.got()[0].Metadata; md[message.KeyDLQAttempts] != "3" || md[message.KeyDLQReason] != "max-attempts" {
		t.Fatalf("dead letter metadata = %v", md)
	}
}

func TestMemoryCorrelationFlowsThroughHops(t *testing.T) {
	c, _ := openMem(t)
	chain, err := middleware.DefaultChain(middleware.ChainConfig{})
	if err != nil {
		t.Fatal(err)
	}
	out := middleware.Propagating(c.Publisher())
	forward := func(to string) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			return out.Publish(ctx, to, msg(m.ID+"→"+to))
		}
	}
	var end collector
	pbtest.Consume(t, c, "a", forward("b"), subscriber.Use(chain))
	pbtest.Consume(t, c, "b", forward("c"), subscriber.Use(chain))
	pbtest.Consume(t, c, "c", end.handle)
	if err := c.Publisher().Publish(context.Background(), "a", msg("start")); err != nil {
		t.Fatal(err)
	}
	pbtest.WaitFor(t, "the message at the end of the flow", func() bool { return len(end.got()) == 1 })
	m := end.got()[0]
	if m.ID != "start→b→c" || m.Metadata[message.KeyCorrelationID] != "start" || m.Metadata[message.KeyCausationID] != "start→b" {
		t.Fatalf("end of flow: %s %v, want correlation start, causation start→b", m.ID, m.Metadata)
	}
}

func TestMemoryRetryAndDLQLetOrderingDeferMessages(t *testing.T) {
	c, b := openMem(t)
	ordering, err := middleware.Ordering(middleware.OrderingConfig{RetryDelay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	pub := &countingPublisher{p: c.Publisher()}
	chain, err := middleware.DefaultChain(middleware.ChainConfig{
		DLQ:   &middleware.DLQConfig{Publisher: pub},
		Retry: &middleware.RetryConfig{MaxAttempts: 2, InitialInterval: time.Millisecond},
		Inner: []subscriber.Middleware{ordering},
	})
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*message.Message{msg("first"), msg("second"), msg("third")}
	for _, m := range msgs {
		m.Key = "order-1"
	}
	if err := middleware.NewSequencer(nil).Stamp(context.Background(), "orders", msgs...); err != nil {
		t.Fatal(err)
	}
	// Published out of order: the third first.
	for _, i := range []int{2, 0, 1} {
		if err := c.Publisher().Publish(context.Background(), "orders", msgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var handled []string
	handler := func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		handled = append(handled, m.ID)
		return nil
	}
	stop := pbtest.Consume(t, c, "orders", handler, subscriber.Use(chain))
	pbtest.WaitFor(t, "every message handled and acked", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 3 && b.Depth("orders", subscriber.DefaultGroup) == 0
	})
	stop()
	// Ordering's out-of-order nacks went to the broker untouched: not
	// retried in process (which would block the key), not exhausted, not
	// dead-lettered.
	if want := []string{"first", "second", "third"}; !slices.Equal(handled, want) {
		t.Fatalf("handled %v, want %v", handled, want)
	}
	if pub.n() != 0 {
		t.Fatalf("%d dead letters, want none", pub.n())
	}
}

// countingPublisher counts the messages it publishes through p.
type countingPublisher struct {
	p     middleware.Publisher
	mu    sync.Mutex
	count int
}

func (c *countingPublisher) Publish(ctx context.Context, topic string, msgs ...*message.Message) error {
	c.mu.Lock()
	c.count += len(msgs)
	c.mu.Unlock()
	return c.p.Publish(ctx, topic, msgs...)
}

func (c *countingPublisher) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}
