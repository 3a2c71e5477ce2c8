package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/goleak"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// testCloseAndCancel: Close is idempotent; Publish and Subscribe after
// Close fail with ErrClosed; Subscribe returns promptly once its context
// ends; Close waits for an in-flight handler (without cancelling it while
// its deadline has not passed); and once every client is closed no
// goroutine is left that was not running before the test opened its first
// client.
func testCloseAndCancel(f *fixture) {
	// Anything the harness starts on first use (an embedded server) runs
	// before the baseline is taken.
	f.closeClient(f.client())
	var baseline goleak.Option
	if !f.s.opts.NoLeakCheck {
		baseline = goleak.IgnoreCurrent()
	}
	topic := f.topic()

	// Close is idempotent; Publish and Subscribe after Close fail.
	c := f.client()
	// A broker that cannot retain may refuse a topic no group reads yet
	// (message.ErrNotFound, RabbitMQ's mandatory publish): the call still
	// went through the client, which is what this test needs.
	if err := c.Publisher().Publish(f.ctx, topic, newMsg("", []byte("before close"), nil)); err != nil &&
		!(errors.Is(err, message.ErrNotFound) && !f.caps.Retained) {
		f.Fatalf("publish: %v", err)
	}
	err1 := closeWithin(c)
	err2 := closeWithin(c)
	if err1 != nil {
		f.Errorf("Close: %v", err1)
	}
	if !errors.Is(err2, err1) && err2 != err1 {
		f.Errorf("second Close returned %v, want the first call's result %v", err2, err1)
	}
	if err := c.Publisher().Publish(f.ctx, topic, newMsg("", []byte("after close"), nil)); !errors.Is(err, message.ErrClosed) {
		f.Errorf("Publish after Close: got %v, want message.ErrClosed", err)
	}
	subErr := make(chan error, 1)
	go func() {
		subErr <- c.Subscriber().Subscribe(f.ctx, topic, func(context.Context, *message.Message) error { return nil })
	}()
	select {
	case err := <-subErr:
		if !errors.Is(err, message.ErrClosed) {
			f.Errorf("Subscribe after Close: got %v, want message.ErrClosed", err)
		}
	case <-time.After(promptly):
		f.Fatalf("Subscribe after Close did not return within %s", promptly)
	}

	f.checkSubscribeReturnsPromptly()
	f.checkCloseWaitsForHandlers()

	if f.s.opts.NoLeakCheck {
		return
	}
	opts := []goleak.Option{
		baseline,
		// Tests of the suite waiting for this one to end (stress runs).
		goleak.IgnoreAnyFunction("github.com/polybus/polybus/conformance.(*suite).runOne"),
		goleak.IgnoreAnyFunction("github.com/polybus/polybus/conformance.(*suite).runRT"),
	}
	if gf, ok := f.s.h.(GoroutineFilter); ok {
		opts = append(opts, gf.IgnoreGoroutines()...)
	}
	if err := goleak.Find(opts...); err != nil {
		f.Errorf("goroutines left running after every client was closed: %v", err)
	}
}

// closeWithin closes c with a bound on the wait.
func closeWithin(c *polybus.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Close(ctx)
}

// checkSubscribeReturnsPromptly: a running Subscribe with nothing in flight
// returns nil promptly when its context is cancelled.
func (f *fixture) checkSubscribeReturnsPromptly() {
	f.Helper()
	pub, sub := f.client(), f.client()
	topic, group := f.topic(), f.group()
	rec := newRecorder(topic, group)
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sub.Subscriber().Subscribe(ctx, topic, rec.handler(0, nil), subscriber.Group(group)) }()
	f.awaitReady(pub, topic, rec)
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			f.Errorf("Subscribe returned %v after its context was cancelled, want nil", err)
		}
	case <-time.After(promptly):
		f.Fatalf("Subscribe did not return within %s of its context being cancelled", promptly)
	}
	f.Logf("Subscribe returned %s after its context was cancelled", time.Since(start).Round(time.Millisecond))
	f.closeClient(sub)
	f.closeClient(pub)
}

// checkCloseWaitsForHandlers: Close does not return while a handler runs
// (watched for the quiet window), and returns once it finishes; the
// handler's context is not cancelled, as Close's deadline has not passed.
func (f *fixture) checkCloseWaitsForHandlers() {
	f.Helper()
	pub, sub := f.client(), f.client()
	topic, group := f.topic(), f.group()
	rec := newRecorder(topic, group)
	release := make(chan struct{})
	var finished, cancelled atomic.Bool
	h := func(ctx context.Context, _ *message.Message) error {
		rec.notify()
		select {
		case <-release:
		case <-ctx.Done():
			cancelled.Store(true)
		}
		finished.Store(true)
		return nil
	}
	r := f.subscribe(sub, topic, rec.handler(0, h), subscriber.Group(group))
	f.awaitReady(pub, topic, rec)
	m := newMsg("", []byte("in flight at Close"), nil)
	f.publish(pub, topic, m)
	if !f.awaitAll(rec, []*message.Message{m}, "message for the in-flight handler") {
		close(release)
		return
	}

	closed := make(chan error, 1)
	var closedAt atomic.Bool
	go func() {
		err := closeWithin(sub)
		closedAt.Store(finished.Load())
		closed <- err
	}()
	quiet := time.NewTimer(f.s.opts.Quiet)
	select {
	case err := <-closed:
		f.Errorf("Close returned (%v) while a handler was still running", err)
	case <-quiet.C:
	}
	quiet.Stop()
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			f.Errorf("Close: %v", err)
		}
	case <-time.After(30 * time.Second):
		f.Fatalf("Close did not return within 30s of its in-flight handler finishing")
	}
	if !closedAt.Load() {
		f.Errorf("Close returned before its in-flight handler finished")
	}
	if cancelled.Load() {
		f.Errorf("Close cancelled an in-flight handler's context before its own deadline")
	}
	select {
	case <-r.done:
	case <-time.After(promptly):
		f.Errorf("Subscribe did not return within %s of Close returning", promptly)
	}
	f.closeClient(pub)
}

// testBrokerRestart: publishers and a subscriber keep going across a
// restart of the broker. Every message whose Publish returned nil is
// delivered at least once; duplicates are counted (metric "duplicates").
// Publish calls that fail are retried, with the same message ID, until they
// succeed.
func testBrokerRestart(f *fixture) {
	pub := f.client()
	rs, ok := f.s.h.(Restarter)
	if !ok {
		f.Skipf("the harness does not implement conformance.Restarter")
	}
	f.require(f.caps.Persistent, "Persistent (messages survive a broker restart)")
	topic, group := f.topic(), f.group()
	rec := newRecorder(topic, group)
	f.subscribe(f.client(), topic, rec.handler(0, nil), subscriber.Group(group))
	f.awaitReady(pub, topic, rec)

	const writers, phase = 2, 200
	var mu sync.Mutex
	var published []*message.Message
	var failures atomic.Int64
	pubCtx, stopPub := context.WithCancel(f.ctx)
	defer stopPub()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; pubCtx.Err() == nil; i++ {
				m := newMsg(fmt.Sprintf("r%d-%d", w, i%8), fmt.Appendf(nil, "restart %d/%d", w, i), nil)
				if publishRetrying(pubCtx, pub, topic, m, &failures) {
					mu.Lock()
					published = append(published, m)
					mu.Unlock()
					rec.notify()
				}
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(published)
	}
	if !rec.await(f.ctx, func() bool { return count() >= phase }) {
		f.Fatalf("published %d messages before the restart, want %d before the deadline", count(), phase)
	}
	start := time.Now()
	if err := rs.Restart(f.ctx); err != nil {
		stopPub()
		wg.Wait()
		f.Fatalf("restart the broker: %v", err)
	}
	f.metric("restart_ms", time.Since(start).Milliseconds())
	before := count()
	if !rec.await(f.ctx, func() bool { return count() >= before+phase }) {
		f.Errorf("published %d messages after the restart, want %d before the deadline", count()-before, phase)
	}
	stopPub()
	wg.Wait()

	mu.Lock()
	want := published
	mu.Unlock()
	f.awaitAll(rec, want, "messages published across a restart")
	f.observeQuiet()
	f.metric("published", int64(len(want)))
	f.metric("publish_failures", failures.Load())
	f.metric("duplicates", int64(rec.duplicates()))
	for _, m := range want {
		for _, d := range rec.deliveries(m.ID) {
			if diff := diffMessage(m, d.msg); diff != "" {
				f.Errorf("%s delivered changed: %s", m.ID, diff)
				return
			}
		}
	}
}

// publishRetrying publishes m until a call returns nil or ctx ends, each
// call bounded by 5s, backing off 50ms after a failure. It reports whether
// a call returned nil.
func publishRetrying(ctx context.Context, c *polybus.Client, topic string, m *message.Message, failures *atomic.Int64) bool {
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := c.Publisher().Publish(cctx, topic, m)
		cancel()
		if err == nil {
			return true
		}
		failures.Add(1)
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	return false
}
