package nats_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// A message nacked just before the embedded server shuts down is delivered
// promptly by the next server on the same store, not after the ack wait:
// the redelivery must be in the consumer's persisted state, not only in the
// server's memory.
func TestNackSurvivesEmbeddedRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	const topic = "handback.topic"
	c, err := polybus.Open(ctx, "embedded://"+dir+"?ack_wait=30s")
	if err != nil {
		t.Fatal(err)
	}
	m := message.New([]byte("once nacked"))
	publish(t, c, topic, m)
	nacked := make(chan struct{})
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Subscriber().Subscribe(sctx, topic, func(context.Context, *message.Message) error {
			close(nacked)
			return errors.New("not now")
		}, subscriber.Group("g"), subscriber.Concurrency(1))
	}()
	select {
	case <-nacked:
	case <-time.After(20 * time.Second):
		t.Fatal("message not delivered")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	c2, err := polybus.Open(ctx, "embedded://"+dir+"?ack_wait=30s")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close(ctx)
	s := newSink()
	subscribe(t, c2, topic, s.handle, subscriber.Group("g"))
	start := time.Now()
	got := s.waitFor(t, 10*time.Second, "redelivery after restart", func(ms []*message.Message) bool { return len(ms) >= 1 })
	if got[0].ID != m.ID {
		t.Fatalf("got %s, want %s", got[0].ID, m.ID)
	}
	t.Logf("redelivered %s after the restart", time.Since(start))
}
