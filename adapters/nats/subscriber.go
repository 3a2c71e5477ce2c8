package nats

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// subDriver is the subscriber.Driver: one durable pull consumer per
// (topic, group), consumed with nats.go's Consume into a buffer that
// Receive reads.
type subDriver struct{ c *core }

func (d *subDriver) Open(ctx context.Context, topic string, cfg subscriber.OpenConfig) (subscriber.Subscription, error) {
	const op = "nats: subscribe"
	if err := checkTopic(op, topic); err != nil {
		return nil, err
	}
	if err := checkGroup(op, cfg.Group); err != nil {
		return nil, err
	}
	prefetch := max(cfg.Prefetch, 1)
	ackWait := cfg.AckDeadline
	if ackWait <= 0 {
		ackWait = d.c.cfg.AckWait
	}
	layout, err := d.c.streams.ensure(ctx, topic)
	if err != nil {
		return nil, err
	}
	if layout.parts > 0 {
		return openPartitioned(ctx, d.c, topic, cfg, layout, prefetch, ackWait)
	}
	s := &subscription{
		c: d.c, topic: topic, group: cfg.Group, start: cfg.Start,
		prefetch: prefetch, ackWait: ackWait,
		msgs: make(chan jetstream.Msg, prefetch),
		errs: make(chan error, 1),
	}
	if err := s.open(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (d *subDriver) Capabilities() message.Capabilities { return d.c.caps }
func (d *subDriver) ErrorCode(err error) message.Code   { return ErrorCode(err) }

// Close does nothing: the client's Close hook closes the shared connection.
func (d *subDriver) Close() error { return nil }

// As offers **nats.Conn, *jetstream.JetStream and, for embedded://,
// **server.Server.
func (d *subDriver) As(target any) bool { return d.c.as(target) }

// subscription is one Subscribe call's consumer. nats.go's Consume pulls
// up to prefetch messages ahead and hands them to a callback, which puts
// them in msgs; Receive takes them from there. The consumer's MaxAckPending
// is prefetch too, so the server never has more than prefetch messages
// of the group out unacked, and the callback never waits on a full buffer
// in a group of one subscriber.
type subscription struct {
	c        *core
	topic    string
	group    string
	start    subscriber.Start
	prefetch int
	ackWait  time.Duration

	stream string
	// cur is the running Consume, nil when consuming must (re)start.
	// Receive's goroutine owns it, and Close after the last Receive.
	cur *consuming

	msgs chan jetstream.Msg
	errs chan error // the latest error of Consume; dropped when one waits
}

// consuming is one run of nats.go's Consume.
type consuming struct {
	cc jetstream.ConsumeContext
	// halt is closed when the run is stopped: its callback then hands
	// messages back to the server instead of to msgs.
	halt chan struct{}
}

// open finds or creates the stream and the consumer and starts consuming.
func (s *subscription) open(ctx context.Context) error {
	const op = "nats: subscribe"
	layout, err := s.c.streams.ensure(ctx, s.topic)
	if err != nil {
		return err
	}
	stream := layout.name
	cons, err := s.consumer(ctx, stream)
	if err != nil {
		return coded(op, err)
	}
	cur := &consuming{halt: make(chan struct{})}
	cur.cc, err = cons.Consume(func(m jetstream.Msg) { s.deliver(cur, m) },
		jetstream.PullMaxMessages(s.prefetch),
		// nats.go re-pulls when it misses two heartbeats in a row. Its
		// pull accounting can drift from the server's (seen with small
		// batches under load: the server holds no request, the client
		// thinks one is open); the default heartbeat (half the 30s
		// expiry) would stall the subscription for 30s each time.
		jetstream.PullHeartbeat(time.Second),
		jetstream.ConsumeErrHandler(s.consumeError),
	)
	if err != nil {
		return coded(op, err)
	}
	s.stream, s.cur = stream, cur
	return nil
}

// halt stops the running Consume, if any: it drains the messages that
// nats.go has received for it and waits (a bounded time) until its callback
// has returned for good, then hands back, at once, every message that
// Receive has not returned. The pull request dies with the subscription, so
// the server routes no message to it afterwards: a nack that follows (the
// portable layer's drain) reaches another subscriber instead of this one.
func (s *subscription) halt() {
	cur := s.cur
	if cur == nil {
		return
	}
	s.cur = nil
	close(cur.halt)
	if up, _ := s.c.state.get(); up {
		cur.cc.Drain()
	} else {
		// Nothing can be handed back while disconnected: do not wait for
		// a drain that needs the server.
		cur.cc.Stop()
	}
	t := time.NewTimer(5 * time.Second)
	select {
	case <-cur.cc.Closed():
	case <-t.C:
		cur.cc.Stop()
	}
	t.Stop()
	handedBack := false
	for {
		select {
		case m := <-s.msgs:
			_ = m.Nak()
			handedBack = true
			continue
		default:
		}
		break
	}
	if handedBack {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.c.nc.FlushWithContext(ctx)
		cancel()
	}
}

// consumer returns the group's durable consumer, creating it when it does
// not exist. An existing one keeps its start position; its ack wait and
// max ack pending follow the subscription that opened it last.
func (s *subscription) consumer(ctx context.Context, stream string) (jetstream.Consumer, error) {
	js := s.c.js
	name := consumerName(s.group, s.topic, stream == streamName(s.topic))
	cons, err := js.Consumer(ctx, stream, name)
	if err == nil {
		cfg := cons.CachedInfo().Config
		if cfg.AckWait == s.ackWait && cfg.MaxAckPending == s.prefetch {
			return cons, nil
		}
		cfg.AckWait, cfg.MaxAckPending = s.ackWait, s.prefetch
		return js.UpdateConsumer(ctx, stream, cfg)
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	deliver := jetstream.DeliverAllPolicy
	if s.start == subscriber.Latest {
		deliver = jetstream.DeliverNewPolicy
	}
	cons, err = js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "polybus group " + s.group + " of topic " + s.topic,
		DeliverPolicy: deliver,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.ackWait,
		MaxDeliver:    -1,
		MaxAckPending: s.prefetch,
		FilterSubject: s.topic,
	})
	if errors.Is(err, jetstream.ErrConsumerExists) {
		// Created by another subscriber meanwhile.
		return js.Consumer(ctx, stream, name)
	}
	return cons, err
}

// deliver is Consume's callback, called by one nats.go goroutine at a time.
func (s *subscription) deliver(cur *consuming, m jetstream.Msg) {
	select {
	case <-cur.halt:
		// Halted: hand it back now rather than after the ack wait.
		_ = m.Nak()
		return
	default:
	}
	select {
	case s.msgs <- m:
	case <-cur.halt:
		_ = m.Nak()
	}
}

// consumeError keeps Consume's latest error for Receive. A missed
// heartbeat is left out: nats.go pulls again by itself, and a lost
// connection shows in connState.
func (s *subscription) consumeError(_ jetstream.ConsumeContext, err error) {
	if errors.Is(err, jetstream.ErrNoHeartbeat) {
		return
	}
	select {
	case s.errs <- err:
	default:
	}
}

func (s *subscription) Receive(ctx context.Context, max int) ([]subscriber.Received, error) {
	return s.receive(ctx, max, 0)
}

// receive is Receive; with idle > 0 it also returns nothing, without
// stopping, once idle has passed with no message.
func (s *subscription) receive(ctx context.Context, max int, idle time.Duration) ([]subscriber.Received, error) {
	const op = "nats: receive"
	if s.cur == nil {
		if err := s.open(ctx); err != nil {
			return nil, unavailable(op, err)
		}
	}
	var first jetstream.Msg
	select {
	case first = <-s.msgs:
	default:
		up, changed := s.c.state.get()
		if !up {
			return nil, message.Errorf(message.Unavailable, op, "disconnected from the NATS server; waiting to reconnect")
		}
		var idled <-chan time.Time
		if idle > 0 {
			t := time.NewTimer(idle)
			defer t.Stop()
			idled = t.C
		}
		select {
		case <-idled:
			return nil, nil
		case first = <-s.msgs:
		case <-changed:
			return nil, message.Errorf(message.Unavailable, op, "disconnected from the NATS server; waiting to reconnect")
		case err := <-s.errs:
			return nil, s.consumeFailed(err)
		case <-s.cur.cc.Closed():
			s.halt()
			return nil, message.Errorf(message.Unavailable, op, "consuming %s stopped; restarting it", s.topic)
		case <-ctx.Done():
			// The portable layer ends Receive's context only to stop the
			// subscription: stop pulling now, before it nacks what it has
			// not handled. A later Receive would start again.
			s.halt()
			return nil, ctx.Err()
		}
	}
	out := make([]subscriber.Received, 0, min(max, 1+len(s.msgs)))
	out = append(out, s.received(first))
	for len(out) < max {
		select {
		case m := <-s.msgs:
			out = append(out, s.received(m))
		default:
			return out, nil
		}
	}
	return out, nil
}

// consumeFailed turns an error of Consume into Receive's error. Errors
// after which the consumer cannot go on (it or its stream is gone, the
// request was refused) stop it, so that the next Receive opens it again:
// re-creating the stream and the consumer where they were lost.
func (s *subscription) consumeFailed(err error) error {
	const op = "nats: receive"
	switch {
	case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound),
		errors.Is(err, jetstream.ErrBadRequest), errors.Is(err, natsgo.ErrNoResponders),
		errors.Is(err, jetstream.ErrConnectionClosed):
		s.halt()
		s.c.streams.forget(s.topic)
	}
	return unavailable(op, err)
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

// received makes the polybus message of m.
func (s *subscription) received(m jetstream.Msg) subscriber.Received {
	return subscriber.Received{Msg: receivedMsg(m, s.topic, s.group, -1), AckID: m}
}

// receivedMsg makes the polybus message of m, received for group from
// partition (-1: unpartitioned).
func receivedMsg(m jetstream.Msg, topic, group string, partition int) *message.Message {
	now := time.Now()
	md, err := m.Metadata()
	if err != nil {
		md = nil
	}
	msg := decode(m.Data(), m.Headers(), md)
	d := message.Delivery{Topic: topic, Group: group, Partition: partition, ReceivedAt: now}
	if md != nil {
		d.Attempt = int(md.NumDelivered)
		d.Redelivered = md.NumDelivered > 1
		d.Offset = int64(md.Sequence.Stream)
		d.BrokerID = strconv.FormatUint(md.Sequence.Stream, 10)
	}
	return message.Received(msg, d, func(target any) bool {
		if t, ok := target.(*jetstream.Msg); ok {
			*t = m
			return true
		}
		return false
	})
}

func (s *subscription) Ack(ctx context.Context, ids []any) error {
	return s.c.ack(ctx, jsMsgs(ids))
}

func (s *subscription) Nack(ctx context.Context, ids []any, delay time.Duration) error {
	return s.c.nack(ctx, jsMsgs(ids), delay)
}

func jsMsgs(ids []any) []jetstream.Msg {
	msgs := make([]jetstream.Msg, len(ids))
	for i, id := range ids {
		msgs[i] = id.(jetstream.Msg)
	}
	return msgs
}

// ack acks every message, then waits until the server has them: a flush,
// one round trip for the batch; with ConfirmAcks, each message's double-ack
// reply instead, all in flight at once.
func (c *core) ack(ctx context.Context, msgs []jetstream.Msg) error {
	if !c.cfg.ConfirmAcks {
		return c.settle(ctx, msgs, "nats: ack", jetstream.Msg.Ack)
	}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, m := range msgs {
		wg.Go(func() {
			if err := m.DoubleAck(ctx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return coded("nats: ack", errors.Join(errs...))
}

// nack asks for redelivery, after delay when it is positive, then waits
// for the server to have the naks (a flush).
func (c *core) nack(ctx context.Context, msgs []jetstream.Msg, delay time.Duration) error {
	nak := jetstream.Msg.Nak
	if delay > 0 {
		nak = func(m jetstream.Msg) error { return m.NakWithDelay(delay) }
	}
	return c.settle(ctx, msgs, "nats: nack", nak)
}

// settle sends f for every message and flushes the connection.
func (c *core) settle(ctx context.Context, msgs []jetstream.Msg, op string, f func(jetstream.Msg) error) error {
	if len(msgs) == 0 {
		return nil
	}
	var errs []error
	for _, m := range msgs {
		if err := f(m); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := c.nc.FlushWithContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return coded(op, errors.Join(errs...))
}

// Close stops consuming and hands back, at once, the messages that Consume
// had pulled and Receive not yet returned.
func (s *subscription) Close() error {
	s.halt()
	return nil
}
