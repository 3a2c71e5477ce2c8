package nats

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// pinHeader carries, on every message of a pinned consumer, the pin ID of
// the client it was delivered to.
const pinHeader = "Nats-Pin-Id"

// pullWait is how long one pull request of an acquired partition waits.
const pullWait = 500 * time.Millisecond

// acquireWait is how long one pull of a partition being taken over waits
// for a message before the subscription looks at the consumer's state.
const acquireWait = 100 * time.Millisecond

// psub is a subscription to a partitioned stream: one member of the group.
// It pulls from the partitions that the group's membership assigns to it,
// each through the partition's pinned consumer, and hands a partition over
// only once it has settled what it holds of it.
//
// Goroutines: Receive's (the portable receive loop), Ack/Nack's (the
// portable acker), the manager (membership changes), one per partition
// being acquired or released, and one puller per acquired partition.
type psub struct {
	c        *core
	topic    string
	group    string
	start    subscriber.Start
	prefetch int
	ackWait  time.Duration
	layout   streamLayout
	stream   jetstream.Stream
	// perPart is each partition consumer's MaxAckPending and pull size:
	// twice the prefetch spread over the partitions, so that one member
	// holding every partition has about what one unpartitioned consumer had.
	perPart int
	// createdFirst: this subscription created the group's consumer of
	// partition 0, so the group is new.
	createdFirst atomic.Bool

	mem *membership
	// legacy reads the group's consumer of the unpartitioned layout until
	// it has nothing left; nil once drained or when there was none. It is
	// Receive's (and Close's, after the last Receive).
	legacy     *subscription
	legacyCons jetstream.Consumer
	// partitioned is closed once legacy is drained: partitions are
	// acquired only then, so that old messages come first.
	partitioned chan struct{}

	mu      sync.Mutex
	parts   map[int]*part // partitions held: being acquired, active, or being released
	target  []int         // the partitions that membership assigns to this member
	rr      int           // where Receive's round-robin starts
	closing bool
	// recvCtx is the context of the last Receive: the portable layer ends
	// it to stop the subscription, and from then on a nack goes into the
	// hand-back (see Nack).
	recvCtx context.Context

	wake    chan struct{} // a partition's buffer gained messages
	errs    chan error    // the latest error of a Consume
	kick    chan struct{} // reconcile again
	stop    chan struct{} // closed by Close
	mgrDone chan struct{}
	workers sync.WaitGroup // acquisitions and releases
}

type partState int

const (
	acquiring partState = iota
	active
	releasing
)

// part is one held partition.
type part struct {
	p    int
	name string // the partition's consumer
	cons jetstream.Consumer
	// pullStop is closed to stop the puller, which closes pullDone when
	// it has stopped; both nil until the partition is acquired.
	pullStop, pullDone chan struct{}

	// Guarded by psub.mu:
	state partState
	// pin is the pin ID under which the partition was acquired; a
	// message under another one means that the pin moved.
	pin string
	// lost: the pin moved, so the partition must be handed back and
	// acquired afresh.
	lost bool
	// buf holds the messages pulled and not yet returned by Receive, and
	// those nacked while pt was being handed over (nacked counts them).
	buf    []jetstream.Msg
	nacked int
	// outstanding counts messages returned by Receive and not settled.
	outstanding int
	// lastAck is the latest message of pt acked: the hand-back acks it
	// again, as a request, to know that the server has applied every
	// ack sent before (see handBack).
	lastAck jetstream.Msg

	cancel  chan struct{} // closed to abandon an acquisition
	settled chan struct{} // poked when outstanding reaches 0 while releasing
}

// held is the AckID of a message of a partition.
type held struct {
	m  jetstream.Msg
	pt *part
}

func openPartitioned(ctx context.Context, c *core, topic string, cfg subscriber.OpenConfig, layout streamLayout, prefetch int, ackWait time.Duration) (*psub, error) {
	const op = "nats: subscribe"
	s := &psub{
		c: c, topic: topic, group: cfg.Group, start: cfg.Start, prefetch: prefetch, ackWait: ackWait,
		layout:      layout,
		perPart:     max(1, (2*prefetch+layout.parts-1)/layout.parts),
		partitioned: make(chan struct{}),
		parts:       map[int]*part{},
		wake:        make(chan struct{}, 1),
		errs:        make(chan error, 1),
		kick:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		mgrDone:     make(chan struct{}),
	}
	var err error
	if s.stream, err = c.js.Stream(ctx, layout.name); err != nil {
		return nil, coded(op, err)
	}
	// Every partition's consumer exists from the start, so that a Latest
	// group begins at one moment on all of them.
	for p := range layout.parts {
		if _, err := s.consumer(ctx, p); err != nil {
			return nil, coded(op, err)
		}
	}
	if s.createdFirst.Load() && s.start == subscriber.Earliest {
		// A group new to a migrated stream reads the messages stored
		// before the migration too (on the topic's own subject), first.
		if err := s.createLegacy(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.openLegacy(ctx); err != nil {
		return nil, err
	}
	kv, err := c.membersBucket(ctx)
	if err != nil {
		s.closeLegacy()
		return nil, err
	}
	if s.mem, err = joinGroup(ctx, c, kv, memberPrefix(layout.name, cfg.Group)); err != nil {
		s.closeLegacy()
		return nil, err
	}
	go s.manage()
	return s, nil
}

// consumer returns partition p's consumer, creating it when it does not
// exist; an existing one gets this subscription's ack wait and pull size.
func (s *psub) consumer(ctx context.Context, p int) (jetstream.Consumer, error) {
	js := s.c.js
	name := partitionConsumerName(s.group, p)
	cons, err := js.Consumer(ctx, s.layout.name, name)
	if err == nil {
		cfg := cons.CachedInfo().Config
		if cfg.AckWait == s.ackWait && cfg.MaxAckPending == s.perPart {
			return cons, nil
		}
		cfg.AckWait, cfg.MaxAckPending = s.ackWait, s.perPart
		return js.UpdateConsumer(ctx, s.layout.name, cfg)
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	deliver := jetstream.DeliverAllPolicy
	if s.start == subscriber.Latest {
		deliver = jetstream.DeliverNewPolicy
	}
	cons, err = js.CreateConsumer(ctx, s.layout.name, jetstream.ConsumerConfig{
		Durable:        name,
		Description:    "polybus group " + s.group + " of topic " + s.topic + ", partition " + strconv.Itoa(p),
		DeliverPolicy:  deliver,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        s.ackWait,
		MaxDeliver:     -1,
		MaxAckPending:  s.perPart,
		FilterSubject:  s.layout.subjects[p],
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PinnedTTL:      pinnedTTL,
		PriorityGroups: []string{priorityGroup},
	})
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return js.Consumer(ctx, s.layout.name, name)
	}
	if err == nil && p == 0 {
		s.createdFirst.Store(true)
	}
	return cons, err
}

// openLegacy looks for the group's consumer of the unpartitioned layout
// (from before the stream was migrated): one that still has messages to
// deliver or acks to wait for is read to its end before any partition;
// one that is drained is deleted.
func (s *psub) openLegacy(ctx context.Context) error {
	const op = "nats: subscribe"
	name := consumerName(s.group, s.topic, true)
	cons, err := s.c.js.Consumer(ctx, s.layout.name, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		close(s.partitioned)
		return nil
	}
	if err != nil {
		return coded(op, err)
	}
	info := cons.CachedInfo()
	if info.NumPending == 0 && info.NumAckPending == 0 {
		_ = s.c.js.DeleteConsumer(ctx, s.layout.name, name)
		close(s.partitioned)
		return nil
	}
	l := &subscription{
		c: s.c, topic: s.topic, group: s.group, start: s.start, prefetch: s.prefetch, ackWait: s.ackWait,
		msgs: make(chan jetstream.Msg, s.prefetch), errs: make(chan error, 1),
	}
	if err := l.open(ctx); err != nil {
		return err
	}
	s.legacy, s.legacyCons = l, cons
	return nil
}

// createLegacy creates the group's consumer of the topic's own subject when
// the stream holds messages there (stored before it was migrated) and the
// group has none.
func (s *psub) createLegacy(ctx context.Context) error {
	const op = "nats: subscribe"
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(s.topic))
	if err != nil {
		return coded(op, err)
	}
	if info.State.Subjects[s.topic] == 0 {
		return nil
	}
	_, err = s.c.js.CreateConsumer(ctx, s.layout.name, jetstream.ConsumerConfig{
		Durable:       consumerName(s.group, s.topic, true),
		Description:   "polybus group " + s.group + " of topic " + s.topic + " (messages from before partitions)",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.ackWait,
		MaxDeliver:    -1,
		MaxAckPending: s.prefetch,
		FilterSubject: s.topic,
	})
	if err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
		return coded(op, err)
	}
	return nil
}

func (s *psub) closeLegacy() {
	if s.legacy != nil {
		s.legacy.halt()
		s.legacy = nil
	}
}

// manage follows the membership and reconciles the partitions held with
// those assigned, until Close.
func (s *psub) manage() {
	defer close(s.mgrDone)
	partitioned := s.partitioned
	for {
		select {
		case members := <-s.mem.out:
			s.mu.Lock()
			s.target = assigned(members, s.mem.id, s.layout.parts)
			s.mu.Unlock()
		case <-s.kick:
		case <-partitioned:
			partitioned = nil
		case <-s.stop:
			return
		}
		if partitioned == nil {
			s.reconcile()
		}
	}
}

func (s *psub) poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// reconcile releases the partitions held and no longer assigned (or whose
// pin moved) and acquires those assigned and not held. A partition being
// released is acquired again, if still assigned, once its release is done.
func (s *psub) reconcile() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return
	}
	for p, pt := range s.parts {
		if pt.state == releasing || slices.Contains(s.target, p) && !pt.lost {
			continue
		}
		if pt.state == acquiring {
			// The acquisition releases what it got when it sees this.
			pt.state = releasing
			close(pt.cancel)
			continue
		}
		pt.state = releasing
		s.workers.Add(1)
		go func() {
			defer s.workers.Done()
			s.release(pt)
		}()
	}
	for _, p := range s.target {
		if s.parts[p] != nil {
			continue
		}
		pt := &part{p: p, name: partitionConsumerName(s.group, p), cancel: make(chan struct{}), settled: make(chan struct{}, 1)}
		s.parts[p] = pt
		s.workers.Add(1)
		go func() {
			defer s.workers.Done()
			s.acquire(pt)
		}()
	}
}

// acquire takes partition pt over: it waits until the server pins the
// partition to this member (after its previous owner has handed it over,
// or the previous owner's pin has expired), makes sure that no message of
// a previous owner is left pending where newer ones could overtake it, and
// starts consuming.
func (s *psub) acquire(pt *part) {
	first, ok := s.verify(pt)
	s.mu.Lock()
	if first != nil {
		pt.buf = append([]jetstream.Msg{first}, pt.buf...)
	}
	if ok && pt.state == acquiring && !s.closing {
		pt.state = active
		pt.pullStop, pt.pullDone = make(chan struct{}), make(chan struct{})
		go s.pull(pt, pt.pullStop, pt.pullDone)
		s.mu.Unlock()
		s.poke(s.wake)
		return
	}
	closing := s.closing
	pt.state = releasing
	s.mu.Unlock()
	if !closing {
		// Abandoned (no longer assigned): hand back what it got.
		s.release(pt)
	}
	// Closing: Close hands back every partition still held.
}

// pull is pt's puller: one pull request (a Fetch) at a time, each expiring
// after pullWait. A Fetch unsubscribes only once the server has ended its
// request (full, or expired), so that no message can be sent to a reply
// subject that nobody listens to any more: such a message would count as
// delivered and come again only after its ack wait, behind newer ones. (A
// Consume keeps requests open at the server across its unsubscribe.) Each
// pull also renews the partition's pin.
func (s *psub) pull(pt *part, stop, done chan struct{}) {
	defer close(done)
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-stop:
			return
		default:
		}
		batch, err := pt.cons.Fetch(s.perPart, jetstream.FetchMaxWait(pullWait), jetstream.FetchPriorityGroup(priorityGroup))
		if err == nil {
			for m := range batch.Messages() {
				s.deliver(pt, m)
			}
			err = batch.Error()
		}
		if err == nil || errors.Is(err, natsgo.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
			backoff = 50 * time.Millisecond
			continue
		}
		s.pullError(pt, err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return
		}
		backoff = min(2*backoff, time.Second)
	}
}

// pause waits d, or less when pt's acquisition is cancelled or the
// subscription closes (false).
func (s *psub) pause(pt *part, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-pt.cancel:
	case <-s.stop:
	}
	return false
}

// verify is acquire's first pull. It returns the first message of the
// partition, or nil when the partition has none yet, once it is safe to
// consume; false when the acquisition was abandoned.
//
// A previous owner that handed the partition over gracefully left nothing
// pending but the messages that it nacked, in stream order, which the
// server redelivers before any newer one. A previous owner that died (or
// an embedded server that restarted, forgetting its nacks) left messages
// pending that the server would redeliver only after their ack wait, after
// newer ones: verify then resets the consumer to its ack floor, so that
// delivery resumes, in stream order, from the oldest message not acked
// (those acked above it come again: duplicates, never reordering).
func (s *psub) verify(pt *part) (jetstream.Msg, bool) {
	for attempt := 0; ; attempt++ {
		select {
		case <-pt.cancel:
			return nil, false
		case <-s.stop:
			return nil, false
		default:
		}
		if attempt > 0 && !s.pause(pt, min(time.Duration(attempt)*10*time.Millisecond, 50*time.Millisecond)) {
			return nil, false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := s.verifyOnce(ctx, pt)
		cancel()
		if err != nil {
			if errors.Is(err, errRetry) {
				attempt = -1
			}
			continue
		}
		return m, true
	}
}

// errRetry asks verify to try again at once; errPinned after a pause.
var (
	errRetry  = errors.New("retry")
	errPinned = errors.New("pinned to another client")
)

// pinnedElsewhere reports whether info shows the partition pinned: to its
// previous owner, who is handing it over or whose pin has yet to expire
// (verify holds no pin when it asks).
func pinnedElsewhere(info *jetstream.ConsumerInfo) bool {
	for _, g := range info.PriorityGroups {
		if g.PinnedClientID != "" {
			return true
		}
	}
	return false
}

func (s *psub) verifyOnce(ctx context.Context, pt *part) (jetstream.Msg, error) {
	if pt.cons == nil {
		// A fresh consumer handle (with no pin ID from an earlier hold),
		// creating the consumer if it went away.
		cons, err := s.consumer(ctx, pt.p)
		if err != nil {
			return nil, err
		}
		pt.cons = cons
	}
	// No pull request while the partition is pinned elsewhere: the
	// server would cycle it past the redeliveries that the previous owner
	// hands back meanwhile, and each time it finds no taker for the one
	// it popped it puts it back at the end of its redelivery queue,
	// which scrambles their order.
	before, err := pt.cons.Info(ctx)
	if err != nil {
		s.refetch(pt, err)
		return nil, err
	}
	if pinnedElsewhere(before) {
		return nil, errPinned
	}
	batch, err := pt.cons.Fetch(1, jetstream.FetchMaxWait(acquireWait), jetstream.FetchPriorityGroup(priorityGroup))
	if err != nil {
		s.refetch(pt, err)
		return nil, err
	}
	var m jetstream.Msg
	for x := range batch.Messages() {
		m = x
	}
	if err := batch.Error(); err != nil && m == nil && !errors.Is(err, natsgo.ErrTimeout) {
		s.refetch(pt, err)
		return nil, err
	}
	if m != nil {
		md, err := m.Metadata()
		if err != nil || md.NumDelivered > 1 {
			// A redelivery comes before any newer message: what a
			// previous owner handed back.
			pt.pin = m.Headers().Get(pinHeader)
			return m, nil
		}
		info, err := pt.cons.Info(ctx)
		if err != nil {
			return nil, err
		}
		if info.NumAckPending > 1 {
			// A new message while older ones are pending: they would
			// come after it. Reset; m comes again in its turn.
			if err := s.reset(ctx, pt); err != nil {
				return nil, err
			}
			return nil, errRetry
		}
		pt.pin = m.Headers().Get(pinHeader)
		return m, nil
	}
	info, err := pt.cons.Info(ctx)
	if err != nil {
		s.refetch(pt, err)
		return nil, err
	}
	if pinnedElsewhere(info) {
		return nil, errPinned
	}
	if info.NumAckPending > 0 {
		// Pending, unpinned and nothing to redeliver now: a previous
		// owner's messages that would wait for their ack wait.
		if err := s.reset(ctx, pt); err != nil {
			return nil, err
		}
		return nil, errRetry
	}
	return nil, nil
}

// refetch drops pt's consumer handle after an error that a fresh handle
// (or a re-created consumer) may cure.
func (s *psub) refetch(pt *part, err error) {
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrPinIDMismatch) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, natsgo.ErrNoResponders) {
		pt.cons = nil
	}
}

func (s *psub) reset(ctx context.Context, pt *part) error {
	_, err := s.c.js.ResetConsumer(ctx, s.layout.name, pt.name)
	return err
}

// deliver is pt's Consume callback: it buffers m for Receive. A message
// under a pin other than the one pt was acquired under means that the
// server moved the partition meanwhile: pt is then handed back and
// acquired afresh.
func (s *psub) deliver(pt *part, m jetstream.Msg) {
	pin := m.Headers().Get(pinHeader)
	s.mu.Lock()
	if pt.pin == "" {
		pt.pin = pin
	} else if pin != pt.pin && !pt.lost {
		pt.lost = true
		s.poke(s.kick)
	}
	pt.buf = append(pt.buf, m)
	s.mu.Unlock()
	s.poke(s.wake)
}

// pullError handles an error of pt's puller: a pin that moved elsewhere, or
// a consumer that went away, means pt is lost (handed back and acquired
// afresh, re-creating the consumer); the rest goes to Receive.
func (s *psub) pullError(pt *part, err error) {
	switch {
	case errors.Is(err, jetstream.ErrNoHeartbeat):
		return
	case errors.Is(err, jetstream.ErrPinIDMismatch), errors.Is(err, jetstream.ErrConsumerDeleted),
		errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound),
		errors.Is(err, natsgo.ErrNoResponders):
		if !errors.Is(err, jetstream.ErrPinIDMismatch) {
			// The consumer or its stream went away (memory storage across
			// a server restart, or deleted): find or create the stream
			// again; the re-acquisition re-creates the consumer.
			s.c.streams.forget(s.topic)
		}
		s.mu.Lock()
		pt.lost = true
		s.mu.Unlock()
		s.poke(s.kick)
		return
	}
	select {
	case s.errs <- err:
	default:
	}
}

// release hands pt over: it stops pulling, waits until every message of pt
// that Receive returned is settled, then hands back what it buffered (and
// what was nacked meanwhile) and unpins the partition. Should the wait
// outlast pinnedTTL, the next owner finds the partition unpinned with
// messages pending and resets it (verify): duplicates, never reordering.
func (s *psub) release(pt *part) {
	s.stopPulling(pt)
	for {
		s.mu.Lock()
		n := pt.outstanding
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-pt.settled:
		case <-s.stop:
			// Close hands it back.
			return
		}
	}
	s.handBack(pt)
	s.mu.Lock()
	if s.parts[pt.p] == pt {
		delete(s.parts, pt.p)
	}
	s.mu.Unlock()
	s.poke(s.kick)
}

// handBack stops pt's Consume, waits until its callback has had every
// message that the server sent (a drain), nacks the buffered messages in
// stream order, so that the server redelivers them in that order before
// anything newer, and unpins the partition for its next owner.
func (s *psub) handBack(pt *part) {
	up, _ := s.c.state.get()
	s.stopPulling(pt)
	if pt.pullDone != nil {
		t := time.NewTimer(pullWait + 2*time.Second)
		select {
		case <-pt.pullDone:
		case <-t.C:
		}
		t.Stop()
	}
	s.mu.Lock()
	buf, nacked, lastAck := pt.buf, pt.nacked, pt.lastAck
	pt.buf, pt.nacked, pt.lastAck = nil, 0, nil
	pinned := pt.pin != "" || pt.pullDone != nil
	s.mu.Unlock()
	if !up {
		return
	}
	slices.SortFunc(buf, func(a, b jetstream.Msg) int {
		return int64Cmp(streamSeq(a), streamSeq(b))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The acks that the portable layer sent are applied when only what
	// is handed back is pending: before that, the next owner could take
	// them for a dead owner's messages, and the clean reset below would
	// not apply (the buffered messages would be nacked, counting an
	// attempt that no handler saw). The server applies a consumer's acks
	// asynchronously but in the order they came; acking the latest acked
	// message again, as a request, is a barrier: its answer comes after
	// every earlier ack of this connection was applied (pinned by
	// TestAckAgainIsABarrier). Polling alone is bounded, and a loaded
	// server can take longer to apply the acks than the bound.
	wait, cancelWait := context.WithTimeout(ctx, 2*time.Second)
	if lastAck != nil {
		_, _ = s.c.nc.RequestWithContext(wait, lastAck.Reply(), []byte("+ACK"))
	}
	// Then poll (bounded: a message that this member never saw, such as
	// one lost by a reconnection, stays pending until its ack wait
	// whatever it waits).
	var info *jetstream.ConsumerInfo
	for wait.Err() == nil && pt.cons != nil {
		i, err := pt.cons.Info(wait)
		if err != nil {
			break
		}
		if info = i; i.NumAckPending <= len(buf) {
			break
		}
		t := time.NewTimer(5 * time.Millisecond)
		select {
		case <-t.C:
		case <-wait.Done():
		}
		t.Stop()
	}
	cancelWait()
	if len(buf) > 0 && nacked == 0 && info != nil && info.NumAckPending == len(buf) &&
		info.Delivered.Consumer-info.AckFloor.Consumer == uint64(len(buf)) {
		// Clean: every delivery since the ack floor is one of buf, none
		// handled. A reset to the ack floor redelivers exactly these, in
		// stream order, as first deliveries (a nack would count an
		// attempt that no handler saw), and it is stored, so it holds
		// across a restart of the server too.
		if err := s.reset(ctx, pt); err == nil {
			buf = nil
		}
	}
	for i, m := range buf {
		if i < len(buf)-1 {
			_ = m.Nak()
			continue
		}
		// The last one as a request: the server answers once it has
		// processed it, and it processes one consumer's acks and naks
		// in order, so all of them are applied when the answer comes.
		_, _ = s.c.nc.RequestWithContext(ctx, m.Reply(), []byte("-NAK"))
	}
	if pinned {
		_ = s.stream.UnpinConsumer(ctx, pt.name, priorityGroup)
	}
}

func streamSeq(m jetstream.Msg) int64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return int64(md.Sequence.Stream)
}

func int64Cmp(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *psub) Receive(ctx context.Context, max int) ([]subscriber.Received, error) {
	const op = "nats: receive"
	s.mu.Lock()
	s.recvCtx = ctx
	s.mu.Unlock()
	if s.legacy != nil {
		recs, err := s.receiveLegacy(ctx, max)
		if len(recs) > 0 || err != nil {
			return recs, err
		}
	}
	for {
		if out := s.take(max); len(out) > 0 {
			return out, nil
		}
		up, changed := s.c.state.get()
		if !up {
			return nil, message.Errorf(message.Unavailable, op, "disconnected from the NATS server; waiting to reconnect")
		}
		select {
		case <-s.wake:
		case <-changed:
			return nil, message.Errorf(message.Unavailable, op, "disconnected from the NATS server; waiting to reconnect")
		case err := <-s.errs:
			return nil, unavailable(op, err)
		case <-ctx.Done():
			// Unlike an unpartitioned subscription, keep pulling: that
			// keeps the partitions pinned to this member while the
			// portable layer drains (its nacks go into the hand-back:
			// see Nack). Close hands everything back, in order.
			return nil, ctx.Err()
		}
	}
}

// receiveLegacy reads the group's unpartitioned consumer until it has
// nothing left to deliver and nothing waiting for an ack (this member's
// own messages of it included), then deletes it and lets the partitions
// start. It returns no message and no error once that is done.
func (s *psub) receiveLegacy(ctx context.Context, max int) ([]subscriber.Received, error) {
	for {
		recs, err := s.legacy.receive(ctx, max, 500*time.Millisecond)
		if len(recs) > 0 || err != nil {
			return recs, err
		}
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := s.legacyCons.Info(ictx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				info = &jetstream.ConsumerInfo{}
			} else {
				return nil, unavailable("nats: receive", err)
			}
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			s.legacy.halt()
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = s.c.js.DeleteConsumer(dctx, s.layout.name, s.legacyCons.CachedInfo().Name)
			cancel()
			s.legacy, s.legacyCons = nil, nil
			close(s.partitioned)
			return nil, nil
		}
	}
}

// take returns up to max buffered messages of the active partitions,
// taking one from each in turn.
func (s *psub) take(max int) []subscriber.Received {
	var msgs []held
	s.mu.Lock()
	n := s.layout.parts
	for len(msgs) < max {
		took := false
		for i := range n {
			pt := s.parts[(s.rr+i)%n]
			if pt == nil || pt.state != active || len(pt.buf) == 0 {
				continue
			}
			msgs = append(msgs, held{m: pt.buf[0], pt: pt})
			pt.buf[0] = nil
			pt.buf = pt.buf[1:]
			pt.outstanding++
			took = true
			if len(msgs) == max {
				break
			}
		}
		if !took {
			break
		}
	}
	s.rr = (s.rr + 1) % n
	s.mu.Unlock()
	if len(msgs) == 0 {
		return nil
	}
	out := make([]subscriber.Received, len(msgs))
	hs := make([]held, len(msgs))
	copy(hs, msgs)
	for i := range hs {
		out[i] = s.received(&hs[i])
	}
	return out
}

func (s *psub) received(h *held) subscriber.Received {
	return subscriber.Received{Msg: receivedMsg(h.m, s.topic, s.group, h.pt.p), AckID: h}
}

// settledHeld counts hs as settled; acked tells that they were acked.
func (s *psub) settledHeld(hs []*held, acked bool) {
	s.mu.Lock()
	for _, h := range hs {
		if acked {
			h.pt.lastAck = h.m
		}
		h.pt.outstanding--
		if h.pt.outstanding == 0 && h.pt.state == releasing {
			s.poke(h.pt.settled)
		}
	}
	s.mu.Unlock()
}

// split separates ids into the legacy consumer's messages and the
// partitions'.
func split(ids []any) (msgs []jetstream.Msg, hs []*held) {
	msgs = make([]jetstream.Msg, 0, len(ids))
	for _, id := range ids {
		switch v := id.(type) {
		case *held:
			msgs = append(msgs, v.m)
			hs = append(hs, v)
		case jetstream.Msg:
			msgs = append(msgs, v)
		}
	}
	return msgs, hs
}

func (s *psub) Ack(ctx context.Context, ids []any) error {
	msgs, hs := split(ids)
	err := s.c.ack(ctx, msgs)
	s.settledHeld(hs, err == nil)
	return err
}

// Nack nacks; but a message of a partition being handed over (released,
// or the subscription stopping) goes into the partition's hand-back
// instead, which the hand-over nacks with the rest in stream order. Sent
// at once, the server would queue it for redelivery in nack order, which
// the portable layer's drain does not keep across keys' queues and the
// batch that it hands back: a later message could reach the next owner
// first.
func (s *psub) Nack(ctx context.Context, ids []any, delay time.Duration) error {
	var now []jetstream.Msg
	var hs []*held
	s.mu.Lock()
	stopping := s.closing || s.recvCtx != nil && s.recvCtx.Err() != nil
	for _, id := range ids {
		switch v := id.(type) {
		case jetstream.Msg:
			now = append(now, v)
		case *held:
			hs = append(hs, v)
			if stopping || v.pt.state == releasing {
				v.pt.buf = append(v.pt.buf, v.m)
				v.pt.nacked++
			} else {
				now = append(now, v.m)
			}
		}
	}
	s.mu.Unlock()
	err := s.c.nack(ctx, now, delay)
	s.settledHeld(hs, false)
	return err
}

// Close leaves the group (the others rebalance at once), then hands back
// every partition it holds: the buffered messages nacked in stream order,
// the partition unpinned.
func (s *psub) Close() error {
	s.mu.Lock()
	s.closing = true
	for _, pt := range s.parts {
		if pt.state == acquiring {
			close(pt.cancel)
			pt.state = releasing
		}
	}
	s.mu.Unlock()
	close(s.stop)
	<-s.mgrDone
	s.mem.leave()
	s.workers.Wait()
	s.closeLegacy()
	s.mu.Lock()
	parts := make([]*part, 0, len(s.parts))
	for _, pt := range s.parts {
		parts = append(parts, pt)
	}
	s.parts = map[int]*part{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, pt := range parts {
		wg.Go(func() { s.handBack(pt) })
	}
	wg.Wait()
	return nil
}

// stopPulling stops pt's puller after its current pull.
func (s *psub) stopPulling(pt *part) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pt.pullStop != nil {
		select {
		case <-pt.pullStop:
		default:
			close(pt.pullStop)
		}
	}
}
