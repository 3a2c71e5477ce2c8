package publisher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/polybus/polybus/message"
)

// Options configures a Publisher. The zero value is valid: every field
// documents its default.
type Options struct {
	// MaxBatch is the number of messages that concurrent Publish calls to
	// one topic are gathered into before the driver is called. A single
	// call's messages are never split across concurrent batches, so one
	// call with more messages makes a larger batch. Default 100.
	MaxBatch int
	// MaxInflight is how many batches per topic may be with the driver at
	// once. Default 4. 1 sends one batch at a time per topic.
	MaxInflight int
	// SendTimeout bounds one driver call; a Publish call's own context
	// bounds its wait. Default 30s.
	SendTimeout time.Duration
	// Hook, when set, observes every Publish call (see Hook). Default
	// nil: nothing observes, at the cost of one branch per call.
	Hook Hook
}

func (o *Options) fill() error {
	if o.MaxBatch < 0 || o.MaxInflight < 0 || o.SendTimeout < 0 {
		return message.Errorf(message.InvalidArgument, "publisher: new", "negative option in %+v", *o)
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 100
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = 4
	}
	if o.SendTimeout == 0 {
		o.SendTimeout = 30 * time.Second
	}
	return nil
}

// Publisher publishes messages through a [Driver]. It is safe for concurrent
// use; concurrent Publish calls to one topic are batched.
type Publisher struct {
	d    Driver
	caps message.Capabilities
	opts Options

	mu      sync.Mutex
	closed  bool
	topics  map[string]*topicQueue
	senders sync.WaitGroup
	// sendCtx is cancelled when Close gives up waiting for in-flight sends.
	sendCtx    context.Context
	cancelSend context.CancelFunc
	closeOnce  sync.Once
	closeErr   error
}

// call is one Publish call waiting for its messages to be sent.
type call struct {
	msgs []*message.Message
	// batch is the batch the call was picked into, nil while it waits;
	// guarded by Publisher.mu.
	batch *batch
	// settled is set when done has been given the call's outcome; guarded
	// by Publisher.mu.
	settled bool
	done    chan error
}

// callPool recycles calls (and their done channels), so that a Publish
// allocates neither.
var callPool = sync.Pool{New: func() any { return &call{done: make(chan error, 1)} }}

func newCall(msgs []*message.Message) *call {
	c := callPool.Get().(*call)
	c.msgs = msgs
	return c
}

// free returns c to the pool. Only its caller frees it, and only once no
// one else can reach it: after receiving its outcome (every send to done
// is the last thing its sender does with c) and with no abandon of it
// started. A call withdrawn or abandoned by its caller is left to the
// garbage collector.
func (c *call) free() {
	*c = call{done: c.done}
	callPool.Put(c)
}

// maxIdleQueues is how many topics keep their queue while nothing is sent
// to them, to spare a serial publisher an allocation per call.
const maxIdleQueues = 256

type topicQueue struct {
	waiting  []*call
	inflight int
}

// New returns a Publisher over d.
func New(d Driver, opts Options) (*Publisher, error) {
	if d == nil {
		return nil, message.Errorf(message.InvalidArgument, "publisher: new", "nil driver")
	}
	if err := opts.fill(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Publisher{
		d: d, caps: d.Capabilities(), opts: opts,
		topics:  map[string]*topicQueue{},
		sendCtx: ctx, cancelSend: cancel,
	}, nil
}

// Capabilities returns the driver's declared capabilities.
func (p *Publisher) Capabilities() message.Capabilities { return p.caps }

// Publish sends msgs to topic and returns nil only when the broker has
// durably accepted every one of them. It stamps an ID (UUIDv7) and the
// current time on each message that has none.
//
// Errors: InvalidArgument for an empty topic or a nil message, TooLarge for
// a message over the broker's limit (nothing of the call is sent), Closed
// after Close. When the broker accepted only some messages, the error is a
// *PublishError naming each failed message. When ctx ends first, Publish
// returns ctx's error: if the messages were already handed to the broker,
// they may still be published.
func (p *Publisher) Publish(ctx context.Context, topic string, msgs ...*message.Message) error {
	if topic == "" {
		return message.Errorf(message.InvalidArgument, "publish", "empty topic")
	}
	if len(msgs) == 0 {
		return nil
	}
	now := time.Now()
	if p.opts.Hook != nil {
		return p.publishHooked(ctx, topic, msgs, now)
	}
	return p.publish(ctx, topic, msgs, now)
}

// publishHooked is Publish with Options.Hook set: the messages are stamped
// first, so that the hook sees their IDs and its metadata is size-checked.
func (p *Publisher) publishHooked(ctx context.Context, topic string, msgs []*message.Message, now time.Time) error {
	for i, m := range msgs {
		if m == nil {
			return message.Errorf(message.InvalidArgument, "publish", "message %d is nil", i)
		}
		if m.ID == "" {
			m.ID = message.NewID()
		}
		if m.Time.IsZero() {
			m.Time = now
		}
	}
	done := p.opts.Hook.StartPublish(ctx, topic, msgs)
	err := p.publish(ctx, topic, msgs, now)
	if done != nil {
		done(err)
	}
	return err
}

// publish checks, stamps and queues msgs, and waits for their outcome.
func (p *Publisher) publish(ctx context.Context, topic string, msgs []*message.Message, now time.Time) error {
	for i, m := range msgs {
		if m == nil {
			return message.Errorf(message.InvalidArgument, "publish", "message %d is nil", i)
		}
		if max := p.caps.MaxMessageSize; max > 0 && m.Size() > max {
			return message.Errorf(message.TooLarge, "publish",
				"message %d (id %q) is %d bytes; %s accepts at most %d", i, m.ID, m.Size(), p.caps.Name, max)
		}
		for k := range m.Metadata {
			if k == "" {
				return message.Errorf(message.InvalidArgument, "publish", "message %d has an empty metadata key", i)
			}
		}
		if m.ID == "" {
			m.ID = message.NewID()
		}
		if m.Time.IsZero() {
			m.Time = now
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	c := newCall(msgs)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.free()
		return message.Errorf(message.Closed, "publish", "publisher is closed")
	}
	q := p.topics[topic]
	if q == nil {
		q = &topicQueue{}
		p.topics[topic] = q
	}
	q.waiting = append(q.waiting, c)
	lead := q.inflight < p.opts.MaxInflight
	if lead {
		q.inflight++
		p.senders.Add(1)
	}
	p.mu.Unlock()

	if lead {
		// The caller sends batches itself until its own call is settled,
		// which saves a goroutine hand-off on the common, uncontended
		// path. If ctx ends meanwhile, abandon withdraws or cancels it.
		// A context that can never end (Done is nil) needs no watch.
		reuse := true
		if ctx.Done() != nil {
			stop := context.AfterFunc(ctx, func() { p.abandon(q, c, ctx.Err()) })
			p.send(topic, q, c, now)
			// An abandon that has started may still look at c.
			reuse = stop()
		} else {
			p.send(topic, q, c, now)
		}
		err := <-c.done
		if reuse {
			c.free()
		}
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	select {
	case err := <-c.done:
		c.free()
		return err
	case <-ctx.Done():
		p.abandon(q, c, ctx.Err())
		return ctx.Err()
	}
}

// abandon gives up on c for a caller whose context ended. A call not yet
// picked into a batch is withdrawn, so nothing of it is sent; a call whose
// batch has no other waiting caller cancels the driver call.
func (p *Publisher) abandon(q *topicQueue, c *call, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.settled {
		return
	}
	if c.batch == nil {
		for i, w := range q.waiting {
			if w == c {
				q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
				break
			}
		}
		c.settled = true
		c.done <- err
		return
	}
	if c.batch.waiting--; c.batch.waiting == 0 {
		c.batch.cancel()
	}
}

// send takes batches of waiting calls for topic and hands them to the driver.
// A sender goroutine (own == nil) runs until none is left; a caller sending
// its own call (own != nil) stops once that call is settled and hands what
// is left to a goroutine. At most MaxInflight senders run per topic.
func (p *Publisher) send(topic string, q *topicQueue, own *call, now time.Time) {
	defer p.senders.Done()
	for {
		p.mu.Lock()
		if len(q.waiting) == 0 {
			q.inflight--
			if q.inflight == 0 && len(p.topics) > maxIdleQueues {
				delete(p.topics, topic)
			}
			p.mu.Unlock()
			return
		}
		if own != nil && own.settled {
			p.senders.Add(1)
			p.mu.Unlock()
			go p.send(topic, q, nil, time.Time{})
			return
		}
		// When every caller of the batch has given up, the driver call
		// is cancelled too (abandon).
		// The first batch of a caller's own send starts at the time its
		// Publish read (a clock read saved); later ones read the clock.
		if now.IsZero() {
			now = time.Now()
		}
		b := newBatch(p.sendCtx, now, p.opts.SendTimeout)
		now = time.Time{}
		var few [4]*call // most batches of a serial publisher have one call
		calls := few[:0]
		n := 0
		for _, c := range q.waiting {
			if n > 0 && n+len(c.msgs) > p.opts.MaxBatch {
				break
			}
			c.batch = b
			calls = append(calls, c)
			n += len(c.msgs)
		}
		// Keep the queue's array for the next calls, holding no taken one.
		rest := copy(q.waiting, q.waiting[len(calls):])
		clear(q.waiting[rest:])
		q.waiting = q.waiting[:rest]
		b.waiting = len(calls)
		p.mu.Unlock()

		msgs := calls[0].msgs
		if len(calls) > 1 {
			msgs = make([]*message.Message, 0, n)
			for _, c := range calls {
				msgs = append(msgs, c.msgs...)
			}
		}
		err := p.d.SendBatch(b, topic, msgs)
		b.cancel()
		p.finish(calls, err)
		b.free()
	}
}

// finish gives each call of a batch its own outcome.
func (p *Publisher) finish(calls []*call, err error) {
	p.mu.Lock()
	for _, c := range calls {
		c.settled = true
	}
	p.mu.Unlock()
	be, partial := batchErrorOf(err, calls)
	off := 0
	for _, c := range calls {
		// The send to c.done is the last use of c: its caller may reuse
		// it at once (see free).
		n := len(c.msgs)
		switch {
		case err == nil:
			c.done <- nil
		case partial:
			var failed []Failure
			for i, m := range c.msgs {
				if e := be.Errs[off+i]; e != nil {
					failed = append(failed, Failure{Index: i, ID: m.ID, Err: p.classify(e)})
				}
			}
			if failed == nil {
				c.done <- nil
			} else {
				c.done <- &PublishError{Total: len(c.msgs), Failed: failed}
			}
		default:
			c.done <- p.classify(err)
		}
		off += n
	}
}

// batchErrorOf returns err as a BatchError with one entry per message of
// calls, if it is one. (Apart from finish, so that a nil error costs no
// allocation for errors.As's target.)
func batchErrorOf(err error, calls []*call) (*BatchError, bool) {
	if err == nil {
		return nil, false
	}
	var be *BatchError
	if errors.As(err, &be) && len(be.Errs) == sum(calls) {
		return be, true
	}
	return nil, false
}

func sum(calls []*call) int {
	n := 0
	for _, c := range calls {
		n += len(c.msgs)
	}
	return n
}

// classify gives a driver error its code, leaving coded and context errors
// as they are.
func (p *Publisher) classify(err error) error {
	var e *message.Error
	if errors.As(err, &e) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return message.Wrap(p.d.ErrorCode(err), "publish", err)
}

// Close stops accepting publishes, waits until the calls already accepted
// have their outcome (or ctx ends, which cancels them), then closes the
// driver. Close is idempotent: later calls return the first call's result.
func (p *Publisher) Close(ctx context.Context) error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		done := make(chan struct{})
		go func() { p.senders.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			p.cancelSend()
			<-done
		}
		p.cancelSend()
		p.closeErr = p.d.Close()
	})
	return p.closeErr
}

// As reaches the driver's native client when the driver offers it through
// an As(any) bool method; see each adapter's "# As" documentation.
func (p *Publisher) As(target any) bool {
	if a, ok := p.d.(interface{ As(any) bool }); ok {
		return a.As(target)
	}
	return false
}

// Failure is one message of a Publish call that the broker did not accept.
type Failure struct {
	// Index of the message in the Publish call.
	Index int
	// ID of the message.
	ID  string
	Err error
}

// PublishError reports a Publish call of which some messages were accepted
// and others not. Only the messages in Failed need to be published again.
type PublishError struct {
	Total  int
	Failed []Failure
}

func (e *PublishError) Error() string {
	return fmt.Sprintf("polybus: publish: %d of %d messages failed; first (id %q): %v",
		len(e.Failed), e.Total, e.Failed[0].ID, e.Failed[0].Err)
}

// Unwrap returns the failures' errors, so errors.Is(err, message.ErrTooLarge)
// works on a PublishError.
func (e *PublishError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		errs[i] = f.Err
	}
	return errs
}
