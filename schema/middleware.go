package schema

import (
	"context"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
)

// ValidateMiddleware returns subscriber middleware that validates each
// message's payload against the schema its metadata names
// (message.KeyType, message.KeySchemaVersion; no version is v1). A
// message newer than the newest version r knows is validated against
// that newest one, as FORWARD compatibility promises it can be. An
// invalid message, or one with a malformed version, fails with a
// message.PermanentError whose text gives the reason, so that
// middleware.DLQ dead-letters it with the reason in
// message.KeyDLQError; the handler is not called. A message with no type,
// or a type r has no schema of, goes to the handler unchecked.
//
// Place it inside DLQ: DLQ → ValidateMiddleware → UpcastMiddleware →
// handler.
func ValidateMiddleware(r *Registry) subscriber.Middleware {
	return func(next subscriber.Handler) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			if err := r.ValidateMessage(m); err != nil {
				return message.PermanentError(err)
			}
			return next(ctx, m)
		}
	}
}

// UpcastMiddleware returns subscriber middleware that brings each
// message to its type's newest version through u's chain (message.KeyType
// names the type), so the handler sees only the newest version. The
// handler gets a copy of the message (same ID, Key, Time and delivery
// facts) with the new payload and metadata; the received message is not
// changed (deliveries may share their payload). A failed upcast is a
// permanent error: dead-lettered by DLQ.
func UpcastMiddleware(u *Upcasters) subscriber.Middleware {
	return func(next subscriber.Handler) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			typ := m.Metadata[message.KeyType]
			if typ == "" {
				return next(ctx, m)
			}
			data, md, changed, err := u.upcast(typ, m.Metadata, m.Payload)
			if err != nil {
				return message.PermanentError(err)
			}
			if !changed {
				return next(ctx, m)
			}
			cp := *m
			cp.Payload, cp.Metadata = data, md
			return next(ctx, &cp)
		}
	}
}

// ValidateMessage validates m's payload against the schema its metadata
// names, as ValidateMiddleware does: nil for a message with no type or a
// type r has no schema of. It fits bus.Options.Validate. Errors:
// InvalidArgument with the reason.
func (r *Registry) ValidateMessage(m *message.Message) error {
	s, ok, err := r.lookup(m.Metadata)
	if err != nil || !ok {
		return err
	}
	return s.Validate(m.Payload)
}

// Publisher validates messages before handing them to another publisher
// (a *publisher.Publisher, or anything with its Publish method): a call
// with an invalid message sends nothing and fails with InvalidArgument.
// It leaves the publisher's own path untouched; validation is opt-in by
// publishing through it.
type Publisher struct {
	next middleware.Publisher
	reg  *Registry
}

// NewPublisher returns a Publisher validating against r before next.
func NewPublisher(next middleware.Publisher, r *Registry) *Publisher {
	return &Publisher{next: next, reg: r}
}

// Publish validates every message against the schema its metadata names
// (as ValidateMiddleware does) and then publishes them all with next.
// Errors: InvalidArgument naming the first invalid message's index and
// ID and the reason, with nothing sent; else next's error.
func (p *Publisher) Publish(ctx context.Context, topic string, msgs ...*message.Message) error {
	for i, m := range msgs {
		if m == nil {
			continue // next reports it
		}
		if err := p.reg.ValidateMessage(m); err != nil {
			return message.Errorf(message.InvalidArgument, "schema: publish", "message %d (id %q) to %q, nothing sent: %w", i, m.ID, topic, err)
		}
	}
	return p.next.Publish(ctx, topic, msgs...)
}
