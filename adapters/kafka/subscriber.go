package kafka

import (
	"context"
	"errors"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// subDriver is the subscriber.Driver: one kafka-go ConsumerGroup per
// Subscribe call, and per partition that the group's generation assigns, a
// partition reader feeding the subscription.
type subDriver struct{ c *core }

func (d *subDriver) Open(ctx context.Context, topic string, cfg subscriber.OpenConfig) (subscriber.Subscription, error) {
	const op = "kafka: subscribe"
	if err := checkTopic(op, topic); err != nil {
		return nil, err
	}
	if err := checkGroup(op, cfg.Group); err != nil {
		return nil, err
	}
	if _, err := d.c.topics.ensure(ctx, topic); err != nil {
		return nil, err
	}
	c := d.c
	start := kafkago.FirstOffset
	if cfg.Start == subscriber.Latest {
		start = kafkago.LastOffset
	}
	prefetch := max(cfg.Prefetch, 1)
	cg, err := kafkago.NewConsumerGroup(kafkago.ConsumerGroupConfig{
		ID:                    cfg.Group,
		Brokers:               c.cfg.Brokers,
		Dialer:                c.dialer,
		Topics:                []string{topic},
		GroupBalancers:        []kafkago.GroupBalancer{kafkago.RangeGroupBalancer{}, kafkago.RoundRobinGroupBalancer{}},
		HeartbeatInterval:     c.cfg.HeartbeatInterval,
		SessionTimeout:        c.cfg.SessionTimeout,
		RebalanceTimeout:      c.cfg.RebalanceTimeout,
		JoinGroupBackoff:      time.Second,
		WatchPartitionChanges: true,
		StartOffset:           start,
		Timeout:               c.cfg.ConnectTimeout,
	})
	if err != nil {
		return nil, message.Errorf(message.InvalidArgument, op, "consumer group %s: %w", cfg.Group, err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &subscription{
		c: c, topic: topic, group: cfg.Group, start: start, prefetch: prefetch,
		cg: cg, ctx: sctx, cancel: cancel,
		in:       make(chan *delivery, prefetch),
		wake:     make(chan struct{}, 1),
		errs:     make(chan error, 1),
		settled:  make(chan struct{}, 1),
		firstGen: make(chan struct{}),
		loopDone: make(chan struct{}),
		holds:    map[holdKey]*hold{},
		attempts: map[partOffset]int{},
	}
	go s.groupLoop()
	if c.cfg.CommitInterval > 0 {
		s.committerDone = make(chan struct{})
		go s.committer(c.cfg.CommitInterval)
	}
	// Wait (a bounded time) for the first generation, so that a new group
	// that starts at the latest offset has fixed it before Subscribe goes
	// on; a slow rebalance goes on in the background.
	t := time.NewTimer(c.cfg.ConnectTimeout)
	defer t.Stop()
	select {
	case <-s.firstGen:
	case <-t.C:
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	return s, nil
}

func (d *subDriver) Capabilities() message.Capabilities { return d.c.caps }
func (d *subDriver) ErrorCode(err error) message.Code   { return ErrorCode(err) }

// Close does nothing: the client's Close hook releases the shared transport.
func (d *subDriver) Close() error { return nil }

// As offers **kafka.Client, **kafka.Transport and **kafka.Dialer (of
// github.com/segmentio/kafka-go).
func (d *subDriver) As(target any) bool { return d.c.as(target) }

// subscription is one Subscribe call's group member.
//
// Bookkeeping, all under mu: each partition of the current generation has
// a partState that lists, in offset order, every delivery taken from its
// reader and not yet acked (pending). The offset committed for a partition
// is the lowest pending one (or the one after the last taken when none is
// pending; what the reader fetched and Receive has not taken yet lies
// beyond it), so a commit never passes a message whose handler has not
// finished, however out of order the acks of different keys arrive.
//
// Nacked messages are held here (holds) until their delay has passed and
// are then returned by Receive again; later messages of the same key (and
// partition) that Receive has not returned yet wait behind them, so a key's
// order survives a nack.
//
// A generation ends when the group rebalances. From then on nothing more
// of it is handed out; the member waits (Config.RevokeTimeout) for the
// handlers of what it handed out, commits, and only then lets kafka-go
// rejoin; acks that arrive later are ignored (the partition's next owner
// redelivers those messages), and no commit of an ended generation is ever
// sent.
type subscription struct {
	c        *core
	topic    string
	group    string
	start    int64
	prefetch int
	cg       *kafkago.ConsumerGroup
	ctx      context.Context
	cancel   context.CancelFunc

	in       chan *delivery // fetched by the partition readers
	wake     chan struct{}  // a hold or the ready queue changed
	errs     chan error     // the latest fetch or group error
	settled  chan struct{}  // a handed-out message was settled
	firstGen chan struct{}  // closed when the first generation has started
	loopDone chan struct{}
	genOnce  sync.Once
	// committerDone is closed when the committer (CommitInterval > 0)
	// has returned; nil without one.
	committerDone chan struct{}

	mu       sync.Mutex
	gen      *genState
	ready    []*delivery // due redeliveries and what waited behind them, in order
	holds    map[holdKey]*hold
	held     int // deliveries in holds
	attempts map[partOffset]int

	// commitMu serialises commits with the end of a generation.
	commitMu sync.Mutex
}

// genState is one generation of the group, as this member sees it.
type genState struct {
	gen   *kafkago.Generation
	parts map[int]*partState
	// revoking is set when the generation ends; ended once its last
	// commit is done. Both under subscription.mu; ended also under
	// commitMu.
	revoking, ended bool
	// out counts messages returned by Receive and not yet settled.
	out int
}

// partState is one assigned partition of a generation.
type partState struct {
	gen *genState
	id  int
	// pending holds, from head, the deliveries taken from the reader and
	// not all acked yet, in offset order (acked ones behind the first
	// unacked stay until it is acked).
	pending []*delivery
	head    int
	// next is the offset after the last one taken from the reader (at
	// first, where the reader starts); the reader alone sets its offset
	// from it, before it fetches.
	next      int64
	committed int64
}

// deliverySlab is how many deliveries a partition reader allocates at once.
const deliverySlab = 64

// delivery is one fetched message, and the subscription's AckID for it.
type delivery struct {
	p   *partState
	km  kafkago.Message
	due time.Time // for a held redelivery
	// handedOut: returned by Receive and not settled since.
	handedOut bool
	// acked: settled by an ack (it stays in pending until everything
	// before it is acked too).
	acked bool
	// msg is the message of the first hand-out (decoded set).
	msg     message.Message
	decoded bool
}

type holdKey struct {
	part int
	key  string
	off  int64 // -1 for a keyed hold; the offset for a keyless message
}

// hold is a key whose first message was nacked: its deliveries, in offset
// order, wait until the first is due.
type hold struct {
	items []*delivery
}

type partOffset struct {
	part int
	off  int64
}

// groupLoop follows the group's generations until the subscription closes.
func (s *subscription) groupLoop() {
	defer close(s.loopDone)
	for {
		gen, err := s.cg.Next(s.ctx)
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, kafkago.ErrGroupClosed) {
				return
			}
			if errors.Is(err, kafkago.RebalanceInProgress) {
				// The ordinary way into the next generation: kafka-go
				// rejoins at once, nothing for Receive to report.
				continue
			}
			s.report(err)
			continue
		}
		s.startGeneration(gen)
		s.genOnce.Do(func() { close(s.firstGen) })
	}
}

// startGeneration fixes the start offset of each assigned partition (a
// new group's earliest or latest, committed at once so that a later
// generation does not move it), then starts a reader per partition and the
// generation's revoker, all bound to the generation.
func (s *subscription) startGeneration(gen *kafkago.Generation) {
	gs := &genState{gen: gen, parts: map[int]*partState{}}
	assigned := gen.Assignments[s.topic]
	var unresolved []kafkago.OffsetRequest
	for _, a := range assigned {
		gs.parts[a.ID] = &partState{gen: gs, id: a.ID, next: a.Offset, committed: a.Offset}
		switch a.Offset {
		case kafkago.FirstOffset:
			unresolved = append(unresolved, kafkago.FirstOffsetOf(a.ID))
		case kafkago.LastOffset:
			unresolved = append(unresolved, kafkago.LastOffsetOf(a.ID))
		}
	}
	if len(unresolved) > 0 {
		s.resolve(gs, unresolved)
	}
	s.mu.Lock()
	s.gen = gs
	s.mu.Unlock()
	for _, ps := range gs.parts {
		gen.Start(func(ctx context.Context) { s.fetch(ctx, ps) })
	}
	gen.Start(func(ctx context.Context) {
		<-ctx.Done()
		s.revoke(gs)
	})
}

// resolve turns FirstOffset and LastOffset assignments into absolute
// offsets and commits them. Partitions it cannot resolve keep the special
// offset, which their reader resolves instead.
func (s *subscription) resolve(gs *genState, reqs []kafkago.OffsetRequest) {
	ctx, cancel := context.WithTimeout(s.ctx, s.c.cfg.ConnectTimeout)
	defer cancel()
	res, err := s.c.client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{s.topic: reqs}})
	if err != nil {
		s.report(err)
		return
	}
	commit := map[int]int64{}
	for _, po := range res.Topics[s.topic] {
		ps := gs.parts[po.Partition]
		if po.Error != nil || ps == nil {
			continue
		}
		off := po.FirstOffset
		if ps.next == kafkago.LastOffset {
			off = po.LastOffset
		}
		if off < 0 {
			continue
		}
		ps.next, ps.committed = off, off
		commit[po.Partition] = off
	}
	if len(commit) > 0 {
		if err := gs.gen.CommitOffsets(map[string]map[int]int64{s.topic: commit}); err != nil {
			s.report(err)
		}
	}
}

// fetch reads one partition from its start offset until the generation
// ends, handing each message to Receive through s.in (Receive records it
// as pending when it takes it).
func (s *subscription) fetch(ctx context.Context, ps *partState) {
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers:        s.c.cfg.Brokers,
		Topic:          s.topic,
		Partition:      ps.id,
		Dialer:         s.c.dialer,
		QueueCapacity:  s.prefetch,
		MinBytes:       1,
		MaxBytes:       s.c.cfg.FetchMaxBytes,
		MaxWait:        s.c.cfg.MaxWait,
		ReadBackoffMin: 50 * time.Millisecond,
		ReadBackoffMax: time.Second,
		MaxAttempts:    3,
	})
	defer r.Close()
	if err := r.SetOffset(ps.next); err != nil {
		s.report(err)
		<-ctx.Done()
		return
	}
	var slab []delivery // deliveries allocated deliverySlab at a time
	for {
		km, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.report(err)
			continue
		}
		if len(slab) == 0 {
			slab = make([]delivery, deliverySlab)
		}
		d := &slab[0]
		slab = slab[1:]
		d.p, d.km = ps, km
		select {
		case s.in <- d:
		case <-ctx.Done():
			return
		}
	}
}

// revoke runs when the generation ends: nothing more of it is handed out;
// it waits (at most RevokeTimeout) for what was handed out to be settled,
// commits, and marks the generation ended.
func (s *subscription) revoke(gs *genState) {
	s.mu.Lock()
	gs.revoking = true
	s.dropHolds(gs)
	s.mu.Unlock()
	deadline := time.NewTimer(s.c.cfg.RevokeTimeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		out := gs.out
		s.mu.Unlock()
		if out == 0 {
			break
		}
		select {
		case <-s.settled:
			continue
		case <-deadline.C:
		}
		break
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if err := s.commitLocked(gs); err != nil {
		s.report(err)
	}
	s.mu.Lock()
	gs.ended = true
	s.mu.Unlock()
}

// dropHolds forgets the held and ready deliveries of gs: the partitions'
// next owner fetches them again (their offsets stay pending, so nothing
// is committed past them).
func (s *subscription) dropHolds(gs *genState) {
	for k, h := range s.holds {
		if h.items[0].p.gen == gs {
			s.held -= len(h.items)
			delete(s.holds, k)
		}
	}
	kept := s.ready[:0]
	for _, d := range s.ready {
		if d.p.gen != gs {
			kept = append(kept, d)
		}
	}
	clear(s.ready[len(kept):])
	s.ready = kept
}

// report keeps err for Receive, unless one is waiting already.
func (s *subscription) report(err error) {
	select {
	case s.errs <- err:
	default:
	}
}

func (s *subscription) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// live reports whether d belongs to a generation that still hands out
// messages. Under mu.
func (d *delivery) live() bool { return !d.p.gen.revoking }

func (s *subscription) Receive(ctx context.Context, max int) ([]subscriber.Received, error) {
	const op = "kafka: receive"
	for {
		out := s.take(max)
		if len(out) > 0 {
			return out, nil
		}
		s.mu.Lock()
		due, holding := s.nextDue()
		full := s.held >= 4*s.prefetch
		s.mu.Unlock()
		var timer <-chan time.Time
		var t *time.Timer
		if holding {
			t = time.NewTimer(time.Until(due))
			timer = t.C
		}
		in := s.in
		if full {
			// Too many messages wait behind held keys: fetch no more
			// until some are due.
			in = nil
		}
		var got *delivery
		var err error
		select {
		case got = <-in:
		case <-timer:
		case <-s.wake:
		case err = <-s.errs:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if t != nil {
			t.Stop()
		}
		switch {
		case got != nil:
			if out := s.accept(got, max); len(out) > 0 {
				return out, nil
			}
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			return nil, unavailable(op, err)
		}
	}
}

// take returns up to max deliveries: the ready queue's first, then due
// holds, then what the readers fetched, without blocking.
func (s *subscription) take(max int) []subscriber.Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseDue(time.Now())
	var out []subscriber.Received
	for len(s.ready) > 0 && len(out) < max {
		d := s.ready[0]
		s.ready[0] = nil
		s.ready = s.ready[1:]
		if d.live() {
			out = append(out, s.handOut(d))
		}
	}
	for len(out) < max && s.held < 4*s.prefetch {
		select {
		case d := <-s.in:
			if r, ok := s.route(d); ok {
				out = append(out, r)
			}
			continue
		default:
		}
		break
	}
	return out
}

// accept routes one delivery taken by a blocked Receive, then takes what
// else is there.
func (s *subscription) accept(d *delivery, max int) []subscriber.Received {
	s.mu.Lock()
	r, ok := s.route(d)
	s.mu.Unlock()
	var out []subscriber.Received
	if ok {
		out = append(out, r)
		max--
	}
	if max > 0 {
		out = append(out, s.take(max)...)
	}
	return out
}

// route records d as pending and hands it out, or parks it behind a held
// message of its key, or drops it when its generation is over. Under mu.
func (s *subscription) route(d *delivery) (subscriber.Received, bool) {
	if !d.live() {
		return subscriber.Received{}, false
	}
	ps := d.p
	ps.pending = append(ps.pending, d)
	ps.next = d.km.Offset + 1
	if len(d.km.Key) > 0 {
		if h := s.holds[holdKey{part: d.p.id, key: string(d.km.Key), off: -1}]; h != nil {
			h.items = append(h.items, d)
			s.held++
			return subscriber.Received{}, false
		}
	}
	return s.handOut(d), true
}

// handOut makes the subscriber.Received of d. Under mu.
func (s *subscription) handOut(d *delivery) subscriber.Received {
	d.handedOut = true
	d.p.gen.out++
	km := &d.km
	attempt := 1
	if len(s.attempts) > 0 {
		attempt += s.attempts[partOffset{km.Partition, km.Offset}]
	}
	// The first hand-out decodes into the delivery's own Message (one
	// allocation less); a redelivery gets a new one, as a handler may
	// still hold the earlier.
	msg := &d.msg
	if d.decoded {
		msg = new(message.Message)
	}
	d.decoded = true
	brokerID := decode(msg, km)
	message.Received(msg, message.Delivery{
		Topic:       s.topic,
		Group:       s.group,
		Attempt:     attempt,
		Redelivered: attempt > 1,
		Partition:   km.Partition,
		Offset:      km.Offset,
		BrokerID:    brokerID,
		ReceivedAt:  time.Now(),
	}, func(target any) bool {
		if t, ok := target.(*kafkago.Message); ok {
			*t = *km
			return true
		}
		return false
	})
	return subscriber.Received{Msg: msg, AckID: d}
}

// releaseDue moves every hold whose first delivery is due to the ready
// queue, up to the first one of its key that is not due. Under mu.
func (s *subscription) releaseDue(now time.Time) {
	for k, h := range s.holds {
		n := 0
		for n < len(h.items) && !h.items[n].due.After(now) {
			n++
		}
		if n == 0 {
			continue
		}
		s.ready = append(s.ready, h.items[:n]...)
		s.held -= n
		if n == len(h.items) {
			delete(s.holds, k)
		} else {
			h.items = h.items[n:]
		}
	}
}

// nextDue returns when the earliest hold is due. Under mu.
func (s *subscription) nextDue() (time.Time, bool) {
	var due time.Time
	for _, h := range s.holds {
		if d := h.items[0].due; due.IsZero() || d.Before(due) {
			due = d
		}
	}
	return due, !due.IsZero()
}

// settle takes d back from the handlers. It reports false for a delivery
// of an ended generation (or one already settled). Under mu.
func (s *subscription) settle(d *delivery) bool {
	if !d.handedOut {
		return false
	}
	d.handedOut = false
	d.p.gen.out--
	return !d.p.gen.ended
}

// Ack marks the messages done and commits, for each partition, up to the
// lowest message still unfinished. It returns once the coordinator has
// accepted the commit.
func (s *subscription) Ack(ctx context.Context, ids []any) error {
	s.mu.Lock()
	var gens []*genState
	for _, id := range ids {
		d := id.(*delivery)
		if !s.settle(d) {
			continue
		}
		ps := d.p
		d.acked = true
		if len(s.attempts) > 0 {
			delete(s.attempts, partOffset{d.km.Partition, d.km.Offset})
		}
		if len(gens) == 0 || gens[len(gens)-1] != ps.gen {
			gens = append(gens, ps.gen)
		}
	}
	s.mu.Unlock()
	s.signal(s.settled)
	if s.committerDone != nil {
		return nil // the committer commits them within CommitInterval
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	var errs []error
	for _, gs := range gens {
		if err := s.commitLocked(gs); err != nil {
			errs = append(errs, err)
		}
	}
	return coded("kafka: ack", errors.Join(errs...))
}

// committer commits the current generation's progress every interval
// until the subscription closes (CommitInterval > 0).
func (s *subscription) committer(interval time.Duration) {
	defer close(s.committerDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
		s.mu.Lock()
		gs := s.gen
		s.mu.Unlock()
		if gs == nil {
			continue
		}
		s.commitMu.Lock()
		err := s.commitLocked(gs)
		s.commitMu.Unlock()
		if err != nil && !errors.Is(err, kafkago.RebalanceInProgress) && !errors.Is(err, kafkago.IllegalGeneration) {
			// A commit that meets the rebalance is redone by the
			// revoke; anything else is worth Receive's report.
			s.report(err)
		}
	}
}

// commitLocked commits every partition of gs whose lowest unfinished
// offset has moved. Under commitMu, not mu.
func (s *subscription) commitLocked(gs *genState) error {
	s.mu.Lock()
	if gs.ended {
		s.mu.Unlock()
		return nil
	}
	offsets := map[int]int64{}
	for id, ps := range gs.parts {
		if off := ps.commitPoint(); off > ps.committed {
			offsets[id] = off
		}
	}
	s.mu.Unlock()
	if len(offsets) == 0 {
		return nil
	}
	if err := gs.gen.CommitOffsets(map[string]map[int]int64{s.topic: offsets}); err != nil {
		return err
	}
	s.mu.Lock()
	for id, off := range offsets {
		if ps := gs.parts[id]; off > ps.committed {
			ps.committed = off
		}
	}
	s.mu.Unlock()
	return nil
}

// commitPoint drops the acked deliveries at the head of pending and
// returns the offset to commit: the lowest unfinished one, else the one
// after the last taken from the reader. Under mu.
func (ps *partState) commitPoint() int64 {
	for ps.head < len(ps.pending) && ps.pending[ps.head].acked {
		ps.pending[ps.head] = nil
		ps.head++
	}
	switch {
	case ps.head == len(ps.pending):
		ps.pending, ps.head = ps.pending[:0], 0
		return ps.next
	case ps.head > 1024 && ps.head > len(ps.pending)/2:
		n := copy(ps.pending, ps.pending[ps.head:])
		clear(ps.pending[n:])
		ps.pending, ps.head = ps.pending[:n], 0
	}
	return ps.pending[ps.head].km.Offset
}

// Nack holds the messages and hands them back, each after delay, in
// place: nothing is committed past them meanwhile, and later messages of
// their key wait behind them.
func (s *subscription) Nack(_ context.Context, ids []any, delay time.Duration) error {
	due := time.Now().Add(delay)
	s.mu.Lock()
	for _, id := range ids {
		d := id.(*delivery)
		if !s.settle(d) || d.p.gen.revoking {
			// Its generation is over: the partition's next owner fetches
			// it again, as nothing was committed past it.
			continue
		}
		po := partOffset{d.km.Partition, d.km.Offset}
		s.attempts[po]++
		d.due = due
		hk := holdKey{part: d.p.id, off: d.km.Offset}
		if len(d.km.Key) > 0 {
			hk = holdKey{part: d.p.id, key: string(d.km.Key), off: -1}
		}
		h := s.holds[hk]
		if h == nil {
			h = &hold{}
			s.holds[hk] = h
		}
		// In offset order: a later message of the key may have been
		// nacked first (handed out before this one's nack arrived).
		i := len(h.items)
		for i > 0 && h.items[i-1].km.Offset > d.km.Offset {
			i--
		}
		h.items = append(h.items, nil)
		copy(h.items[i+1:], h.items[i:])
		h.items[i] = d
		s.held++
	}
	s.mu.Unlock()
	s.signal(s.settled)
	s.signal(s.wake)
	return nil
}

// Close leaves the group: the current generation ends (its last commit
// included) and the partitions go to the other members at once.
func (s *subscription) Close() error {
	s.cancel()
	err := s.cg.Close()
	<-s.loopDone
	if s.committerDone != nil {
		<-s.committerDone
	}
	return coded("kafka: close", err)
}

// unavailable gives err the Unavailable code, unless it is a context error
// or a caller's mistake: while receiving, everything else is worth another
// try after a pause.
func unavailable(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	switch ErrorCode(err) {
	case message.InvalidArgument, message.PermissionDenied, message.Unimplemented:
		return coded(op, err)
	}
	return message.Wrap(message.Unavailable, op, err)
}
