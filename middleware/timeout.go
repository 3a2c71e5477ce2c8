package middleware

import (
	"context"
	"sync"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TimeoutConfig configures Timeout.
type TimeoutConfig struct {
	// Timeout bounds each handler call. Required, above 0.
	Timeout time.Duration
}

// Timeout returns middleware that gives each handler call a deadline: the
// context passed down ends Timeout after the call starts (or earlier, when
// the incoming context ends earlier). The deadline lives only in that
// context, never in the message, so each retry made by a Retry placed
// outside Timeout gets a fresh deadline.
//
// The handler must honour its context. Timeout does not run the handler on
// another goroutine and abandon it at the deadline (as net/http's
// TimeoutHandler does): an abandoned handler would still be working on a
// message that has already been nacked and perhaps redelivered to another
// handler, breaking per-key order and doubling side effects. A handler
// that returns context.DeadlineExceeded fails like any transient error and
// is retried; a handler that returns nil after its deadline has still done
// its work, and the message is acked.
//
// Cost: no timer per call. The calls of one Timeout share one timer, set
// for the oldest call still running (every call has the same timeout, so
// deadlines come in call order); a call that finishes in time only links
// and unlinks itself. Its context reports the deadline (Deadline) and
// DeadlineExceeded (Err) once it has passed. Contexts that the handler
// derives from it end at the deadline too, with context.Canceled as their
// Err and context.DeadlineExceeded as their context.Cause.
//
// Errors: InvalidArgument for a Timeout of 0 or less.
func Timeout(cfg TimeoutConfig) (subscriber.Middleware, error) {
	if cfg.Timeout <= 0 {
		return nil, message.Errorf(message.InvalidArgument, "middleware: timeout", "timeout %s is not above 0", cfg.Timeout)
	}
	w := &watchdog{d: cfg.Timeout}
	return func(next subscriber.Handler) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			c := &timeoutCtx{parent: ctx}
			w.add(c)
			err := next(c, m)
			w.remove(c)
			c.release()
			return err
		}
	}, nil
}

// watchdog ends the contexts of one Timeout's calls at their deadlines. The
// running calls are linked in deadline order (call order); one timer is
// set for the first of them.
type watchdog struct {
	d          time.Duration
	mu         sync.Mutex
	head, tail *timeoutCtx
	timer      *time.Timer
	// armed is set while the timer is set. It stays set when the call it
	// was set for returns: it then fires early, finds nothing due and is
	// set again for the new first call, so a call costs no timer
	// operation as long as calls keep coming.
	armed bool
}

func (w *watchdog) add(c *timeoutCtx) {
	w.mu.Lock()
	c.deadline = time.Now().Add(w.d)
	c.linked = true
	c.prev = w.tail
	if w.tail != nil {
		w.tail.next = c
	} else {
		w.head = c
	}
	w.tail = c
	if !w.armed {
		w.armed = true
		if w.timer == nil {
			w.timer = time.AfterFunc(w.d, w.fire)
		} else {
			w.timer.Reset(w.d)
		}
	}
	w.mu.Unlock()
}

func (w *watchdog) remove(c *timeoutCtx) {
	w.mu.Lock()
	w.unlink(c)
	w.mu.Unlock()
}

// unlink takes c out of the list, if it is in. Caller holds mu.
func (w *watchdog) unlink(c *timeoutCtx) {
	if !c.linked {
		return
	}
	c.linked = false
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		w.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		w.tail = c.prev
	}
	c.prev, c.next = nil, nil
}

// fire ends the calls whose deadline has passed and sets the timer for the
// next one.
func (w *watchdog) fire() {
	now := time.Now()
	var due []*timeoutCtx
	w.mu.Lock()
	for w.head != nil && !w.head.deadline.After(now) {
		c := w.head
		w.unlink(c)
		due = append(due, c)
	}
	if w.head != nil {
		w.timer.Reset(w.head.deadline.Sub(now))
	} else {
		w.armed = false
	}
	w.mu.Unlock()
	for _, c := range due {
		c.expire()
	}
}

// timeoutCtx is the context of one call under Timeout. Its Done channel
// is made only when asked for, as a cancelable child of the incoming
// context, so that contexts derived from it register with that child (no
// goroutine) and end with it.
type timeoutCtx struct {
	parent   context.Context
	deadline time.Time
	// prev, next and linked are guarded by the watchdog's mu.
	prev, next *timeoutCtx
	linked     bool

	mu     sync.Mutex
	err    error // DeadlineExceeded once the deadline has passed
	done   context.Context
	cancel context.CancelCauseFunc
}

func (c *timeoutCtx) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *timeoutCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done, c.cancel = context.WithCancelCause(c.parent)
		if c.err != nil {
			c.cancel(c.err)
		}
	}
	return c.done.Done()
}

func (c *timeoutCtx) Err() error {
	c.mu.Lock()
	err, done := c.err, c.done
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if done != nil {
		return done.Err()
	}
	return c.parent.Err()
}

func (c *timeoutCtx) Value(key any) any {
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if done != nil {
		return done.Value(key)
	}
	return c.parent.Value(key)
}

// expire ends c at its deadline.
func (c *timeoutCtx) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = context.DeadlineExceeded
	if c.cancel != nil {
		c.cancel(context.DeadlineExceeded)
	}
}

// release frees what c's Done channel holds once the call has returned.
func (c *timeoutCtx) release() {
	c.mu.Lock()
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel(context.Canceled)
	}
}
