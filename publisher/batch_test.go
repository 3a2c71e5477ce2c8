package publisher

import (
	"context"
	"errors"
	"testing"
	"time"
)

// waitClosed fails the test if ch is not closed within a deadline.
func waitClosed(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not done", what)
	}
}

func TestBatchContextDeadline(t *testing.T) {
	b := newBatch(context.Background(), time.Now(), 20*time.Millisecond)
	if d, ok := b.Deadline(); !ok || time.Until(d) > 20*time.Millisecond {
		t.Fatalf("Deadline() = %v, %v", d, ok)
	}
	if err := b.Err(); err != nil {
		t.Fatalf("Err before the deadline = %v", err)
	}
	waitClosed(t, "Done at the deadline", b.Done())
	if err := b.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Err = %v, want DeadlineExceeded", err)
	}
	b.cancel() // after the end: keeps the first error
	if err := b.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Err after cancel = %v, want DeadlineExceeded", err)
	}
}

// TestBatchContextErrWithoutDone: a driver that only polls Err sees the
// deadline and the parent's end, and a Done asked for afterwards is closed.
func TestBatchContextErrWithoutDone(t *testing.T) {
	b := newBatch(context.Background(), time.Now(), time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for b.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Err never reported the deadline")
		}
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(b.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v", b.Err())
	}
	waitClosed(t, "Done after the end", b.Done())

	parent, cancel := context.WithCancel(context.Background())
	b = newBatch(parent, time.Now(), time.Minute)
	cancel()
	if err := b.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err after the parent ended = %v, want Canceled", err)
	}
}

func TestBatchContextParentAndCancel(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.WithValue(context.Background(), t, "v"))
	b := newBatch(parent, time.Now(), time.Minute)
	if b.Value(t) != "v" {
		t.Fatal("Value does not reach the parent")
	}
	done := b.Done()
	cancelParent()
	waitClosed(t, "Done when the parent ends", done)
	if err := b.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err = %v, want Canceled", err)
	}

	b = newBatch(context.Background(), time.Now(), time.Minute)
	done = b.Done()
	b.cancel()
	waitClosed(t, "Done after cancel", done)
	if err := b.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Err = %v, want Canceled", err)
	}
}

// TestBatchContextAfterFunc: context.AfterFunc and derived contexts work
// through the batch's own AfterFunc; a stopped callback never runs.
func TestBatchContextAfterFunc(t *testing.T) {
	b := newBatch(context.Background(), time.Now(), time.Minute)
	ran := make(chan struct{})
	context.AfterFunc(b, func() { close(ran) })
	stopped := make(chan struct{}, 1)
	stop := context.AfterFunc(b, func() { stopped <- struct{}{} })
	if !stop() {
		t.Fatal("stop before the end = false")
	}
	child, cancelChild := context.WithTimeout(b, time.Hour)
	defer cancelChild()
	b.cancel()
	waitClosed(t, "AfterFunc callback", ran)
	waitClosed(t, "derived context", child.Done())
	if !errors.Is(child.Err(), context.Canceled) {
		t.Fatalf("derived Err = %v", child.Err())
	}
	select {
	case <-stopped:
		t.Fatal("a stopped callback ran")
	default:
	}
	// Registered after the end: runs at once.
	late := make(chan struct{})
	if context.AfterFunc(b, func() { close(late) })() {
		t.Fatal("stop after the end = true")
	}
	waitClosed(t, "late AfterFunc", late)
}

// A batch that nothing watched is recycled fresh; a watched one is never
// recycled, so that its timer or an AfterFunc cannot reach a later batch.
func TestBatchFree(t *testing.T) {
	for range 100 {
		b := newBatch(context.Background(), time.Now(), time.Minute)
		if err := b.Err(); err != nil {
			t.Fatalf("a new batch (perhaps recycled) has Err %v", err)
		}
		if d, _ := b.Deadline(); time.Until(d) < 50*time.Second {
			t.Fatalf("a new batch's deadline is %v away, want about a minute", time.Until(d))
		}
		b.cancel()
		b.free()

		w := newBatch(context.Background(), time.Now(), time.Minute)
		done := w.Done()
		w.cancel()
		w.free()
		if w.err == nil || done == nil || w.done == nil {
			t.Fatal("a watched batch was reset by free")
		}
		waitClosed(t, "watched batch", done)
	}
}
