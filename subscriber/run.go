package subscriber

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/polybus/polybus/message"
)

// run is one Subscribe call: a receive loop, a pool of long-lived handler
// goroutines (workers) and one acker goroutine.
//
// Invariants (the fields named are guarded by mu):
//   - slots has one slot taken per message received and not yet settled
//     (acked or nacked by the broker); Config.Prefetch slots in all.
//   - workers counts the worker goroutines, at most Config.Concurrency;
//     they are started when there is work and none is idle, and they
//     return only once the run stops. Each runs one handler call at a
//     time, so at most Concurrency calls run at once.
//   - ready holds the messages that may start, in delivery order: keyless
//     or unordered ones, and the first message of a key with nothing
//     running. A message in ready or waiting in keys holds a slot but no
//     worker.
//   - keys has an entry for every key whose message is in ready or
//     running; its queue holds that key's later messages, in delivery
//     order. The worker that finishes a message of key K runs K's next
//     one itself, so calls for one key never overlap and keep their order.
//   - every received message is settled exactly once: its settle is
//     appended to pending once, and the acker takes each pending settle
//     once.
type run struct {
	s     *Subscriber
	sub   Subscription
	topic string
	h     Handler
	cfg   Config
	// info is what handlers learn of this call through InfoFrom.
	info *Info

	slots *slots

	// handlerCtx is the handlers' context, one for the whole run: not
	// cancelled by the end of the Subscribe context, only by the drain
	// deadline.
	handlerCtx    context.Context
	cancelHandler context.CancelFunc
	workerGroup   sync.WaitGroup
	ackerDone     chan struct{}
	// ackWake holds a token when pending has settles the acker has not
	// been told of.
	ackWake chan struct{}

	mu       sync.Mutex
	work     sync.Cond // on mu: ready has a message, or stopping was set
	ready    fifo
	keys     map[string]*fifo
	freeKeys []*fifo // emptied key queues, for reuse
	workers  int
	idle     int // workers waiting on work and not yet signalled
	stopping bool
	// pending holds the settles that the acker has not taken yet;
	// notified is set while ackWake holds a token for them.
	pending  []settle
	notified bool
	// closed is set when nothing more is settled: the acker then flushes
	// what is left and returns.
	closed bool
}

// fifo is a queue of received messages.
type fifo struct {
	q    []Received
	head int
}

func (f *fifo) push(rec Received) { f.q = append(f.q, rec) }

func (f *fifo) pop() (Received, bool) {
	if f.head == len(f.q) {
		return Received{}, false
	}
	rec := f.q[f.head]
	f.q[f.head] = Received{}
	if f.head++; f.head == len(f.q) {
		f.q, f.head = f.q[:0], 0
	}
	return rec, true
}

// settle is one ack or nack for the acker.
type settle struct {
	id    any
	nack  bool
	delay time.Duration
	// done, when set, receives the outcome (at-most-once acks).
	done chan error
}

func newRun(s *Subscriber, sub Subscription, topic string, h Handler, cfg Config, parent context.Context) *run {
	hctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	info := &Info{
		Topic: topic, Group: cfg.Group, Concurrency: cfg.Concurrency, Prefetch: cfg.Prefetch,
		Ordered: !cfg.Unordered, AckMode: cfg.AckMode, stopping: make(chan struct{}),
	}
	r := &run{
		s: s, sub: sub, topic: topic, h: h, cfg: cfg, info: info,
		slots:      newSlots(cfg.Prefetch),
		handlerCtx: context.WithValue(hctx, infoKey{}, info), cancelHandler: cancel,
		ackerDone: make(chan struct{}),
		ackWake:   make(chan struct{}, 1),
		keys:      map[string]*fifo{},
	}
	r.work.L = &r.mu
	go r.acker()
	return r
}

// loop receives until stop ends or the subscription fails for good, then
// drains.
func (r *run) loop(stop context.Context) error {
	var fatal error
	backoff := 50 * time.Millisecond
receive:
	for {
		// Wait for room for at least one message, then take what is free.
		n, ok := r.slots.takeAll(stop.Done())
		if !ok {
			break receive
		}
		var start time.Time
		if r.cfg.Hook != nil {
			start = time.Now()
		}
		recs, err := r.sub.Receive(stop, n)
		r.slots.put(n - len(recs))
		if err != nil && len(recs) == 0 {
			if stop.Err() != nil {
				break receive
			}
			err = r.s.classify("receive", err)
			switch message.CodeOf(err) {
			case message.Unavailable, message.Unknown, message.ResourceExhausted:
				r.s.log.Warn("polybus: receive failed; retrying", "topic", r.topic, "group", r.cfg.Group, "backoff", backoff, "err", err)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-stop.Done():
					t.Stop()
					break receive
				}
				backoff = min(2*backoff, 5*time.Second)
				continue
			default:
				fatal = err
				break receive
			}
		}
		backoff = 50 * time.Millisecond
		if r.cfg.Hook != nil && len(recs) > 0 {
			r.cfg.Hook.Received(r.handlerCtx, r.info, recs, start)
		}
		if r.cfg.AckMode == AtMostOnce {
			recs = r.ackFirst(recs)
		}
		r.dispatch(recs)
	}
	r.drain()
	return fatal
}

// ackFirst acks recs before their handlers run (at-most-once) and returns
// those whose ack the broker confirmed. The others are not handled: they
// may be delivered again, and handling them now could handle them twice.
func (r *run) ackFirst(recs []Received) []Received {
	done := make([]chan error, len(recs))
	r.mu.Lock()
	for i, rec := range recs {
		done[i] = make(chan error, 1)
		r.pendLocked(settle{id: rec.AckID, done: done[i]})
	}
	r.mu.Unlock()
	ok := recs[:0:0]
	for i, rec := range recs {
		if err := <-done[i]; err != nil {
			r.s.log.Warn("polybus: at-most-once ack failed; message not handled", append(message.LogArgs(rec.Msg), "err", err)...)
			r.slots.put(1)
			continue
		}
		ok = append(ok, rec)
	}
	return ok
}

// dispatch queues recs for the workers, each behind the running or ready
// message of its key when per-key order is on, and wakes or starts
// workers for them.
func (r *run) dispatch(recs []Received) {
	if len(recs) == 0 {
		return
	}
	r.mu.Lock()
	added := 0
	for _, rec := range recs {
		key := rec.Msg.Key
		if !r.cfg.Unordered && key != "" {
			if q, busy := r.keys[key]; busy {
				q.push(rec)
				continue
			}
			r.keys[key] = r.newKeyQueue()
		}
		r.ready.push(rec)
		added++
	}
	// idle counts only workers not yet signalled: a second Signal for a
	// worker woken but not yet running would be lost, and a message left
	// without a worker while fewer than Concurrency run (Ordering holds
	// calls that wait for such a message).
	wake := min(added, r.idle)
	r.idle -= wake
	start := min(added-wake, r.cfg.Concurrency-r.workers)
	r.workers += start
	r.mu.Unlock()
	for range wake {
		r.work.Signal()
	}
	for range start {
		r.workerGroup.Add(1)
		go r.worker()
	}
}

func (r *run) newKeyQueue() *fifo {
	if n := len(r.freeKeys); n > 0 {
		q := r.freeKeys[n-1]
		r.freeKeys = r.freeKeys[:n-1]
		return q
	}
	return &fifo{}
}

// worker runs ready messages until the run stops and none is left.
func (r *run) worker() {
	defer r.workerGroup.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		rec, ok := r.ready.pop()
		if !ok {
			if r.stopping {
				return
			}
			// The signaller takes the worker out of idle.
			r.idle++
			r.work.Wait()
			continue
		}
		r.runKey(rec)
	}
}

// runKey handles rec and then, for an ordered key, the key's queued
// messages in order, until none is left. Called and returns with mu held.
func (r *run) runKey(rec Received) {
	key := rec.Msg.Key
	ordered := !r.cfg.Unordered && key != ""
	for {
		r.mu.Unlock()
		err := callHandler(r.handlerCtx, r.h, rec.Msg)
		r.mu.Lock()
		r.handled(rec, err)
		if !ordered {
			return
		}
		q := r.keys[key]
		next, ok := q.pop()
		if !ok {
			r.dropKey(key, q)
			return
		}
		if r.stopping && r.cfg.AckMode == AtLeastOnce {
			// Draining: the rest of this key goes back to the broker,
			// still in order, for the next subscriber.
			r.nackKey(key, q, next)
			return
		}
		rec = next
	}
}

func (r *run) dropKey(key string, q *fifo) {
	delete(r.keys, key)
	r.freeKeys = append(r.freeKeys, q)
}

// nackKey nacks first and then the rest of key's queue q, in order, and
// forgets the key. Caller holds mu.
func (r *run) nackKey(key string, q *fifo, first Received) {
	r.pendLocked(settle{id: first.AckID, nack: true})
	for {
		rec, ok := q.pop()
		if !ok {
			break
		}
		r.pendLocked(settle{id: rec.AckID, nack: true})
	}
	r.dropKey(key, q)
}

// handled settles rec after its handler returned err. Caller holds mu.
func (r *run) handled(rec Received, err error) {
	if r.cfg.AckMode == AtMostOnce {
		if err != nil {
			r.s.log.Warn("polybus: handler failed (at-most-once: message dropped)", append(message.LogArgs(rec.Msg), "err", err)...)
		}
		r.slots.put(1)
		return
	}
	if err == nil {
		r.pendLocked(settle{id: rec.AckID})
		return
	}
	delay, ok := message.RetryDelay(err)
	if !ok {
		delay = r.cfg.NackDelay
	}
	if max := r.s.caps.MaxNackDelay; max > 0 && delay > max {
		delay = max
	}
	r.pendLocked(settle{id: rec.AckID, nack: true, delay: delay})
}

// pendLocked hands st to the acker: one channel operation per batch the
// acker takes, not per settle. Caller holds mu.
func (r *run) pendLocked(st settle) {
	r.pending = append(r.pending, st)
	if !r.notified {
		r.notified = true
		select {
		case r.ackWake <- struct{}{}:
		default:
		}
	}
}

// drain runs once the receive loop has stopped: messages not yet started
// go back to the broker (at-least-once; at-most-once ones were acked and
// are handled), then it waits for the handlers until the drain deadline,
// cancels their context and waits for them to return; it then settles
// every outstanding ack and closes the subscription.
func (r *run) drain() {
	r.mu.Lock()
	r.stopping = true
	if r.cfg.AckMode == AtLeastOnce {
		for {
			rec, ok := r.ready.pop()
			if !ok {
				break
			}
			key := rec.Msg.Key
			if q, keyed := r.keys[key]; keyed && !r.cfg.Unordered && key != "" {
				r.nackKey(key, q, rec)
				continue
			}
			r.pendLocked(settle{id: rec.AckID, nack: true})
		}
	}
	r.mu.Unlock()
	r.work.Broadcast()
	close(r.info.stopping)

	done := make(chan struct{})
	go func() { r.workerGroup.Wait(); close(done) }()
	deadline, release := r.s.drainDeadline(r.cfg.DrainTimeout)
	select {
	case <-done:
	case <-deadline:
		r.cancelHandler()
		<-done
	}
	release()
	r.cancelHandler()
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	select {
	case r.ackWake <- struct{}{}:
	default:
	}
	<-r.ackerDone
	if err := r.sub.Close(); err != nil {
		r.s.log.Warn("polybus: closing subscription", "topic", r.topic, "group", r.cfg.Group, "err", err)
	}
}

// acker settles acks and nacks with the driver, in batches, from one
// goroutine. Where the broker cannot delay a nack, it holds the message
// (its slot stays taken) until the delay has passed, then nacks it. Once
// the run is closed it nacks every held message at once and returns.
func (r *run) acker() {
	defer close(r.ackerDone)
	emulate := !r.s.caps.NackDelay
	var held delayHeap
	var timer *time.Timer
	var batch, spare []settle
	f := &flusher{r: r}
	for {
		var due <-chan time.Time
		if len(held) > 0 {
			// Since Go 1.23, Reset leaves no stale tick in timer.C.
			wait := time.Until(held[0].at)
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			due = timer.C
		}
		closed := false
		select {
		case <-r.ackWake:
			r.mu.Lock()
			// Swap the buffers: workers append to the other one while
			// this batch is flushed.
			batch, r.pending, spare = r.pending, spare[:0], nil
			r.notified = false
			closed = r.closed
			r.mu.Unlock()
		case <-due:
			now := time.Now()
			for len(held) > 0 && !held[0].at.After(now) {
				st := heap.Pop(&held).(heldNack).st
				st.delay = 0
				batch = append(batch, st)
			}
		}
		if closed {
			for len(held) > 0 {
				st := heap.Pop(&held).(heldNack).st
				st.delay = 0
				batch = append(batch, st)
			}
			f.flush(batch)
			if timer != nil {
				timer.Stop()
			}
			return
		}
		if emulate {
			kept := batch[:0]
			for _, st := range batch {
				if st.nack && st.delay > 0 {
					heap.Push(&held, heldNack{at: time.Now().Add(st.delay), st: st})
					continue
				}
				kept = append(kept, st)
			}
			batch = kept
		}
		f.flush(batch)
		clear(batch)
		spare, batch = batch[:0], nil
	}
}

// flusher turns batches of settles into driver calls, reusing its buffers
// from one batch to the next. Only the acker uses it.
type flusher struct {
	r       *run
	ackIDs  []any
	ackDone []chan error
	nacks   []nackGroup
}

// nackGroup is the nacks of one delay.
type nackGroup struct {
	delay time.Duration
	ids   []any
}

// flush sends one Ack call for the acks of batch and one Nack call per
// distinct delay, then frees the messages' slots.
func (f *flusher) flush(batch []settle) {
	if len(batch) == 0 {
		return
	}
	r := f.r
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ackIDs, ackDone, nacks := f.ackIDs[:0], f.ackDone[:0], f.nacks[:0]
	for _, st := range batch {
		if !st.nack {
			ackIDs = append(ackIDs, st.id)
			if st.done != nil {
				ackDone = append(ackDone, st.done)
			}
			continue
		}
		i := 0
		for i < len(nacks) && nacks[i].delay != st.delay {
			i++
		}
		if i == len(nacks) {
			if i < cap(nacks) {
				nacks = nacks[:i+1]
				nacks[i].delay, nacks[i].ids = st.delay, nacks[i].ids[:0]
			} else {
				nacks = append(nacks, nackGroup{delay: st.delay})
			}
		}
		nacks[i].ids = append(nacks[i].ids, st.id)
	}
	if len(ackIDs) > 0 {
		err := r.sub.Ack(ctx, ackIDs)
		if err != nil {
			err = r.s.classify("ack", err)
			r.s.log.Warn("polybus: ack failed; the broker may redeliver", "topic", r.topic, "group", r.cfg.Group, "count", len(ackIDs), "err", err)
		}
		for _, d := range ackDone {
			d <- err
		}
	}
	for _, g := range nacks {
		if err := r.sub.Nack(ctx, g.ids, g.delay); err != nil {
			r.s.log.Warn("polybus: nack failed; the broker redelivers after its ack deadline", "topic", r.topic, "group", r.cfg.Group, "count", len(g.ids), "err", r.s.classify("nack", err))
		}
	}
	freed := 0
	for _, st := range batch {
		// At-most-once messages free their slot when their handler ends.
		if st.done == nil {
			freed++
		}
	}
	clear(ackIDs)
	clear(ackDone)
	for i := range nacks {
		clear(nacks[i].ids)
	}
	f.ackIDs, f.ackDone, f.nacks = ackIDs, ackDone, nacks
	r.slots.put(freed)
}

type heldNack struct {
	at time.Time
	st settle
}

// delayHeap orders held nacks by due time.
type delayHeap []heldNack

func (h delayHeap) Len() int           { return len(h) }
func (h delayHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h delayHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *delayHeap) Push(x any)        { *h = append(*h, x.(heldNack)) }
func (h *delayHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
