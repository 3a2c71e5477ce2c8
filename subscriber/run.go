package subscriber

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/polybus/polybus/message"
)

// run is one Subscribe call: a receive loop, a pool of handler goroutines
// and one acker goroutine.
//
// Invariants:
//   - slots has one slot taken per message received and not yet settled
//     (acked or nacked by the broker); Config.Prefetch slots in all.
//   - workers holds one token per running handler goroutine; capacity
//     Config.Concurrency. A goroutine that handles a chain of messages of
//     one key keeps its token for the whole chain.
//   - keys has an entry for every key whose handler goroutine is running;
//     its slice holds that key's messages waiting, in delivery order.
//   - every received message is settled exactly once, through acks.
type run struct {
	s     *Subscriber
	sub   Subscription
	topic string
	h     Handler
	cfg   Config
	// info is what handlers learn of this call through InfoFrom.
	info *Info

	slots   *slots
	workers chan struct{}
	acks    chan settle

	// handlerCtx is the handlers' context: not cancelled by the end of
	// the Subscribe context, only by the drain deadline.
	handlerCtx    context.Context
	cancelHandler context.CancelFunc
	handlers      sync.WaitGroup
	ackerDone     chan struct{}

	mu       sync.Mutex
	keys     map[string][]Received
	stopping bool
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
		workers:    make(chan struct{}, cfg.Concurrency),
		acks:       make(chan settle, cfg.Prefetch),
		handlerCtx: context.WithValue(hctx, infoKey{}, info), cancelHandler: cancel,
		ackerDone: make(chan struct{}),
		keys:      map[string][]Received{},
	}
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
		if r.cfg.AckMode == AtMostOnce {
			recs = r.ackFirst(recs)
		}
		for i, rec := range recs {
			if !r.dispatch(stop, rec) {
				// Stopped while waiting for a worker: hand the rest back.
				for _, rest := range recs[i:] {
					r.settle(rest, true, 0)
				}
				break receive
			}
		}
	}
	r.drain()
	return fatal
}

// ackFirst acks recs before their handlers run (at-most-once) and returns
// those whose ack the broker confirmed. The others are not handled: they
// may be delivered again, and handling them now could handle them twice.
func (r *run) ackFirst(recs []Received) []Received {
	done := make([]chan error, len(recs))
	for i, rec := range recs {
		done[i] = make(chan error, 1)
		r.acks <- settle{id: rec.AckID, done: done[i]}
	}
	ok := recs[:0:0]
	for i, rec := range recs {
		if err := <-done[i]; err != nil {
			r.s.log.Warn("polybus: at-most-once ack failed; message not handled", "topic", r.topic, "id", rec.Msg.ID, "err", err)
			r.slots.put(1)
			continue
		}
		ok = append(ok, rec)
	}
	return ok
}

// dispatch starts a handler goroutine for rec, or queues rec behind a
// running handler of its key. It returns false, without taking rec, when
// stop ends while it waits for a free worker.
func (r *run) dispatch(stop context.Context, rec Received) bool {
	key := rec.Msg.Key
	ordered := !r.cfg.Unordered && key != ""
	if ordered {
		r.mu.Lock()
		if q, busy := r.keys[key]; busy {
			r.keys[key] = append(q, rec)
			r.mu.Unlock()
			return true
		}
		r.mu.Unlock()
	}
	if r.cfg.AckMode == AtMostOnce {
		// Already acked: handle it even when stopping, or it is lost.
		r.workers <- struct{}{}
	} else {
		select {
		case r.workers <- struct{}{}:
		case <-stop.Done():
			return false
		}
	}
	if ordered {
		r.mu.Lock()
		r.keys[key] = nil
		r.mu.Unlock()
	}
	r.handlers.Add(1)
	go r.work(key, ordered, rec)
	return true
}

// work handles rec and then, for an ordered key, the key's queued messages
// in order, until none is left.
func (r *run) work(key string, ordered bool, rec Received) {
	defer r.handlers.Done()
	defer func() { <-r.workers }()
	for {
		r.handle(rec)
		if !ordered {
			return
		}
		r.mu.Lock()
		q := r.keys[key]
		if len(q) == 0 {
			delete(r.keys, key)
			r.mu.Unlock()
			return
		}
		if r.stopping && r.cfg.AckMode == AtLeastOnce {
			// Draining: the rest of this key goes back to the broker,
			// still in order, for the next subscriber.
			delete(r.keys, key)
			r.mu.Unlock()
			for _, rest := range q {
				r.settle(rest, true, 0)
			}
			return
		}
		rec, r.keys[key] = q[0], q[1:]
		r.mu.Unlock()
	}
}

func (r *run) handle(rec Received) {
	err := callHandler(r.handlerCtx, r.h, rec.Msg)
	if r.cfg.AckMode == AtMostOnce {
		if err != nil {
			r.s.log.Warn("polybus: handler failed (at-most-once: message dropped)", "topic", r.topic, "id", rec.Msg.ID, "err", err)
		}
		r.slots.put(1)
		return
	}
	if err == nil {
		r.settle(rec, false, 0)
		return
	}
	delay, ok := message.RetryDelay(err)
	if !ok {
		delay = r.cfg.NackDelay
	}
	if max := r.s.caps.MaxNackDelay; max > 0 && delay > max {
		delay = max
	}
	r.settle(rec, true, delay)
}

func (r *run) settle(rec Received, nack bool, delay time.Duration) {
	r.acks <- settle{id: rec.AckID, nack: nack, delay: delay}
}

// drain runs once the receive loop has stopped: it waits for the handlers
// until the drain deadline, then cancels their context and waits for them
// to return; it then settles every outstanding ack and closes the
// subscription.
func (r *run) drain() {
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
	close(r.info.stopping)

	done := make(chan struct{})
	go func() { r.handlers.Wait(); close(done) }()
	deadline, release := r.s.drainDeadline(r.cfg.DrainTimeout)
	select {
	case <-done:
	case <-deadline:
		r.cancelHandler()
		<-done
	}
	release()
	r.cancelHandler()
	close(r.acks)
	<-r.ackerDone
	if err := r.sub.Close(); err != nil {
		r.s.log.Warn("polybus: closing subscription", "topic", r.topic, "group", r.cfg.Group, "err", err)
	}
}

// acker settles acks and nacks with the driver, in batches, from one
// goroutine. Where the broker cannot delay a nack, it holds the message
// (its slot stays taken) until the delay has passed, then nacks it. When
// acks is closed it nacks every held message at once and returns.
func (r *run) acker() {
	defer close(r.ackerDone)
	emulate := !r.s.caps.NackDelay
	var held delayHeap
	var timer *time.Timer
	var batch []settle
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
		select {
		case st, ok := <-r.acks:
			if !ok {
				for len(held) > 0 {
					st := heap.Pop(&held).(heldNack).st
					st.delay = 0
					batch = append(batch, st)
				}
				r.flush(batch)
				if timer != nil {
					timer.Stop()
				}
				return
			}
			batch = append(batch, st)
		gather:
			for len(batch) < 256 {
				select {
				case st, ok := <-r.acks:
					if !ok {
						// Closed: the outer select sees it next time.
						break gather
					}
					batch = append(batch, st)
				default:
					break gather
				}
			}
		case <-due:
			now := time.Now()
			for len(held) > 0 && !held[0].at.After(now) {
				st := heap.Pop(&held).(heldNack).st
				st.delay = 0
				batch = append(batch, st)
			}
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
		r.flush(batch)
		batch = batch[:0]
	}
}

// flush sends one Ack call for the acks of batch and one Nack call per
// distinct delay, then frees the messages' slots.
func (r *run) flush(batch []settle) {
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ackIDs []any
	var ackDone []chan error
	nacks := map[time.Duration][]any{}
	for _, st := range batch {
		if st.nack {
			nacks[st.delay] = append(nacks[st.delay], st.id)
		} else {
			ackIDs = append(ackIDs, st.id)
			if st.done != nil {
				ackDone = append(ackDone, st.done)
			}
		}
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
	for delay, ids := range nacks {
		if err := r.sub.Nack(ctx, ids, delay); err != nil {
			r.s.log.Warn("polybus: nack failed; the broker redelivers after its ack deadline", "topic", r.topic, "group", r.cfg.Group, "count", len(ids), "err", r.s.classify("nack", err))
		}
	}
	freed := 0
	for _, st := range batch {
		// At-most-once messages free their slot when their handler ends.
		if st.done == nil {
			freed++
		}
	}
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
