package rabbitmq

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
)

// pubDriver is the publisher.Driver: each batch takes a channel in
// confirm mode from the pool, publishes every message (mandatory unless
// AllowUnroutable), then waits for all their confirms at once.
type pubDriver struct {
	c  *core
	rr atomic.Uint64 // round robin over partitions for keyless messages
}

// pubChan is one publisher channel, used by one batch at a time.
type pubChan struct {
	ch      *amqp.Channel
	gen     uint64
	returns chan amqp.Return // unbuffered: see waitConfirms
	closed  chan *amqp.Error
	// exchanges declared on this channel's connection.
	exchanges map[string]bool
}

// chanPool keeps idle publisher channels of the current connection.
type chanPool struct {
	c    *core
	mu   sync.Mutex
	idle []*pubChan
}

func (p *chanPool) get(ctx context.Context) (*pubChan, error) {
	const op = "rabbitmq: publish"
	gen, _ := p.c.current()
	p.mu.Lock()
	for len(p.idle) > 0 {
		pc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if pc.gen == gen && !pc.ch.IsClosed() {
			p.mu.Unlock()
			return pc, nil
		}
		_ = pc.ch.Close()
	}
	p.mu.Unlock()
	ch, gen, err := p.c.channel(ctx)
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, message.Wrap(message.Unavailable, op, err)
	}
	return &pubChan{
		ch: ch, gen: gen,
		returns:   ch.NotifyReturn(make(chan amqp.Return)),
		closed:    ch.NotifyClose(make(chan *amqp.Error, 1)),
		exchanges: map[string]bool{},
	}, nil
}

// put returns pc to the pool, or closes it when it is broken or the pool
// is full.
func (p *chanPool) put(pc *pubChan) {
	gen, _ := p.c.current()
	p.mu.Lock()
	if pc.gen == gen && !pc.ch.IsClosed() && len(p.idle) < p.c.cfg.PublisherChannels {
		p.idle = append(p.idle, pc)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	_ = pc.ch.Close()
}

func (p *chanPool) closeAll() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, pc := range idle {
		_ = pc.ch.Close()
	}
}

// routingKey returns the partition routing key of m: its key's partition,
// or the next partition in turn for a message without a key.
func (d *pubDriver) routingKey(m *message.Message) string {
	n := d.c.cfg.Partitions
	if m.Key == "" {
		return RoutingKey(int(d.rr.Add(1) % uint64(n)))
	}
	return RoutingKey(Partition(m.Key, n))
}

func (d *pubDriver) SendBatch(ctx context.Context, topic string, msgs []*message.Message) error {
	const op = "rabbitmq: publish"
	if err := checkTopic(op, topic); err != nil {
		return err
	}
	pc, err := d.c.pool.get(ctx)
	if err != nil {
		return err
	}
	if !pc.exchanges[topic] {
		if err := declareExchange(pc.ch, topic); err != nil {
			_ = pc.ch.Close()
			return declareError(op, "exchange "+topic, err)
		}
		pc.exchanges[topic] = true
	}
	mandatory := !d.c.cfg.AllowUnroutable
	dcs := make([]*amqp.DeferredConfirmation, len(msgs))
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, topic, d.routingKey(m), mandatory, false, publishing(m))
		if err != nil {
			// The channel failed: the rest would arrive out of order.
			err = sendError(op, err, pc)
			for j := i; j < len(msgs); j++ {
				errs[j] = err
			}
			break
		}
		dcs[i] = dc
	}
	if err := d.waitConfirms(ctx, pc, topic, msgs, dcs, errs); err != nil {
		return err
	}
	d.c.pool.put(pc)
	return outcome(errs)
}

// waitConfirms waits for the confirm of every published message, noting
// the messages that the broker returned as unroutable. The return channel
// is unbuffered and read here, while waiting: amqp091-go hands a return to
// it before it processes the confirm that follows (the broker sends
// basic.return before basic.ack), so when a message's confirm is in, its
// return, if any, has been received. When ctx ends first, the channel is
// left to a goroutine that drains it until every confirm is in.
func (d *pubDriver) waitConfirms(ctx context.Context, pc *pubChan, topic string, msgs []*message.Message, dcs []*amqp.DeferredConfirmation, errs []error) error {
	const op = "rabbitmq: publish"
	next := 0 // returns come in publish order: match from here
	onReturn := func(r amqp.Return) {
		for j := next; j < len(msgs); j++ {
			if returnedID(r) == msgs[j].ID {
				errs[j] = message.Errorf(message.NotFound, op,
					"no queue received the message on topic %q (routing key %s): no group of the topic exists yet; subscribe or call DeclareGroup before publishing (%d %s)",
					topic, r.RoutingKey, r.ReplyCode, r.ReplyText)
				next = j + 1
				return
			}
		}
	}
	for i, dc := range dcs {
		if dc == nil {
			continue
		}
	wait:
		for {
			select {
			case <-dc.Done():
				break wait
			case r, ok := <-pc.returns:
				if !ok {
					pc.returns = nil
					continue
				}
				onReturn(r)
			case <-ctx.Done():
				d.abandon(pc, dcs[i:])
				return ctx.Err()
			}
		}
		if !dc.Acked() && errs[i] == nil {
			if pc.ch.IsClosed() {
				errs[i] = sendError(op, amqp.ErrClosed, pc)
			} else {
				errs[i] = message.Errorf(message.Unavailable, op, "the broker nacked the message (not stored)")
			}
		}
	}
	return nil
}

// abandon leaves pc to a goroutine that receives its returns until every
// pending confirm is in, then puts it back: an unread return would block
// amqp091-go's reader, and with it the whole connection.
func (d *pubDriver) abandon(pc *pubChan, pending []*amqp.DeferredConfirmation) {
	d.c.bg.Go(func() {
		for _, dc := range pending {
			if dc == nil {
				continue
			}
			for waiting := true; waiting; {
				select {
				case <-dc.Done():
					waiting = false
				case _, ok := <-pc.returns:
					if !ok {
						pc.returns = nil
					}
				}
			}
		}
		d.c.pool.put(pc)
	})
}

func returnedID(r amqp.Return) string {
	if r.MessageId != "" {
		return r.MessageId
	}
	return headerString(r.Headers[hdrID])
}

// sendError codes an error of a publish: the channel's close reason when
// the broker closed it, Unavailable otherwise.
func sendError(op string, err error, pc *pubChan) error {
	select {
	case ae, ok := <-pc.closed:
		if ok && ae != nil {
			pc.closed = nil
			code := ErrorCode(ae)
			if code == message.Unknown || code == message.OK {
				code = message.Unavailable
			}
			return message.Errorf(code, op, "channel closed: %w", ae)
		}
	default:
	}
	if errors.Is(err, amqp.ErrClosed) {
		return message.Errorf(message.Unavailable, op, "connection or channel lost before the broker confirmed the message: %w", err)
	}
	return coded(op, err)
}

// outcome turns per-message errors into SendBatch's error.
func outcome(errs []error) error {
	failed := 0
	same := true
	for _, err := range errs {
		if err == nil {
			continue
		}
		failed++
		same = same && ErrorCode(err) == ErrorCode(errs[0])
	}
	switch {
	case failed == 0:
		return nil
	case failed == len(errs) && same:
		return errs[0]
	}
	return &publisher.BatchError{Errs: errs}
}

func (d *pubDriver) Capabilities() message.Capabilities { return d.c.caps }
func (d *pubDriver) ErrorCode(err error) message.Code   { return ErrorCode(err) }

// Close does nothing: the client's Close hook closes the shared connection.
func (d *pubDriver) Close() error { return nil }

// As offers **amqp091.Connection.
func (d *pubDriver) As(target any) bool { return d.c.as(target) }
