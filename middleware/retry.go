package middleware

import (
	"container/list"
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// RetryMode says where Retry waits between attempts.
type RetryMode int

const (
	// InProcess calls the handler again inside the same delivery, waiting
	// with backoff in between. The message stays unacked (and its
	// subscriber slot taken) while it waits. It is the default.
	InProcess RetryMode = iota
	// Redelivery returns each transient failure as
	// message.RetryAfter(err, backoff(attempt)), so that the broker
	// redelivers the message after the delay and the handler slot is free
	// in between. The attempt number comes from the broker (see
	// RetryConfig).
	Redelivery
)

// String returns "in-process" or "redelivery".
func (m RetryMode) String() string {
	switch m {
	case InProcess:
		return "in-process"
	case Redelivery:
		return "redelivery"
	}
	return "RetryMode(" + strconv.Itoa(int(m)) + ")"
}

// NoJitter, as RetryConfig.RandomizationFactor, turns jitter off, so that
// every delay is exactly the exponential interval.
const NoJitter = -1.0

// RetryConfig configures Retry. The zero value is valid: every field
// documents its default.
type RetryConfig struct {
	// Mode is InProcess (default) or Redelivery.
	Mode RetryMode
	// MaxAttempts is the most handler calls for one message, the first
	// included; 1 turns retrying off. Default 5. In InProcess mode it
	// counts the calls of one delivery; in Redelivery mode, deliveries
	// (less those deferred, see Defer).
	MaxAttempts int
	// InitialInterval is the delay after the first failure. Default 100ms.
	InitialInterval time.Duration
	// Multiplier grows the delay after each further failure; at least 1.
	// Default 2.
	Multiplier float64
	// MaxInterval caps the (un-jittered) delay. Default 30s; at least
	// InitialInterval. It is also the redelivery delay of an exhausted
	// message (see ExhaustedError).
	MaxInterval time.Duration
	// RandomizationFactor spreads each delay uniformly over
	// [d*(1-f), d*(1+f)] so that messages failing together do not retry
	// together. Between 0 and 1; 0 means the default, 0.5; NoJitter turns
	// jitter off.
	RandomizationFactor float64
	// CounterSize bounds the table that Redelivery mode keeps of
	// messages that failed and may come back: their attempt count where
	// the broker counts none (see Retry) and their first failure time.
	// Default 10000 messages; the least recently failed is forgotten
	// first.
	CounterSize int
	// OnRetry, when set, is called before each retry with the number of
	// the attempt that failed (1 for the first call), the delay before
	// the next one and the failure. In Redelivery mode the "retry" is the
	// nack that asks for redelivery.
	OnRetry func(ctx context.Context, m *message.Message, attempt int, delay time.Duration, err error)

	// sleep waits d or until ctx ends; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
	// now is the clock for first-failure times; tests replace it.
	now func() time.Time
}

// ExhaustedError is the error of a message whose handler failed on every
// attempt that RetryConfig.MaxAttempts allows. DLQ dead-letters it with
// reason "max-attempts". It matches message.ErrPermanent with errors.Is,
// since the retry policy has given up on it; the handler's last error stays
// reachable with errors.Is and errors.As.
type ExhaustedError struct {
	// Attempts is the number of handler calls made: in InProcess mode,
	// in the last delivery; in Redelivery mode, the delivery attempt
	// less the deferred deliveries.
	Attempts int
	// Err is the handler's last error.
	Err error
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("polybus: retry: gave up after %d attempts: %v", e.Attempts, e.Err)
}

// Unwrap returns the handler's last error.
func (e *ExhaustedError) Unwrap() error { return e.Err }

// Is reports that an ExhaustedError is permanent.
func (e *ExhaustedError) Is(target error) bool { return target == message.ErrPermanent }

// Retry returns middleware that calls the handler again when it fails with
// a transient error, with exponential backoff and jitter
// (github.com/cenkalti/backoff/v5).
//
// An error that message.IsPermanent reports is never retried: it is
// returned at once. A handler that asks for a delay with message.RetryAfter
// is not retried sooner than that delay. A deferral (IsDeferred: Defer, an
// open Breaker, Ordering holding a message back) is not a failure: it is
// returned at once, untouched, to be redelivered, and not counted.
//
// When the last attempt fails, Retry returns
// message.RetryAfter(&ExhaustedError{...}, MaxInterval): DLQ, placed
// outside Retry, dead-letters it; without DLQ the message is nacked and
// comes back after MaxInterval, when each further delivery gets one more
// call (Redelivery mode) or MaxAttempts more (InProcess mode).
//
// InProcess mode waits inside the handler call. When the context ends
// during a wait, Retry returns the context's error at once; when the
// handler fails after its context ended, Retry returns that failure
// without retrying.
//
// Redelivery mode takes the attempt number from the delivery
// (message.Message.Attempt), else from the message.KeyAttempt metadata
// that an adapter or an earlier hop may have set, else from a counter per
// topic, group and message ID that Retry keeps in this process: a received
// message is the broker's copy, which the middleware cannot change for the
// next delivery. That counter is bounded (CounterSize), is dropped when the
// message succeeds or is exhausted, and is not shared between processes:
// when redeliveries of one message go to several subscriber processes, or
// the process restarts, the message can be called more than MaxAttempts
// times. Brokers that count deliveries (message.Capabilities.AttemptCount)
// have no such gap.
//
// Errors: InvalidArgument for a negative or inconsistent setting.
func Retry(cfg RetryConfig) (subscriber.Middleware, error) {
	r, err := newRetrier(cfg)
	if err != nil {
		return nil, err
	}
	if r.cfg.Mode == Redelivery {
		return r.redelivery, nil
	}
	return r.inProcess, nil
}

type retrier struct {
	cfg      RetryConfig
	jitter   float64
	counters *attemptCounters
}

func newRetrier(cfg RetryConfig) (*retrier, error) {
	const op = "middleware: retry"
	bad := func(format string, args ...any) (*retrier, error) {
		return nil, message.Errorf(message.InvalidArgument, op, format, args...)
	}
	if cfg.Mode != InProcess && cfg.Mode != Redelivery {
		return bad("unknown mode %d", int(cfg.Mode))
	}
	if cfg.MaxAttempts < 0 || cfg.InitialInterval < 0 || cfg.MaxInterval < 0 || cfg.CounterSize < 0 {
		return bad("negative setting in %+v", cfg)
	}
	if cfg.Multiplier != 0 && cfg.Multiplier < 1 {
		return bad("multiplier %v is below 1", cfg.Multiplier)
	}
	if cfg.RandomizationFactor != NoJitter && (cfg.RandomizationFactor < 0 || cfg.RandomizationFactor > 1) {
		return bad("randomization factor %v is outside [0, 1] (use NoJitter to turn jitter off)", cfg.RandomizationFactor)
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.InitialInterval == 0 {
		cfg.InitialInterval = 100 * time.Millisecond
	}
	if cfg.Multiplier == 0 {
		cfg.Multiplier = 2
	}
	if cfg.MaxInterval == 0 {
		cfg.MaxInterval = max(30*time.Second, cfg.InitialInterval)
	}
	if cfg.MaxInterval < cfg.InitialInterval {
		return bad("max interval %s is below initial interval %s", cfg.MaxInterval, cfg.InitialInterval)
	}
	if cfg.CounterSize == 0 {
		cfg.CounterSize = 10000
	}
	if cfg.sleep == nil {
		cfg.sleep = sleep
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	r := &retrier{cfg: cfg}
	switch cfg.RandomizationFactor {
	case 0:
		r.jitter = 0.5
	case NoJitter:
		r.jitter = 0
	default:
		r.jitter = cfg.RandomizationFactor
	}
	if cfg.Mode == Redelivery {
		r.counters = newAttemptCounters(cfg.CounterSize)
	}
	return r, nil
}

// backOff returns a fresh exponential backoff of r's settings.
func (r *retrier) backOff() backoff.ExponentialBackOff {
	b := backoff.ExponentialBackOff{
		InitialInterval:     r.cfg.InitialInterval,
		RandomizationFactor: r.jitter,
		Multiplier:          r.cfg.Multiplier,
		MaxInterval:         r.cfg.MaxInterval,
	}
	b.Reset()
	return b
}

// delayAfter returns the backoff after the attempt-th failure (attempt >=
// 1): the attempt-th value of the backoff sequence.
func (r *retrier) delayAfter(attempt int) time.Duration {
	b := r.backOff()
	// Step the interval attempt-1 times without drawing jitter; only the
	// value returned is randomised. Once the interval reaches MaxInterval
	// it stays there, so stepping can stop early.
	b.RandomizationFactor = 0
	for i := 1; i < attempt; i++ {
		if b.NextBackOff() >= r.cfg.MaxInterval {
			break
		}
	}
	b.RandomizationFactor = r.jitter
	return b.NextBackOff()
}

// exhausted is the error of a message whose last attempt failed.
func (r *retrier) exhausted(attempts int, err error) error {
	return message.RetryAfter(&ExhaustedError{Attempts: attempts, Err: err}, r.cfg.MaxInterval)
}

func (r *retrier) inProcess(next subscriber.Handler) subscriber.Handler {
	return func(ctx context.Context, m *message.Message) error {
		n := noteFrom(ctx)
		b := r.backOff()
		for attempt := 1; ; attempt++ {
			err := next(ctx, m)
			if err == nil {
				return nil
			}
			if ctx.Err() != nil || IsDeferred(err) {
				// Cut short by a drain or shutdown, or held back for a
				// reason outside the message: not a failure to retry.
				return err
			}
			if n != nil {
				n.attempts = attempt
				if attempt == 1 {
					n.firstFailure = r.cfg.now()
				}
			}
			if message.IsPermanent(err) {
				return err
			}
			if attempt >= r.cfg.MaxAttempts {
				return r.exhausted(attempt, err)
			}
			delay := b.NextBackOff()
			if asked, ok := message.RetryDelay(err); ok && asked > delay {
				delay = asked
			}
			if r.cfg.OnRetry != nil {
				r.cfg.OnRetry(ctx, m, attempt, delay, err)
			}
			if err := r.cfg.sleep(ctx, delay); err != nil {
				return err
			}
			if n != nil {
				n.retries++
			}
		}
	}
}

func (r *retrier) redelivery(next subscriber.Handler) subscriber.Handler {
	return func(ctx context.Context, m *message.Message) error {
		attempt, counted := brokerAttempt(m)
		// The table holds, for messages that failed or were deferred
		// before: the failure count where the broker keeps none, the
		// deferrals to subtract where it does, and the first failure
		// time. A first delivery that the broker counts has no entry, so
		// the common path (counted, first attempt, success) does not
		// touch it.
		var key string
		if !counted || attempt > 1 {
			key = counterKey(m)
			failures, deferrals := r.counters.get(key)
			if counted {
				attempt = max(attempt-deferrals, 1)
			} else {
				attempt = failures + 1
			}
		}
		err := next(ctx, m)
		if err == nil {
			if key != "" {
				r.counters.forget(key)
			}
			return nil
		}
		if ctx.Err() != nil {
			// Cut short by a drain or shutdown: not the message's failure,
			// so neither counted nor retried here.
			return err
		}
		if key == "" {
			key = counterKey(m)
		}
		if IsDeferred(err) {
			r.counters.deferred(key)
			return err
		}
		now := r.cfg.now()
		first := r.counters.firstFailure(key, now)
		if n := noteFrom(ctx); n != nil {
			n.attempts = attempt
			n.firstFailure = first
		}
		if message.IsPermanent(err) {
			r.counters.forget(key)
			return err
		}
		if attempt >= r.cfg.MaxAttempts {
			r.counters.forget(key)
			return r.exhausted(attempt, err)
		}
		delay := r.delayAfter(attempt)
		if asked, ok := message.RetryDelay(err); ok && asked > delay {
			delay = asked
		}
		r.counters.failed(key, attempt, now)
		if n := noteFrom(ctx); n != nil {
			n.retries++
		}
		if r.cfg.OnRetry != nil {
			r.cfg.OnRetry(ctx, m, attempt, delay, err)
		}
		return message.RetryAfter(err, delay)
	}
}

// brokerAttempt returns the attempt number that the delivery or the
// message.KeyAttempt metadata gives, and whether there was one.
func brokerAttempt(m *message.Message) (int, bool) {
	if a := m.Attempt(); a > 0 {
		return a, true
	}
	if s := m.Metadata.Get(message.KeyAttempt); s != "" {
		if a, err := strconv.Atoi(s); err == nil && a > 0 {
			return a, true
		}
	}
	return 0, false
}

// counterKey identifies a message within a subscription: one message is
// received once by each group of each topic.
func counterKey(m *message.Message) string {
	d, _ := m.Delivery()
	return d.Topic + "\x00" + d.Group + "\x00" + m.ID
}

// sleep waits d, or until ctx ends, when it returns ctx's error.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// attemptCounters remembers, for messages that failed or were deferred
// and may come back, how many times each has failed (for brokers that
// count no attempts), how many times it was deferred (to subtract from the
// broker's count) and when it failed first. It is a bounded LRU table: the
// least recently touched entry goes first.
type attemptCounters struct {
	mu    sync.Mutex
	size  int
	order *list.List // of *attemptEntry, most recent at the front
	byKey map[string]*list.Element
}

type attemptEntry struct {
	key       string
	failures  int
	deferrals int
	first     time.Time // zero until the first failure
}

func newAttemptCounters(size int) *attemptCounters {
	return &attemptCounters{size: size, order: list.New(), byKey: map[string]*list.Element{}}
}

// get returns the failures and deferrals recorded for key.
func (c *attemptCounters) get(key string) (failures, deferrals int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		a := e.Value.(*attemptEntry)
		return a.failures, a.deferrals
	}
	return 0, 0
}

// firstFailure returns the first failure time recorded for key, or now.
func (c *attemptCounters) firstFailure(key string, now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok && !e.Value.(*attemptEntry).first.IsZero() {
		return e.Value.(*attemptEntry).first
	}
	return now
}

// failed records that key has failed attempt times, the last at now.
func (c *attemptCounters) failed(key string, attempt int, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.touch(key)
	a.failures = attempt
	if a.first.IsZero() {
		a.first = now
	}
}

// deferred records one more deferral of key.
func (c *attemptCounters) deferred(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.touch(key).deferrals++
}

// touch returns key's entry, created if need be, as the most recent one,
// evicting the least recent beyond the size. c.mu is held.
func (c *attemptCounters) touch(key string) *attemptEntry {
	if e, ok := c.byKey[key]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*attemptEntry)
	}
	a := &attemptEntry{key: key}
	c.byKey[key] = c.order.PushFront(a)
	for c.order.Len() > c.size {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.byKey, old.Value.(*attemptEntry).key)
	}
	return a
}

// forget drops key's entry.
func (c *attemptCounters) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		c.order.Remove(e)
		delete(c.byKey, key)
	}
}

// len returns the number of entries (for tests).
func (c *attemptCounters) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
