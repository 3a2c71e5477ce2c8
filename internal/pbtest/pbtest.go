// Package pbtest holds the helpers that polybus's own tests share: running a
// Subscribe call in the background and waiting on a condition with a
// deadline (never sleeping as synchronisation).
package pbtest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/subscriber"
)

// Wait is how long helpers wait before failing a test.
const Wait = 30 * time.Second

// Consume runs c's Subscribe in the background until the returned stop is
// called or the test ends; stop cancels it and checks that it returned nil
// within Wait.
func Consume(t testing.TB, c *polybus.Client, topic string, h subscriber.Handler, opts ...subscriber.Option) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Subscriber().Subscribe(ctx, topic, h, opts...) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Subscribe(%s) returned %v", topic, err)
				}
			case <-time.After(Wait):
				t.Errorf("Subscribe(%s) did not return %s after its context ended", topic, Wait)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// WaitFor polls cond every millisecond until it holds, failing the test
// after Wait.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", Wait, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Open opens rawURL (within 30s) with opts and closes the client when the
// test ends (within 60s), failing the test on either error.
func Open(t testing.TB, rawURL string, opts ...polybus.OpenOption) *polybus.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := polybus.Open(ctx, rawURL, opts...)
	if err != nil {
		t.Fatalf("open %s: %v", polybus.Redact(rawURL), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return c
}
