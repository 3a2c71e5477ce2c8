package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TestCommitStopsAtUnfinished: on one partition, the first message's
// handler blocks while nine later ones (other keys) are acked; after the
// subscriber stops (its blocked handler cancelled), a new member of the
// group receives the first message and, as the commit could not pass it,
// the nine acked ones again. Nothing before the blocked message is lost
// and nothing after it is skipped.
func TestCommitStopsAtUnfinished(t *testing.T) {
	u := kafkaURL(t, "partitions=1")
	pub := open(t, u)
	topic, group := unique("lowwater"), unique("g")
	msgs := make([]*message.Message, 10)
	for i := range msgs {
		msgs[i] = message.New(fmt.Appendf(nil, "%d", i))
		msgs[i].Key = fmt.Sprintf("k%d", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pub.Publisher().Publish(ctx, topic, msgs...); err != nil {
		t.Fatal(err)
	}

	first := open(t, u)
	var mu sync.Mutex
	acked := map[string]bool{}
	blocked := make(chan struct{})
	stop := pbtest.Consume(t, first, topic, func(ctx context.Context, m *message.Message) error {
		if m.ID == msgs[0].ID {
			close(blocked)
			<-ctx.Done() // until the drain deadline cancels it
			return ctx.Err()
		}
		mu.Lock()
		acked[m.ID] = true
		mu.Unlock()
		return nil
	}, subscriber.Group(group), subscriber.DrainTimeout(100*time.Millisecond))
	<-blocked
	pbtest.WaitFor(t, "nine acks", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) == 9
	})
	stop()

	second := open(t, u)
	var got []string
	seen := make(chan struct{}, 1)
	pbtest.Consume(t, second, topic, func(_ context.Context, m *message.Message) error {
		mu.Lock()
		got = append(got, m.ID)
		mu.Unlock()
		select {
		case seen <- struct{}{}:
		default:
		}
		return nil
	}, subscriber.Group(group), subscriber.Concurrency(1))
	pbtest.WaitFor(t, "the unfinished message and the nine after it", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 10
	})
	mu.Lock()
	defer mu.Unlock()
	want := make([]string, len(msgs))
	for i, m := range msgs {
		want[i] = m.ID
	}
	if !slices.Equal(got, want) {
		t.Errorf("the new member received %v, want every message from the unfinished one on, in order: %v", got, want)
	}
}

// TestNackHoldsKey: with one message handed out at a time, a nacked
// message comes back after its delay, as attempt 2, before the later
// messages of its key; another key is not held up meanwhile.
func TestNackHoldsKey(t *testing.T) {
	u := kafkaURL(t, "partitions=1")
	c := open(t, u)
	topic := unique("hold")
	var msgs []*message.Message
	for i := range 3 {
		m := message.New(fmt.Appendf(nil, "a%d", i))
		m.Key = "a"
		msgs = append(msgs, m)
	}
	other := message.New([]byte("b0"))
	other.Key = "b"
	msgs = append(msgs, other)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Publisher().Publish(ctx, topic, msgs...); err != nil {
		t.Fatal(err)
	}
	const delay = 300 * time.Millisecond
	type call struct {
		payload string
		attempt int
		at      time.Time
	}
	var mu sync.Mutex
	var calls []call
	failed := false
	pbtest.Consume(t, c, topic, func(_ context.Context, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, call{string(m.Payload), m.Attempt(), time.Now()})
		if string(m.Payload) == "a0" && !failed {
			failed = true
			return message.RetryAfter(errors.New("once"), delay)
		}
		return nil
	}, subscriber.Group(unique("g")), subscriber.Concurrency(1), subscriber.Prefetch(1))
	pbtest.WaitFor(t, "five handler calls", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) >= 5
	})
	mu.Lock()
	defer mu.Unlock()
	var order []string
	for _, c := range calls {
		order = append(order, fmt.Sprintf("%s#%d", c.payload, c.attempt))
	}
	want := []string{"a0#1", "b0#1", "a0#2", "a1#1", "a2#1"}
	if !slices.Equal(order, want) {
		t.Fatalf("handler calls %v, want %v", order, want)
	}
	if d := calls[2].at.Sub(calls[0].at); d < delay {
		t.Errorf("redelivered after %s, before the nack delay of %s", d, delay)
	}
}
