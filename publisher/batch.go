package publisher

import (
	"context"
	"sync"
	"time"
)

// batch is the calls taken together into one driver call, and that call's
// context: it ends at the send deadline (SendTimeout), when the Publisher's
// send context ends (Close gave up), or when cancel is called (every caller
// of the batch gave up, or the driver call returned).
//
// It is a context of its own, rather than context.WithTimeout, so that a
// driver call that never asks for Done (the memory adapter, with room to
// append) costs no timer, no channel and no registration with the parent:
// they are made on the first Done or AfterFunc.
type batch struct {
	parent   context.Context
	deadline time.Time

	// waiting is how many callers of the batch still wait (Publisher.mu).
	waiting int

	mu         sync.Mutex
	err        error
	done       chan struct{}
	timer      *time.Timer // fires at the deadline; nil until watched
	stopParent func() bool // the parent's AfterFunc; nil until watched
	funcs      []func()    // AfterFunc callbacks not yet run
}

// batchPool recycles batches that no one watched (see free).
var batchPool = sync.Pool{New: func() any { return new(batch) }}

// newBatch returns a batch whose deadline is timeout after now.
func newBatch(parent context.Context, now time.Time, timeout time.Duration) *batch {
	b := batchPool.Get().(*batch)
	b.parent, b.deadline = parent, now.Add(timeout)
	return b
}

// free recycles b once its driver call has returned and every caller has
// its outcome, if nothing ever watched it: with no done channel there is
// no timer, no registration with the parent and no AfterFunc that could
// still reach b. (Drivers keep no context past SendBatch: see Driver.)
func (b *batch) free() {
	b.mu.Lock()
	watched := b.done != nil
	b.mu.Unlock()
	if !watched {
		*b = batch{}
		batchPool.Put(b)
	}
}

func (b *batch) Deadline() (time.Time, bool) { return b.deadline, true }
func (b *batch) Value(key any) any           { return b.parent.Value(key) }

func (b *batch) Done() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.watchLocked()
	return b.done
}

func (b *batch) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		// Nothing may watch yet: look at the clock and the parent.
		if err := b.parent.Err(); err != nil {
			b.endLocked(err)
		} else if !time.Now().Before(b.deadline) {
			b.endLocked(context.DeadlineExceeded)
		}
	}
	return b.err
}

// AfterFunc lets context.AfterFunc and the contexts derived from b register
// with b directly, instead of a goroutine each.
func (b *batch) AfterFunc(f func()) (stop func() bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.watchLocked()
	if b.err != nil {
		go f()
		return func() bool { return false }
	}
	b.funcs = append(b.funcs, f)
	i := len(b.funcs) - 1
	return func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.err != nil || b.funcs[i] == nil {
			return false
		}
		b.funcs[i] = nil
		return true
	}
}

// cancel ends b with context.Canceled (if it has not ended already) and
// releases its timer.
func (b *batch) cancel() {
	b.mu.Lock()
	b.endLocked(context.Canceled)
	b.mu.Unlock()
}

// watchLocked makes the done channel and starts watching the deadline and
// the parent, once.
func (b *batch) watchLocked() {
	if b.done != nil {
		return
	}
	b.done = make(chan struct{})
	if b.err != nil {
		close(b.done)
		return
	}
	if err := b.parent.Err(); err != nil {
		b.endLocked(err)
		return
	}
	left := time.Until(b.deadline)
	if left <= 0 {
		b.endLocked(context.DeadlineExceeded)
		return
	}
	b.timer = time.AfterFunc(left, func() { b.end(context.DeadlineExceeded) })
	b.stopParent = context.AfterFunc(b.parent, func() { b.end(b.parent.Err()) })
}

func (b *batch) end(err error) {
	b.mu.Lock()
	b.endLocked(err)
	b.mu.Unlock()
}

func (b *batch) endLocked(err error) {
	if b.err != nil {
		return
	}
	b.err = err
	if b.done != nil {
		close(b.done)
	}
	if b.timer != nil {
		b.timer.Stop()
		b.stopParent()
	}
	for _, f := range b.funcs {
		if f != nil {
			go f()
		}
	}
	b.funcs = nil
}
