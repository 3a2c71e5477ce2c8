package memory

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
)

func batchError(errs []error) error { return &publisher.BatchError{Errs: errs} }

// pubDriver is the broker's publisher.Driver.
type pubDriver struct{ b *Broker }

// PublisherDriver returns a publisher.Driver that publishes to b.
func (b *Broker) PublisherDriver() publisher.Driver { return pubDriver{b} }

func (d pubDriver) SendBatch(ctx context.Context, topic string, msgs []*message.Message) error {
	return d.b.topic(topic).append(ctx, msgs)
}
func (d pubDriver) Capabilities() message.Capabilities { return d.b.Capabilities() }
func (d pubDriver) ErrorCode(error) message.Code       { return message.Unknown }
func (d pubDriver) Close() error                       { return nil }

// As offers the *Broker behind the driver.
func (d pubDriver) As(target any) bool { return asBroker(d.b, target) }

func asBroker(b *Broker, target any) bool {
	if p, ok := target.(**Broker); ok {
		*p = b
		return true
	}
	return false
}

// subDriver is the broker's subscriber.Driver.
type subDriver struct{ b *Broker }

// SubscriberDriver returns a subscriber.Driver that receives from b.
func (b *Broker) SubscriberDriver() subscriber.Driver { return subDriver{b} }

func (d subDriver) Open(ctx context.Context, topicName string, cfg subscriber.OpenConfig) (subscriber.Subscription, error) {
	t := d.b.topic(topicName)
	start := startEarliest
	if cfg.Start == subscriber.Latest {
		start = startLatest
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.group(cfg.Group, start)
	s := &subscription{t: t, g: g}
	g.members = append(g.members, s)
	g.rebalance()
	t.wake()
	return s, nil
}
func (d subDriver) Capabilities() message.Capabilities { return d.b.Capabilities() }
func (d subDriver) ErrorCode(error) message.Code       { return message.Unknown }
func (d subDriver) Close() error                       { return nil }

// As offers the *Broker behind the driver.
func (d subDriver) As(target any) bool { return asBroker(d.b, target) }

// subscription is one subscriber of a group. Every field but the immutable
// ones is guarded by t.mu.
type subscription struct {
	t      *topic
	g      *group
	closed bool
	// rr is the partition a Receive looks at first: it turns with every
	// call, so no owned partition is starved.
	rr int
	// dels and pms are allocated deliverySlab at a time and handed out
	// one per delivery.
	dels []delivered
	pms  []pendingMsg
}

// delivered is a delivered message with its delivery facts, allocated
// together.
type delivered struct {
	msg message.Message
	d   message.Delivery
}

// deliverySlab is how many delivered messages and pending records a
// subscription allocates at once.
const deliverySlab = 64

// newPending returns a fresh pending record. Caller holds t.mu.
func (s *subscription) newPending() *pendingMsg {
	if len(s.pms) == 0 {
		s.pms = make([]pendingMsg, deliverySlab)
	}
	pm := &s.pms[0]
	s.pms = s.pms[1:]
	return pm
}

func (s *subscription) Receive(ctx context.Context, max int) ([]subscriber.Received, error) {
	t, g := s.t, s.g
	for {
		t.mu.Lock()
		if s.closed {
			t.mu.Unlock()
			return nil, message.Errorf(message.Closed, "memory: receive", "subscription is closed")
		}
		now := time.Now()
		var out []subscriber.Received
		var nextReady time.Time
		n := len(g.parts)
		// Redeliveries first, in the order they were nacked.
		for i := 0; i < n && len(out) < max; i++ {
			p := (s.rr + i) % n
			gp := &g.parts[p]
			if len(gp.retry) == 0 || !gp.owned(s) {
				continue
			}
			kept := gp.retry[:0]
			for _, off := range gp.retry {
				pm := g.pending[off]
				if len(out) < max && !pm.readyAt.After(now) {
					pm.attempts++
					out = append(out, s.deliver(off, p, pm, now))
					continue
				}
				if pm.readyAt.After(now) && (nextReady.IsZero() || pm.readyAt.Before(nextReady)) {
					nextReady = pm.readyAt
				}
				kept = append(kept, off)
			}
			clear(gp.retry[len(kept):])
			gp.retry = kept
		}
		// Then new messages of the owned partitions, merged in publish
		// order: a subscriber that owns every partition sees the topic's
		// order.
		if len(out) < max {
			out = s.receiveNew(out, max, now)
		}
		s.rr = (s.rr + 1) % n
		if len(out) > 0 {
			t.mu.Unlock()
			return out, nil
		}
		sig := t.waitCh()
		t.mu.Unlock()

		var tm *time.Timer
		var timer <-chan time.Time
		if !nextReady.IsZero() {
			tm = time.NewTimer(time.Until(nextReady))
			timer = tm.C
		}
		select {
		case <-sig:
		case <-timer:
		case <-ctx.Done():
		}
		if tm != nil {
			tm.Stop()
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// head is a partition's next new message, for merging.
type head struct {
	part int
	seq  int64
	off  int64
}

// receiveNew appends new messages of the partitions s owns, merged in
// publish order, until out holds max. Caller holds t.mu.
func (s *subscription) receiveNew(out []subscriber.Received, max int, now time.Time) []subscriber.Received {
	t, g := s.t, s.g
	var buf [16]head
	heads := buf[:0]
	for p := range g.parts {
		gp, pi := &g.parts[p], &t.parts[p]
		if gp.next < pi.end() && gp.owned(s) {
			heads = append(heads, head{part: p, seq: gp.next, off: pi.offset(gp.next)})
		}
	}
	for len(out) < max && len(heads) > 0 {
		best := 0
		for i := 1; i < len(heads); i++ {
			if heads[i].off < heads[best].off {
				best = i
			}
		}
		h := &heads[best]
		pm := s.newPending()
		pm.attempts, pm.part, pm.off = 1, h.part, h.off
		g.pending[h.off] = pm
		out = append(out, s.deliver(h.off, h.part, pm, now))
		pi := &t.parts[h.part]
		g.parts[h.part].next = h.seq + 1
		if h.seq++; h.seq < pi.end() {
			h.off = pi.offset(h.seq)
		} else {
			heads = slices.Delete(heads, best, best+1)
		}
	}
	return out
}

// deliver makes the delivered message at off, of partition p: a new
// Message sharing the retained one's Payload and Metadata, which no one
// modifies (see the package documentation). Caller holds t.mu.
func (s *subscription) deliver(off int64, p int, pm *pendingMsg, now time.Time) subscriber.Received {
	pm.owner = s
	pm.readyAt = time.Time{}
	s.g.parts[p].held++
	if len(s.dels) == 0 {
		s.dels = make([]delivered, deliverySlab)
	}
	dm := &s.dels[0]
	s.dels = s.dels[1:]
	m := &dm.msg
	*m = *s.t.log[off-s.t.base].msg
	dm.d = message.Delivery{
		Topic:       s.t.name,
		Group:       s.g.name,
		Attempt:     pm.attempts,
		Redelivered: pm.attempts > 1,
		Partition:   p,
		Offset:      off,
		BrokerID:    strconv.FormatInt(off, 10),
		ReceivedAt:  now,
	}
	message.ReceivedShared(m, &dm.d, nil)
	// A pointer as the AckID: boxing it allocates nothing.
	return subscriber.Received{Msg: m, AckID: pm}
}

// settle takes the in-flight message id out of s's hands, reporting
// whether s held it (false for a stale ack). Caller holds t.mu; it hands
// the partition over when that was the last message its old owner held.
func (s *subscription) settle(id *pendingMsg) bool {
	if s.g.pending[id.off] != id || id.owner != s {
		return false
	}
	id.owner = nil
	s.g.parts[id.part].held--
	s.g.handOver(id.part)
	return true
}

func (s *subscription) Ack(ctx context.Context, ids []any) error {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	for _, id := range ids {
		id := id.(*pendingMsg)
		if s.settle(id) {
			delete(s.g.pending, id.off)
		}
	}
	s.t.wake()
	return nil
}

func (s *subscription) Nack(ctx context.Context, ids []any, delay time.Duration) error {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	ready := time.Now().Add(delay)
	for _, id := range ids {
		id := id.(*pendingMsg)
		if s.settle(id) {
			id.readyAt = ready
			gp := &s.g.parts[id.part]
			gp.retry = append(gp.retry, id.off)
		}
	}
	s.t.wake()
	return nil
}

// Close hands every message this subscription holds in flight back to the
// group, in offset order per partition, for immediate redelivery (what a
// broker does when a consumer's connection drops), and gives its
// partitions to the group's other members.
func (s *subscription) Close() error {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	g := s.g
	g.members = slices.DeleteFunc(g.members, func(m *subscription) bool { return m == s })
	held := map[int][]int64{}
	now := time.Now()
	for off, pm := range g.pending {
		if pm.owner == s {
			pm.owner = nil
			pm.readyAt = now
			g.parts[pm.part].held--
			held[pm.part] = append(held[pm.part], off)
		}
	}
	for p, offs := range held {
		slices.Sort(offs)
		gp := &g.parts[p]
		// Merged with earlier nacks by offset, so the next owner
		// receives them in the partition's order.
		gp.retry = append(gp.retry, offs...)
		slices.Sort(gp.retry)
	}
	for p := range g.parts {
		if g.parts[p].owner == s {
			g.parts[p].owner = nil
		}
	}
	g.rebalance()
	s.t.wake()
	return nil
}
