package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/polybus/polybus/bench"
	"github.com/polybus/polybus/message"
)

// RawRabbitMQ is amqp091-go tuned as the polybus adapter uses it: a
// durable topic exchange per topic and a durable quorum queue per group
// (named topic.group) bound to it with "#"; a channel in confirm mode per
// publisher on a publishing connection, persistent mandatory messages
// with a message ID (as polybus sets), the key as the routing key, every
// confirm of a publish call awaited (all outstanding at once); a channel
// per consumer on a consuming connection with QoS prefetch, manual acks,
// one Ack per message after the handler.
type RawRabbitMQ struct {
	pubConn, subConn *amqp.Connection
	prefetch         int

	mu       sync.Mutex
	declared map[string]bool
}

// NewRawRabbitMQ dials an amqp:// URL twice (publishing, consuming).
func NewRawRabbitMQ(url string, prefetch int) (*RawRabbitMQ, error) {
	pc, err := amqp.Dial(url)
	if err != nil {
		return nil, fmt.Errorf("raw rabbitmq: %w", err)
	}
	sc, err := amqp.Dial(url)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("raw rabbitmq: %w", err)
	}
	return &RawRabbitMQ{pubConn: pc, subConn: sc, prefetch: prefetch, declared: map[string]bool{}}, nil
}

// declare declares topic's exchange and, with a group, its queue.
func (r *RawRabbitMQ) declare(topic, group string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := topic + "\x00" + group
	if r.declared[k] {
		return nil
	}
	ch, err := r.pubConn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(topic, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return err
	}
	if group != "" {
		q := topic + "." + group
		if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); err != nil {
			return err
		}
		if err := ch.QueueBind(q, "#", topic, false, nil); err != nil {
			return err
		}
	}
	r.declared[k] = true
	return nil
}

func (r *RawRabbitMQ) Publisher(ctx context.Context, topic string) (bench.Publisher, error) {
	if err := r.declare(topic, ""); err != nil {
		return nil, err
	}
	ch, err := r.pubConn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, err
	}
	return &amqpPub{ch: ch, topic: topic}, nil
}

type amqpPub struct {
	ch    *amqp.Channel
	topic string
	dcs   []*amqp.DeferredConfirmation
}

func (p *amqpPub) Publish(ctx context.Context, msgs []bench.Message) error {
	p.dcs = p.dcs[:0]
	for _, m := range msgs {
		dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, p.topic, m.Key, true, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, MessageId: message.NewID(), Body: m.Payload})
		if err != nil {
			return err
		}
		p.dcs = append(p.dcs, dc)
	}
	for _, dc := range p.dcs {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("raw rabbitmq: message nacked by the broker")
		}
	}
	return nil
}

func (p *amqpPub) Close(context.Context) error { return p.ch.Close() }

func (r *RawRabbitMQ) Subscribe(ctx context.Context, topic, group string, consumers int, handle func([]byte)) (bench.Subscription, error) {
	if err := r.declare(topic, group); err != nil {
		return nil, err
	}
	s, ctx := bench.NewConsumers(ctx)
	var chans []*amqp.Channel
	s.OnClose = func() {
		for _, ch := range chans {
			ch.Close()
		}
	}
	for range consumers {
		ch, err := r.subConn.Channel()
		if err != nil {
			s.Close(ctx)
			return nil, err
		}
		chans = append(chans, ch)
		if err := ch.Qos(r.prefetch, 0, false); err != nil {
			s.Close(ctx)
			return nil, err
		}
		tag := "bench-" + message.NewID()
		dels, err := ch.Consume(topic+"."+group, tag, false, false, false, false, nil)
		if err != nil {
			s.Close(ctx)
			return nil, err
		}
		s.Go(func() {
			for {
				select {
				case d, ok := <-dels:
					if !ok {
						if ctx.Err() == nil {
							s.Fail(errors.New("raw rabbitmq: deliveries closed"))
						}
						return
					}
					handle(d.Body)
					if err := d.Ack(false); err != nil {
						s.Fail(err)
					}
				case <-ctx.Done():
					// Unhandled deliveries are requeued when the channel
					// closes.
					ch.Cancel(tag, false)
					return
				}
			}
		})
	}
	return s, nil
}

func (r *RawRabbitMQ) Close(context.Context) error {
	return errors.Join(r.pubConn.Close(), r.subConn.Close())
}
