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
	g := t.group(cfg.Group, start)
	t.mu.Unlock()
	return &subscription{t: t, g: g}, nil
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
		// Redeliveries first, in the order they were nacked.
		kept := g.retry[:0]
		for _, off := range g.retry {
			p := g.pending[off]
			if len(out) < max && !p.readyAt.After(now) {
				p.attempts++
				out = append(out, s.deliver(off, p, now))
				continue
			}
			if p.readyAt.After(now) && (nextReady.IsZero() || p.readyAt.Before(nextReady)) {
				nextReady = p.readyAt
			}
			kept = append(kept, off)
		}
		clear(g.retry[len(kept):])
		g.retry = kept
		for len(out) < max && g.next < t.end() {
			off := g.next
			g.next++
			p := &pendingMsg{attempts: 1}
			g.pending[off] = p
			out = append(out, s.deliver(off, p, now))
		}
		if len(out) > 0 {
			t.mu.Unlock()
			return out, nil
		}
		sig := t.signal
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

// deliver makes the delivered copy of the message at off. Caller holds t.mu.
func (s *subscription) deliver(off int64, p *pendingMsg, now time.Time) subscriber.Received {
	p.owner = s
	p.readyAt = time.Time{}
	m := s.t.log[off-s.t.base].Clone()
	message.Received(m, message.Delivery{
		Topic:       s.t.name,
		Group:       s.g.name,
		Attempt:     p.attempts,
		Redelivered: p.attempts > 1,
		Partition:   -1,
		Offset:      off,
		BrokerID:    strconv.FormatInt(off, 10),
		ReceivedAt:  now,
	}, nil)
	return subscriber.Received{Msg: m, AckID: off}
}

func (s *subscription) Ack(ctx context.Context, ids []any) error {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	for _, id := range ids {
		off := id.(int64)
		if p := s.g.pending[off]; p != nil && p.owner == s {
			delete(s.g.pending, off)
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
		off := id.(int64)
		if p := s.g.pending[off]; p != nil && p.owner == s {
			p.owner = nil
			p.readyAt = ready
			s.g.retry = append(s.g.retry, off)
		}
	}
	s.t.wake()
	return nil
}

// Close hands every message this subscription holds in flight back to the
// group, in offset order, for immediate redelivery: what a broker does when
// a consumer's connection drops.
func (s *subscription) Close() error {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var held []int64
	now := time.Now()
	for off, p := range s.g.pending {
		if p.owner == s {
			p.owner = nil
			p.readyAt = now
			held = append(held, off)
		}
	}
	slices.Sort(held)
	s.g.retry = append(s.g.retry, held...)
	s.t.wake()
	return nil
}
