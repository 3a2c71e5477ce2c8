package sqs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	polysqs "github.com/polybus/polybus/adapters/sqs"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TestNativeDeadLetter: with max_receives=2, SQS itself moves a message
// whose handling fails twice to the queue of group polybus-dlq on the
// topic's dead-letter topic, where a polybus subscriber reads it intact;
// the group's other messages are handled once.
func TestNativeDeadLetter(t *testing.T) {
	c := open(t, sqsURL(t, "max_receives=2&group_refresh=100ms"))
	topic, group := unique("native"), unique("g")
	var mu sync.Mutex
	calls := map[string]int{}
	poison := &message.Message{ID: "poison-" + unique("id"), Key: "k", Payload: []byte("always fails"), Metadata: message.Metadata{"kind": "poison"}}
	good := &message.Message{ID: "good-" + unique("id"), Key: "k2", Payload: []byte("fine")}
	h := func(_ context.Context, m *message.Message) error {
		mu.Lock()
		calls[m.ID]++
		mu.Unlock()
		if m.ID == poison.ID {
			return errors.New("poison")
		}
		return nil
	}
	pbtest.Consume(t, c, topic, h, subscriber.Group(group), subscriber.NackDelay(0))
	// The group's queue exists once the subscription is open.
	pbtest.WaitFor(t, "the group's queue", func() bool {
		err := c.Publisher().Publish(t.Context(), topic, &message.Message{Payload: []byte("probe"), Metadata: message.Metadata{"probe": "1"}})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return len(calls) > 0
	})
	if err := c.Publisher().Publish(t.Context(), topic, poison, good); err != nil {
		t.Fatal(err)
	}
	dead := make(chan *message.Message, 4)
	pbtest.Consume(t, c, polysqs.DLQTopic(topic), func(_ context.Context, m *message.Message) error {
		dead <- m
		return nil
	}, subscriber.Group(polysqs.DLQGroup))
	var m *message.Message
	select {
	case m = <-dead:
	case <-time.After(30 * time.Second):
		t.Fatal("no dead letter within 30s")
	}
	if m.ID != poison.ID || string(m.Payload) != "always fails" || m.Metadata.Get("kind") != "poison" || m.Key != "k" {
		t.Errorf("dead letter %+v, want the poison message intact", m)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls[poison.ID] != 2 {
		t.Errorf("poison handled %d times, want 2 (max_receives)", calls[poison.ID])
	}
	if calls[good.ID] != 1 {
		t.Errorf("good message handled %d times, want 1", calls[good.ID])
	}
}
