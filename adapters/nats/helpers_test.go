package nats_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// subscribe runs Subscribe in the background until the returned stop is
// called (or the test ends), and then checks that it returned nil.
func subscribe(t testing.TB, c *polybus.Client, topic string, h subscriber.Handler, opts ...subscriber.Option) (stop func()) {
	t.Helper()
	return pbtest.Consume(t, c, topic, h, opts...)
}

// sink records handled messages.
type sink struct {
	mu   sync.Mutex
	msgs []*message.Message
	ch   chan struct{}
}

func newSink() *sink { return &sink{ch: make(chan struct{}, 1)} }

func (s *sink) handle(_ context.Context, m *message.Message) error {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
	default:
	}
	return nil
}

func (s *sink) all() []*message.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*message.Message(nil), s.msgs...)
}

// waitFor waits until cond holds for the recorded messages, or fails the
// test after timeout.
func (s *sink) waitFor(t testing.TB, timeout time.Duration, what string, cond func([]*message.Message) bool) []*message.Message {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		got := s.all()
		if cond(got) {
			return got
		}
		select {
		case <-s.ch:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s; have %d messages", timeout, what, len(got))
			return nil
		}
	}
}

// waitCount waits for n messages.
func (s *sink) waitCount(t testing.TB, n int) []*message.Message {
	t.Helper()
	return s.waitFor(t, 30*time.Second, "messages", func(m []*message.Message) bool { return len(m) >= n })
}

func publish(t testing.TB, c *polybus.Client, topic string, msgs ...*message.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Publisher().Publish(ctx, topic, msgs...); err != nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
}

// ids returns the IDs of msgs in order.
func ids(msgs []*message.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// numbered returns n messages with payloads "0".."n-1" and the given key.
func numbered(n int, key string) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.New([]byte(itoa(i)))
		msgs[i].Key = key
	}
	return msgs
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{digits[i%10]}, b...)
	}
	return string(b)
}
