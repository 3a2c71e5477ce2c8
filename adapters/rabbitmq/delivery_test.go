package rabbitmq_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/polybus/polybus/adapters/rabbitmq"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TestUnroutable: by default a Publish that no group's queue receives
// fails with ErrNotFound; once the group is declared it succeeds; with
// allow_unroutable=true the broker drops it and Publish succeeds.
func TestUnroutable(t *testing.T) {
	u := brokertest.URL(t, "rabbitmq")
	c := open(t, u)
	topic := unique("unroutable")
	ctx := context.Background()
	msgs := []*message.Message{message.New([]byte("a")), message.New([]byte("b"))}
	if err := c.Publisher().Publish(ctx, topic, msgs...); !errors.Is(err, message.ErrNotFound) {
		t.Fatalf("publish with no group: got %v, want ErrNotFound", err)
	}
	declare(t, c, topic, "g")
	if err := c.Publisher().Publish(ctx, topic, msgs...); err != nil {
		t.Fatalf("publish after DeclareGroup: %v", err)
	}
	lax := open(t, withQuery(u, "allow_unroutable=true"))
	if err := lax.Publisher().Publish(ctx, unique("nobody"), message.New(nil)); err != nil {
		t.Fatalf("allow_unroutable: %v", err)
	}
}

// TestNackDelayAttempt: a message nacked with a 300ms delay comes back no
// sooner, unchanged, as attempt 2 (the count survives the delay queue),
// and one nacked without delay as attempt 2 then 3.
func TestNackDelayAttempt(t *testing.T) {
	c := open(t, brokertest.URL(t, "rabbitmq"))
	topic, group := unique("delay"), unique("g")
	declare(t, c, topic, group)
	type call struct {
		at      time.Time
		attempt int
		redeliv bool
		md      string
	}
	var mu sync.Mutex
	calls := map[string][]call{}
	pbtest.Consume(t, c, topic, func(_ context.Context, m *message.Message) error {
		d, _ := m.Delivery()
		mu.Lock()
		calls[m.Key] = append(calls[m.Key], call{time.Now(), d.Attempt, d.Redelivered, m.Metadata.Get("x")})
		n := len(calls[m.Key])
		mu.Unlock()
		switch {
		case m.Key == "delayed" && n == 1:
			return message.RetryAfter(errors.New("later"), 300*time.Millisecond)
		case m.Key == "plain" && n < 3:
			return errors.New("again")
		}
		return nil
	}, subscriber.Group(group), subscriber.NackDelay(0))
	a, b := message.New([]byte("a")), message.New([]byte("b"))
	a.Key, b.Key = "delayed", "plain"
	a.Metadata, b.Metadata = message.Metadata{"x": "1"}, message.Metadata{"x": "2"}
	if err := c.Publisher().Publish(context.Background(), topic, a, b); err != nil {
		t.Fatal(err)
	}
	pbtest.WaitFor(t, "both messages handled to the end", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls["delayed"]) >= 2 && len(calls["plain"]) >= 3
	})
	mu.Lock()
	defer mu.Unlock()
	d := calls["delayed"]
	if gap := d[1].at.Sub(d[0].at); gap < 300*time.Millisecond {
		t.Errorf("delayed message came back after %s, before its 300ms delay", gap)
	}
	if d[0].attempt != 1 || d[1].attempt != 2 || !d[1].redeliv || d[1].md != "1" {
		t.Errorf("delayed: calls %+v, want attempts 1, 2 (redelivered) with metadata intact", d)
	}
	p := calls["plain"]
	if p[0].attempt != 1 || p[1].attempt != 2 || p[2].attempt != 3 || p[2].md != "2" {
		t.Errorf("plain: calls %+v, want attempts 1, 2, 3", p)
	}
	if len(d) != 2 || len(p) != 3 {
		t.Errorf("handled %d and %d times, want 2 and 3", len(d), len(p))
	}
}

// TestNativeDeadLetter: with delivery_limit=2 and dead_letter_topic, a
// message that always fails is dead-lettered by the broker after its
// deliveries to the dead-letter topic's polybus-dlq group, intact.
func TestNativeDeadLetter(t *testing.T) {
	dlq := unique("dead")
	c := open(t, withQuery(brokertest.URL(t, "rabbitmq"), "delivery_limit=2&dead_letter_topic="+dlq))
	if !c.Capabilities().NativeDeadLetter {
		t.Fatal("NativeDeadLetter not declared")
	}
	topic, group := unique("dl"), unique("g")
	declare(t, c, topic, group)
	var mu sync.Mutex
	tries := 0
	pbtest.Consume(t, c, topic, func(context.Context, *message.Message) error {
		mu.Lock()
		tries++
		mu.Unlock()
		return errors.New("always fails")
	}, subscriber.Group(group), subscriber.NackDelay(0))
	dead := make(chan *message.Message, 1)
	pbtest.Consume(t, c, dlq, func(_ context.Context, m *message.Message) error {
		dead <- m
		return nil
	}, subscriber.Group(rabbitmq.DefaultDeadLetterGroup))
	m := message.New([]byte("poison"))
	m.Key, m.Metadata = "p-1", message.Metadata{"why": "test"}
	if err := c.Publisher().Publish(context.Background(), topic, m); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-dead:
		if got.ID != m.ID || string(got.Payload) != "poison" || got.Key != "p-1" || got.Metadata.Get("why") != "test" {
			t.Errorf("dead letter %+v differs from %+v", got, m)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no dead letter")
	}
	mu.Lock()
	defer mu.Unlock()
	if tries < 2 {
		t.Errorf("handled %d times before dead-lettering, want at least 2 (delivery_limit)", tries)
	}
}

// TestAs reaches the connection and a delivery.
func TestAs(t *testing.T) {
	c := open(t, brokertest.URL(t, "rabbitmq"))
	var conn *amqp.Connection
	if !c.Publisher().As(&conn) || conn == nil || conn.IsClosed() {
		t.Fatal("publisher As **amqp.Connection")
	}
	topic, group := unique("as"), unique("g")
	declare(t, c, topic, group)
	got := make(chan amqp.Delivery, 1)
	pbtest.Consume(t, c, topic, func(_ context.Context, m *message.Message) error {
		var d amqp.Delivery
		if m.As(&d) {
			got <- d
		} else {
			close(got)
		}
		return nil
	}, subscriber.Group(group))
	m := message.New([]byte("x"))
	if err := c.Publisher().Publish(context.Background(), topic, m); err != nil {
		t.Fatal(err)
	}
	select {
	case d, ok := <-got:
		if !ok || d.MessageId != m.ID || d.DeliveryMode != amqp.Persistent {
			t.Errorf("delivery %+v (ok %v)", d, ok)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery")
	}
}

// TestLayoutMismatch: a group declared in the ordered layout cannot be
// opened in the unordered one: its queues exist with other arguments,
// which is ErrInvalidArgument naming the queue.
func TestLayoutMismatch(t *testing.T) {
	u := brokertest.URL(t, "rabbitmq")
	topic, group := unique("mismatch"), unique("g")
	declare(t, open(t, withQuery(u, "ordered=false")), topic, group)
	err := rabbitmq.DeclareGroup(context.Background(), open(t, withQuery(u, "ordered=false&queue_type=classic")), topic, group)
	if !errors.Is(err, message.ErrInvalidArgument) {
		t.Fatalf("got %v, want ErrInvalidArgument", err)
	}
}
