package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
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

// TestHandOverAttempts: a partition moves from subscriber A to B while A
// holds received messages that no handler saw. The broker counts them as
// deliveries when A's channel closes (x-delivery-count 1 at B); B must see
// them as attempt 1, and the one message that A's handler failed once as
// attempt 2, wherever it is handled. Every message is handled exactly once
// but that one, twice.
func TestHandOverAttempts(t *testing.T) {
	u := withQuery(brokertest.URL(t, "rabbitmq"), "partitions=2&rebalance_interval=100ms")
	ca, cb := open(t, u), open(t, u)
	topic, group := unique("handover"), unique("g")
	declare(t, ca, topic, group)
	moved := rabbitmq.PartitionQueueName(topic, group, 1)

	var holdOnce sync.Once
	holding := make(chan struct{})
	rabbitmq.SetHoldHook(func(q string) {
		if q == moved {
			holdOnce.Do(func() { close(holding) })
		}
	})
	t.Cleanup(func() { rabbitmq.SetHoldHook(nil) })

	// 40 messages of distinct keys, all in partition 1.
	const total = 40
	var msgs []*message.Message
	for i := 0; len(msgs) < total; i++ {
		k := fmt.Sprintf("key-%d", i)
		if rabbitmq.Partition(k, 2) != 1 {
			continue
		}
		m := message.New(fmt.Appendf(nil, "m%d", len(msgs)))
		m.Key = k
		msgs = append(msgs, m)
	}
	if err := ca.Publisher().Publish(context.Background(), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	failID, blockID := msgs[0].ID, msgs[1].ID

	type call struct {
		who     string
		attempt int
		count   int64 // x-delivery-count
		err     bool
	}
	var mu sync.Mutex
	calls := map[string][]call{}
	done := map[string]bool{}
	blocked := make(chan struct{})
	handler := func(who string) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			d, _ := m.Delivery()
			var raw amqp.Delivery
			m.As(&raw)
			count, _ := raw.Headers["x-delivery-count"].(int64)
			mu.Lock()
			first := len(calls[m.ID]) == 0
			fail := m.ID == failID && first
			calls[m.ID] = append(calls[m.ID], call{who, d.Attempt, count, fail})
			mu.Unlock()
			if fail {
				return errors.New("first attempt fails")
			}
			if m.ID == blockID && first {
				close(blocked)
				// Keep a message in the handler until A steps back from
				// the partition, so that A has received more than it
				// handed out.
				select {
				case <-holding:
				case <-time.After(30 * time.Second):
					t.Error("A never stepped back from partition 1")
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			mu.Lock()
			done[m.ID] = true
			mu.Unlock()
			return nil
		}
	}
	opts := []subscriber.Option{subscriber.Group(group), subscriber.Concurrency(1), subscriber.Prefetch(4), subscriber.NackDelay(0)}
	pbtest.Consume(t, ca, topic, handler("A"), opts...)
	select {
	case <-blocked:
	case <-time.After(30 * time.Second):
		t.Fatal("A never handled the second message")
	}
	pbtest.Consume(t, cb, topic, handler("B"), opts...)
	pbtest.WaitFor(t, "every message handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(done) == total
	})

	mu.Lock()
	defer mu.Unlock()
	byB, returned := 0, 0
	for _, m := range msgs {
		cs := calls[m.ID]
		want := []int{1}
		if m.ID == failID {
			want = []int{1, 2}
		}
		if len(cs) != len(want) {
			t.Errorf("%s (%s): %d handler calls %+v, want %d", m.Payload, m.ID, len(cs), cs, len(want))
			continue
		}
		for i, c := range cs {
			if c.attempt != want[i] {
				t.Errorf("%s: call %d by %s has Attempt %d (x-delivery-count %d), want %d", m.Payload, i+1, c.who, c.attempt, c.count, want[i])
			}
			if c.who == "B" {
				byB++
				if c.count > int64(want[i]-1) {
					returned++
				}
			}
		}
	}
	if byB == 0 {
		t.Fatal("B handled nothing: the partition did not move")
	}
	if returned == 0 {
		t.Errorf("no message reached B with a delivery count raised by the hand-over: nothing tested (B handled %d)", byB)
	}
	t.Logf("B handled %d messages, %d of them given back unhandled by A", byB, returned)
}
