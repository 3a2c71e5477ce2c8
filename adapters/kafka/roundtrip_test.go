package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TestRoundTrip publishes keyed messages with metadata and receives each
// once, unchanged, with its partition and offset.
func TestRoundTrip(t *testing.T) {
	u := kafkaURL(t, "partitions=3")
	pub, sub := open(t, u), open(t, u)
	topic := unique("rt")
	var msgs []*message.Message
	for i := range 30 {
		m := message.New(fmt.Appendf(nil, "payload %d", i))
		m.Key = fmt.Sprintf("k-%d", i%5)
		m.Metadata = message.Metadata{"i": fmt.Sprint(i), "Content-Type": "text/plain"}
		msgs = append(msgs, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pub.Publisher().Publish(ctx, topic, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	var mu sync.Mutex
	got := map[string]*message.Message{}
	pbtest.Consume(t, sub, topic, func(_ context.Context, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if got[m.ID] != nil {
			t.Errorf("%s delivered twice", m.ID)
		}
		got[m.ID] = m
		return nil
	}, subscriber.Group(unique("g")))
	pbtest.WaitFor(t, "every message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == len(msgs)
	})
	mu.Lock()
	defer mu.Unlock()
	for _, m := range msgs {
		g := got[m.ID]
		if g == nil {
			t.Fatalf("%s missing", m.ID)
		}
		if g.Key != m.Key || string(g.Payload) != string(m.Payload) || g.Metadata["i"] != m.Metadata["i"] || !g.Time.Equal(m.Time) {
			t.Errorf("%s changed: %+v, want %+v", m.ID, g, m)
		}
		d, _ := g.Delivery()
		if d.Partition < 0 || d.Partition > 2 || d.Attempt != 1 || d.Topic != topic {
			t.Errorf("%s delivery facts %+v", m.ID, d)
		}
	}
}
