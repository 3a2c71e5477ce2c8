package middleware

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/polybus/polybus/message"
)

// TestMain checks that no test of the package leaks a goroutine. It is the
// package's only TestMain: tests of other files in this package rely on it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// received returns a message with delivery facts, as an adapter hands it
// to a handler.
func received(id, topic, group string, attempt int) *message.Message {
	m := &message.Message{ID: id, Key: "k-" + id, Payload: []byte("payload " + id), Time: time.Unix(1700000000, 0)}
	return message.Received(m, message.Delivery{Topic: topic, Group: group, Attempt: attempt, Redelivered: attempt > 1}, nil)
}

// fakeClock is a clock whose time moves only when told: sleep records its
// delay and advances the time by it, so backoff is measured exactly and
// tests never wait.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.t = c.t.Add(d)
	return nil
}

func (c *fakeClock) slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// published is one Publish call that a fakePublisher received.
type published struct {
	topic string
	msgs  []*message.Message
}

// fakePublisher records publishes and fails the first failFirst of them.
type fakePublisher struct {
	mu        sync.Mutex
	calls     []published
	failFirst int
	err       error
}

var errPublish = errors.New("dead-letter broker down")

func (p *fakePublisher) Publish(ctx context.Context, topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.calls) < p.failFirst {
		p.calls = append(p.calls, published{topic, nil})
		return p.err
	}
	p.calls = append(p.calls, published{topic, msgs})
	return nil
}

func (p *fakePublisher) got() []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]published(nil), p.calls...)
}

// wantInvalid checks that err is an InvalidArgument error.
func wantInvalid(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, message.ErrInvalidArgument) {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
}

// eventually waits for cond, polling, until a deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
