package rabbitmq

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// subDriver is the subscriber.Driver.
type subDriver struct{ c *core }

func (d *subDriver) Open(ctx context.Context, topic string, cfg subscriber.OpenConfig) (subscriber.Subscription, error) {
	const op = "rabbitmq: subscribe"
	if err := checkTopic(op, topic); err != nil {
		return nil, err
	}
	if err := checkGroup(op, cfg.Group); err != nil {
		return nil, err
	}
	prefetch := max(cfg.Prefetch, 1)
	s := &subscription{
		c: d.c, topic: topic, group: cfg.Group, prefetch: prefetch,
		queues:  d.c.groupQueues(topic, cfg.Group),
		in:      make(chan item, prefetch),
		fatal:   make(chan error, 1),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		retries: map[string]uint64{},
		corr:    map[string]map[string]correction{},
	}
	if err := s.open(ctx); err != nil {
		return nil, err
	}
	go s.run()
	return s, nil
}

// open runs start, again after a pause while it fails with Unavailable,
// for up to ConnectTimeout in all: a busy broker can refuse a consumer of a
// quorum queue that is still starting with an internal error, which closes
// the connection.
func (s *subscription) open(ctx context.Context) error {
	deadline := time.Now().Add(s.c.cfg.ConnectTimeout)
	wait := 50 * time.Millisecond
	for {
		err := s.start(ctx)
		if err == nil || ErrorCode(err) != message.Unavailable || time.Now().Add(wait).After(deadline) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		wait = min(2*wait, time.Second)
	}
}

func (d *subDriver) Capabilities() message.Capabilities { return d.c.caps }
func (d *subDriver) ErrorCode(err error) message.Code   { return ErrorCode(err) }

// Close does nothing: the client's Close hook closes the shared connection.
func (d *subDriver) Close() error { return nil }

// As offers **amqp091.Connection.
func (d *subDriver) As(target any) bool {
	if t, ok := target.(**core); ok {
		*t = d.c
		return true
	}
	return d.c.as(target)
}

// subscription is one Subscribe call: a consumer on each of the group's
// queues (one in the unordered layout, one per partition in the ordered
// one), each on a channel of its own, so that closing a channel hands back
// exactly that queue's unsettled messages. Forwarding goroutines put the
// deliveries in one buffer that Receive reads. A manager goroutine (run)
// re-establishes topology and consumers after a loss and, in the ordered
// layout, balances the partitions.
type subscription struct {
	c        *core
	topic    string
	group    string
	prefetch int
	queues   []groupQueue

	in    chan item
	fatal chan error    // an error that ends the subscription
	wake  chan struct{} // a consumer ended: the manager looks
	stop  chan struct{} // closed by Close
	done  chan struct{} // closed when run returns

	// Owned by the manager goroutine.
	cons []*consumer
	ctl  *amqp.Channel // declares and, ordered, the members consumer
	gen  uint64

	members  int // the member count at the last rebalance
	ticks    int
	fences   uint64                          // fence pings published
	stopping atomic.Bool                     // Receive's context ended: the subscription is stopping
	recvCtx  atomic.Pointer[context.Context] // the context of the last Receive

	// corr holds, by queue and message ID, the corrections of the
	// delivery count of messages given back unhandled at a hand-over (see
	// handover.go); ledgerMu guards ledger, the channel that reads the
	// hand-over queues.
	corrMu   sync.Mutex
	corr     map[string]map[string]correction
	ledgerMu sync.Mutex
	ledger   *amqp.Channel
	ledgerG  uint64

	retryMu sync.Mutex
	retries map[string]uint64 // retry queues declared, by connection generation
}

// consumer is one queue's consumer on its own channel.
type consumer struct {
	q   groupQueue
	ch  *amqp.Channel
	del <-chan amqp.Delivery

	mu          sync.Mutex
	holding     bool // stepping back or stopped: deliveries are not returned
	outstanding int  // returned by Receive and not settled
	seen        bool // has delivered since it started: it is the active one
	hold        chan struct{}
	settled     chan struct{} // signalled when outstanding reaches 0 while holding
	fwd         chan struct{} // closed when the forwarder returns

	// unacked counts the deliveries forwarded and neither acked nor
	// nacked on ch; pending holds those not returned by Receive (the
	// ones a hand-over gives back unhandled); fence, when fenceAt > 0, is
	// closed once unacked reaches fenceAt (the broker then has no credit
	// left to send more) or the fence ping with fenceToken arrives. ledgerRead: the hand-over queue was read since
	// the consumer started.
	unacked    int
	pending    map[uint64]pendingDelivery
	fenceAt    int
	fenceToken string // the header value of the last fence ping
	fence      chan struct{}
	ledgerRead bool
}

type item struct {
	k *consumer
	d amqp.Delivery
}

// ackID is the AckID of a received message.
type ackID struct {
	k       *consumer
	d       amqp.Delivery
	attempt int
}

// start declares the topology and starts every consumer.
func (s *subscription) start(ctx context.Context) error {
	ch, gen, err := s.c.channel(ctx)
	if err != nil {
		return err
	}
	if err := s.c.declareGroup(ch, s.topic, s.group); err != nil {
		_ = ch.Close()
		return err
	}
	if !s.c.cfg.Unordered {
		// Every live subscription of the group consumes the members queue,
		// whose consumer count is then the number of members. Nothing is
		// ever routed to it.
		name := membersQueueName(s.topic, s.group)
		note(false, name)
		if _, err := ch.QueueDeclare(name, false, false, false, false, amqp.Table{"x-expires": int64(time.Hour / time.Millisecond)}); err != nil {
			_ = ch.Close()
			return declareError("rabbitmq: subscribe", "queue "+name, err)
		}
		if _, err := ch.Consume(name, "", true, false, false, false, nil); err != nil {
			_ = ch.Close()
			return coded("rabbitmq: subscribe", err)
		}
	}
	s.ctl, s.gen = ch, gen
	s.cons = make([]*consumer, len(s.queues))
	for i, q := range s.queues {
		k, err := s.consume(ctx, q)
		if err != nil {
			s.teardown()
			return err
		}
		s.cons[i] = k
	}
	if !s.c.cfg.Unordered {
		s.ping(s.queues...)
	}
	return nil
}

// ping publishes a ping to each of qs, straight to the queue: the
// subscription active on it receives it, acks it and so learns that it is
// the active one, even when the partition has nothing else to deliver. The
// broker tells AMQP 0-9-1 consumers nothing about activity. A ping is
// transient and small; other AMQP consumers of a partition queue see it
// (header polybus-amqp-ping) and should ack and drop it.
func (s *subscription) ping(qs ...groupQueue) {
	for _, q := range qs {
		_ = s.ctl.Publish("", q.name, false, false, amqp.Publishing{
			Headers: amqp.Table{hdrPing: true}, DeliveryMode: amqp.Transient,
		})
	}
}

// consume starts a consumer of q on a channel of its own.
func (s *subscription) consume(ctx context.Context, q groupQueue) (*consumer, error) {
	const op = "rabbitmq: subscribe"
	ch, _, err := s.c.channel(ctx)
	if err != nil {
		return nil, err
	}
	if err := ch.Qos(s.prefetch, 0, false); err != nil {
		_ = ch.Close()
		return nil, message.Wrap(message.Unavailable, op, err)
	}
	del, err := ch.Consume(q.name, "", false, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return nil, declareError(op, "consume "+q.name, err)
	}
	k := &consumer{
		q: q, ch: ch, del: del, hold: make(chan struct{}), settled: make(chan struct{}, 1), fwd: make(chan struct{}),
		pending: map[uint64]pendingDelivery{}, fence: make(chan struct{}),
	}
	go s.forward(k)
	return k, nil
}

// forward moves k's deliveries to the shared buffer until k's channel
// closes; held deliveries are dropped, as closing the channel returns them
// to the queue. It never blocks for good: every path that closes k's
// channel first makes k hold.
func (s *subscription) forward(k *consumer) {
	defer func() {
		close(k.fwd)
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}()
	for d := range k.del {
		if !k.forwarded(&d) {
			continue
		}
		select {
		case s.in <- item{k, d}:
		case <-k.hold:
		}
	}
}

// teardown stops every consumer and the control channel.
func (s *subscription) teardown() {
	for _, k := range s.cons {
		if k == nil {
			continue
		}
		k.stopHolding()
		_ = k.ch.Close()
	}
	for _, k := range s.cons {
		if k != nil {
			<-k.fwd
		}
	}
	s.cons = nil
	if s.ctl != nil {
		_ = s.ctl.Close()
		s.ctl = nil
	}
}

// stopHolding marks k as holding: Receive returns none of its deliveries.
// It returns how many are outstanding.
func (k *consumer) stopHolding() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.holding {
		k.holding = true
		close(k.hold)
	}
	return k.outstanding
}

// settle notes n settled messages of k, of which sent were acked or
// nacked on its channel.
func (k *consumer) settle(n, sent int) {
	k.mu.Lock()
	k.outstanding -= n
	k.unacked -= sent
	zero := k.holding && k.outstanding <= 0
	k.mu.Unlock()
	if zero {
		select {
		case k.settled <- struct{}{}:
		default:
		}
	}
}

// run is the manager: it watches the connection and the consumers,
// re-creates them after a loss with backoff, and rebalances partitions.
func (s *subscription) run() {
	defer close(s.done)
	defer s.closeLedger()
	bo := &backoff.ExponentialBackOff{
		InitialInterval:     max(s.c.cfg.ReconnectWait/10, time.Millisecond),
		RandomizationFactor: 0.2,
		Multiplier:          2,
		MaxInterval:         s.c.cfg.ReconnectWait,
	}
	bo.Reset()
	var tick <-chan time.Time
	if !s.c.cfg.Unordered {
		t := time.NewTicker(s.c.cfg.RebalanceInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		if s.cons == nil {
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-s.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			err := s.start(ctx)
			cancel()
			if err != nil {
				select {
				case <-s.stop:
					return
				default:
				}
				switch ErrorCode(err) {
				case message.PermissionDenied, message.InvalidArgument, message.Closed:
					s.fatal <- err
					return
				}
				t := time.NewTimer(bo.NextBackOff())
				select {
				case <-t.C:
				case <-s.stop:
					t.Stop()
					return
				}
				continue
			}
			bo.Reset()
		}
		gen, lost := s.c.current()
		if lost == nil || gen != s.gen {
			s.teardown()
			continue
		}
		select {
		case <-s.stop:
			s.handOver(false, s.cons...)
			s.teardown()
			return
		case <-lost:
			s.teardown()
		case <-s.wake:
			if s.anyEnded() {
				// A channel closed under a consumer (a queue deleted, a
				// consumer cancelled by the broker): start over.
				s.teardown()
			}
		case <-tick:
			if err := s.rebalance(); err != nil {
				s.teardown()
			}
		}
	}
}

// stepBack stops handing out k's messages, waits until those handed out are
// settled, closes its channel and consumes its queue again.
func (s *subscription) stepBack(i int) error {
	k := s.cons[i]
	n := k.stopHolding()
	if h := holdHook.Load(); h != nil {
		(*h)(k.q.name)
	}
	if n > 0 {
		select {
		case <-k.settled:
		case <-s.stop:
			return nil
		}
	}
	s.handOver(true, k)
	_ = k.ch.Close()
	<-k.fwd
	nk, err := s.consume(context.Background(), s.queues[i])
	if err != nil {
		return err
	}
	s.cons[i] = nk
	s.ping(s.queues[i])
	return nil
}

func (s *subscription) anyEnded() bool {
	for _, k := range s.cons {
		select {
		case <-k.fwd:
			return true
		default:
		}
	}
	return false
}

// rebalance counts the group's members and, when this subscription is
// active on more partitions than its share (the partition count divided
// by the members, rounded up), steps back from the excess: it stops
// handing out their messages, waits until every one it handed out is
// settled, and closes the partition's channel, which returns the rest to
// the head of the queue, in order, and lets the broker make the next
// waiting consumer active; then it consumes the partition again, at the
// end of the line. Only partitions that delivered since their consumer
// started count as active: the broker says nothing of idle ones.
func (s *subscription) rebalance() error {
	q, err := s.ctl.QueueDeclare(membersQueueName(s.topic, s.group), false, false, false, false, amqp.Table{"x-expires": int64(time.Hour / time.Millisecond)})
	if err != nil {
		return err
	}
	members := max(q.Consumers, 1)
	s.ticks++
	if members != s.members || s.ticks%10 == 0 {
		// Membership changed (or a while passed): let every member learn
		// which partitions it is active on now.
		s.members = members
		s.ping(s.queues...)
	}
	share := (len(s.queues) + members - 1) / members
	var active []int
	for i, k := range s.cons {
		k.mu.Lock()
		if k.seen && !k.holding {
			active = append(active, i)
		}
		k.mu.Unlock()
	}
	if len(active) <= share {
		return nil
	}
	for _, i := range active[share:] {
		if err := s.stepBack(i); err != nil {
			return err
		}
	}
	return nil
}

// isStopping reports whether the subscription is stopping: the portable
// layer ends Receive's context only to stop it, and then hands back (nacks)
// what it received and did not handle, whether or not Receive is running.
func (s *subscription) isStopping() bool {
	if s.stopping.Load() {
		return true
	}
	if p := s.recvCtx.Load(); p != nil && (*p).Err() != nil {
		s.stopping.Store(true)
		return true
	}
	return false
}

func (s *subscription) Receive(ctx context.Context, max int) ([]subscriber.Received, error) {
	if p := s.recvCtx.Load(); p == nil || *p != ctx {
		s.recvCtx.Store(&ctx)
	}
	var out []subscriber.Received
	for len(out) == 0 {
		select {
		case it := <-s.in:
			if r, ok := s.received(it); ok {
				out = append(out, r)
			}
		case err := <-s.fatal:
			s.fatal <- err
			return nil, err
		case <-ctx.Done():
			// The portable layer ends Receive's context only to stop the
			// subscription: from now on a nack leaves the message to the
			// channel's close, which returns every unsettled message in
			// delivery order. Requeueing them one by one would put a
			// nacked message behind later ones already delivered here.
			s.stopping.Store(true)
			return nil, ctx.Err()
		}
	}
	for len(out) < max {
		select {
		case it := <-s.in:
			if r, ok := s.received(it); ok {
				out = append(out, r)
			}
		default:
			return out, nil
		}
	}
	return out, nil
}

// received makes the polybus message of a delivery, or reports false for
// a delivery of a consumer that is stepping back or stopped.
func (s *subscription) received(it item) (subscriber.Received, bool) {
	k := it.k
	k.mu.Lock()
	if k.holding {
		k.mu.Unlock()
		return subscriber.Received{}, false
	}
	d := it.d
	k.outstanding++
	delete(k.pending, d.DeliveryTag)
	k.mu.Unlock()
	dec := decode(&d, k.q.name)
	f := message.Delivery{
		Topic: s.topic, Group: s.group, Partition: k.q.part,
		Redelivered: d.Redelivered,
		BrokerID:    strconv.FormatUint(d.DeliveryTag, 10),
		ReceivedAt:  time.Now(),
	}
	count := deliveryCount(d.Headers)
	attempt := dec.attempts + count + 1
	if n := s.unhandled(k, &d, count); n > 0 {
		attempt = max(attempt-n, 1)
		f.Redelivered = attempt > 1
	}
	if s.c.caps.AttemptCount {
		f.Attempt = attempt
		f.Redelivered = f.Redelivered || attempt > 1
	}
	message.Received(dec.msg, f, func(target any) bool {
		if t, ok := target.(*amqp.Delivery); ok {
			*t = d
			return true
		}
		return false
	})
	return subscriber.Received{Msg: dec.msg, AckID: &ackID{k: k, d: d, attempt: attempt}}, true
}

// Ack acks each message on its channel. AMQP does not confirm acks: when
// Ack returns, the acks are sent.
func (s *subscription) Ack(ctx context.Context, ids []any) error {
	var errs []error
	for _, id := range ids {
		a := id.(*ackID)
		if err := a.k.ch.Ack(a.d.DeliveryTag, false); err != nil {
			errs = append(errs, err)
		}
		s.forget(a.k, &a.d)
		a.k.settle(1, 1)
	}
	return settleError("rabbitmq: ack", errs)
}

// Nack requeues each message at once, or, with a delay, publishes a copy
// to the delay queue of the delay's bucket (waiting for its confirm) and
// acks the original. A copy that cannot be published is requeued at once
// instead.
func (s *subscription) Nack(ctx context.Context, ids []any, delay time.Duration) error {
	var errs []error
	for _, id := range ids {
		a := id.(*ackID)
		if delay == 0 && s.isStopping() {
			// Leave it to the channel's close, which returns every
			// unsettled message in delivery order: a requeue would put it
			// behind later ones of its partition that this channel holds
			// (and, with a single active consumer, redeliver it here).
			a.k.settle(1, 0)
			continue
		}
		if delay > 0 {
			err := s.delay(ctx, a, delay)
			if err == nil {
				s.forget(a.k, &a.d)
				err = a.k.ch.Ack(a.d.DeliveryTag, false)
				if err != nil {
					errs = append(errs, err)
				}
				a.k.settle(1, 1)
				continue
			}
			errs = append(errs, err)
		}
		if err := a.k.ch.Nack(a.d.DeliveryTag, false, true); err != nil {
			errs = append(errs, err)
		}
		a.k.settle(1, 1)
	}
	return settleError("rabbitmq: nack", errs)
}

// delay publishes a copy of a's message to its queue's delay queue.
func (s *subscription) delay(ctx context.Context, a *ackID, d time.Duration) error {
	const op = "rabbitmq: nack"
	pc, err := s.c.pool.get(ctx)
	if err != nil {
		return err
	}
	b := bucket(d)
	name := retryQueueName(a.k.q.name, b.String())
	s.retryMu.Lock()
	known := s.retries[name] == pc.gen
	s.retryMu.Unlock()
	if !known {
		if _, err := declareRetry(pc.ch, a.k.q.name, b); err != nil {
			_ = pc.ch.Close()
			return err
		}
		s.retryMu.Lock()
		s.retries[name] = pc.gen
		s.retryMu.Unlock()
	}
	p := amqp.Publishing{
		Headers:       amqp.Table{},
		ContentType:   a.d.ContentType,
		DeliveryMode:  amqp.Persistent,
		CorrelationId: a.d.CorrelationId,
		ReplyTo:       a.d.ReplyTo,
		MessageId:     a.d.MessageId,
		Timestamp:     a.d.Timestamp,
		Type:          a.d.Type,
		AppId:         a.d.AppId,
		Body:          a.d.Body,
	}
	for k, v := range a.d.Headers {
		switch k {
		case "x-delivery-count", "x-death":
			continue
		}
		p.Headers[k] = v
	}
	p.Headers[hdrAttempt] = int64(a.attempt)
	dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, "", name, false, false, p)
	if err != nil {
		_ = pc.ch.Close()
		return sendError(op, err, pc)
	}
	select {
	case <-dc.Done():
	case <-ctx.Done():
		(&pubDriver{c: s.c}).abandon(pc, []*amqp.DeferredConfirmation{dc})
		return ctx.Err()
	}
	if !dc.Acked() {
		_ = pc.ch.Close()
		return message.Errorf(message.Unavailable, op, "the broker did not confirm the delayed copy")
	}
	s.c.pool.put(pc)
	return nil
}

func settleError(op string, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	err := errors.Join(errs...)
	if errors.Is(err, amqp.ErrClosed) {
		return message.Errorf(message.Unavailable, op, "channel lost; the broker redelivers the messages: %w", err)
	}
	return coded(op, err)
}

// Close stops the consumers: the broker returns every message that was
// neither acked nor nacked to its queue.
func (s *subscription) Close() error {
	close(s.stop)
	<-s.done
	return nil
}
