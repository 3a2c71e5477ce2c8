package bus

import (
	"context"
	"errors"

	"github.com/polybus/polybus/message"
)

// Publish publishes event to the topic of its type (Topic("event",
// TypeName[E]())). It returns nil when the broker durably accepted it.
// Zero handlers is a valid number for an event: where the broker reports
// that no group receives the topic (RabbitMQ's ErrNotFound), Publish
// still returns nil. Errors: InvalidArgument for a type without a usable
// name or a value that does not encode; the publisher's errors.
func Publish[E any](ctx context.Context, b *Bus, event E, opts ...PublishOption) error {
	const op = "bus: publish"
	typ, err := TypeName[E]()
	if err != nil {
		return err
	}
	if b.isClosed() {
		return message.Errorf(message.Closed, op, "bus is closed")
	}
	m, err := b.encode(ctx, op, KindEvent, typ, event, opts)
	if err != nil {
		return err
	}
	if err := b.pub.Publish(ctx, b.Topic(KindEvent, typ), m); err != nil && !errors.Is(err, message.ErrNotFound) {
		return err
	}
	return nil
}

// Subscribe registers h for events of type E in group: each event is
// handled once per group (by one subscriber of the group), so several
// groups each get every event. The group name is the consumer group's
// own: give each kind of handler its own ("billing", "shipping").
// Handlers run from Start; h's ctx carries the correlation of the event
// (CorrelationID) and the event's message (MessageFrom), and what h
// publishes on the bus continues the flow. nil acks; an error nacks (the
// event is redelivered); a message that does not decode is
// message.PermanentError. Errors: InvalidArgument for an empty group, a
// nil h, a second handler of E in group, or a call after Start.
func Subscribe[E any](b *Bus, group string, h func(ctx context.Context, event E) error) error {
	const op = "bus: subscribe"
	typ, err := TypeName[E]()
	if err != nil {
		return err
	}
	if h == nil || group == "" {
		return message.Errorf(message.InvalidArgument, op, "event %s: want a group and a handler", typ)
	}
	return b.register(&registration{kind: KindEvent, typ: typ, topic: b.Topic(KindEvent, typ), group: group,
		h: func(ctx context.Context, m *message.Message) error {
			ev, err := decode[E](b, op, typ, m)
			if err != nil {
				return err
			}
			return h(ContextWithMessage(ctx, m), ev)
		}})
}
