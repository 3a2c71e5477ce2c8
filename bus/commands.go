package bus

import (
	"context"
	"errors"
	"strconv"

	"github.com/polybus/polybus/message"
)

// Send sends command to the one service that handles its type. It
// returns nil when the broker durably accepted it; the handler runs
// later (WithReplyTo asks for its outcome).
//
// A command that no service handles is refused where that can be told:
// with a Registry, Send looks the type up (a type found once is
// remembered by this Bus) and fails with NotFound when no service ever
// registered it; without one, a broker that reports unroutable messages
// (RabbitMQ) makes Publish fail with NotFound, which Send returns as such.
// Elsewhere the command waits on its topic for a handler to start.
// Errors: InvalidArgument for a type without a usable name or a value
// that does not encode; NotFound as above; the Registry's and publisher's
// errors.
func Send[C any](ctx context.Context, b *Bus, command C, opts ...PublishOption) error {
	const op = "bus: send"
	typ, err := TypeName[C]()
	if err != nil {
		return err
	}
	if b.isClosed() {
		return message.Errorf(message.Closed, op, "bus is closed")
	}
	if err := b.checkHandled(ctx, typ); err != nil {
		return err
	}
	m, err := b.encode(ctx, op, KindCommand, typ, command, opts)
	if err != nil {
		return err
	}
	err = b.pub.Publish(ctx, b.Topic(KindCommand, typ), m)
	if errors.Is(err, message.ErrNotFound) {
		return message.Errorf(message.NotFound, op, "no service handles command %s: %w", typ, err)
	}
	return err
}

// checkHandled asks the Registry, when there is one, whether a service
// registered typ.
func (b *Bus) checkHandled(ctx context.Context, typ string) error {
	if b.opts.Registry == nil {
		return nil
	}
	b.mu.Lock()
	known := b.known[typ]
	b.mu.Unlock()
	if known {
		return nil
	}
	if _, err := b.opts.Registry.Lookup(ctx, typ); err != nil {
		return err
	}
	b.mu.Lock()
	b.known[typ] = true
	b.mu.Unlock()
	return nil
}

// HandleCommand registers h as this service's handler of commands of
// type C. All handlers of C, in every process, share one consumer group
// (the type's name), so each command is handled once. h's ctx carries the
// command's correlation and message (MessageFrom). nil acks; an error
// nacks, so the command is redelivered, except a permanent one
// (message.PermanentError), which is acked. When the command asks for a
// reply (WithReplyTo), the outcome is published there after h returned
// nil ("ok") or a permanent error ("error", with the error's text and
// code); the reply's ID is derived from the command's, so a redelivered
// command's repeated reply is one message where the broker dedupes IDs.
// Errors: InvalidArgument without Options.Service, for a nil h, for a
// second handler of C in this service, or after Start.
func HandleCommand[C any](b *Bus, h func(ctx context.Context, command C) error) error {
	const op = "bus: handle command"
	typ, err := TypeName[C]()
	if err != nil {
		return err
	}
	if h == nil || b.opts.Service == "" {
		return message.Errorf(message.InvalidArgument, op, "command %s: want Options.Service and a handler", typ)
	}
	return b.register(&registration{kind: KindCommand, typ: typ, topic: b.Topic(KindCommand, typ), group: typ,
		h: func(ctx context.Context, m *message.Message) error {
			cmd, err := decode[C](b, op, typ, m)
			if err == nil {
				err = h(ContextWithMessage(ctx, m), cmd)
			}
			if err != nil && !message.IsPermanent(err) {
				return err
			}
			if m.Metadata.Get(KeyReplyTo) == "" {
				return err
			}
			return b.reply(ctx, m, nil, err)
		}})
}

// reply publishes the outcome of req to its KeyReplyTo topic: payload
// and "ok" for a nil herr, else "error" with herr's text and code.
func (b *Bus) reply(ctx context.Context, req *message.Message, payload []byte, herr error) error {
	r := &message.Message{ID: req.ID + ".reply", Key: req.Key, Payload: payload, Metadata: message.Metadata{
		KeyKind: KindReply, KeyType: req.Metadata.Get(KeyType), KeyReplyFor: req.ID, KeyOutcome: "ok",
		KeyContentType: b.ctype,
	}}
	if b.ctype == "" {
		delete(r.Metadata, KeyContentType)
	}
	if herr != nil {
		r.Metadata[KeyOutcome] = "error"
		r.Metadata[KeyError] = herr.Error()
		code := message.CodeOf(herr)
		if code == message.Permanent {
			// The cause's own code says more than the mark.
			var e *message.Error
			if errors.As(herr, &e) {
				code = e.Code
			}
		}
		r.Metadata[KeyErrorCode] = strconv.Itoa(int(code))
	}
	Stamp(ContextWithMessage(ctx, req), r)
	return b.pub.Publish(ctx, req.Metadata.Get(KeyReplyTo), r)
}

// ReplyError returns the error that an "error" reply carries: a
// *message.Error with the handler error's code (Unknown when it had
// none) and text; nil for an "ok" reply.
func ReplyError(op string, r *message.Message) error {
	if r.Metadata.Get(KeyOutcome) != "error" {
		return nil
	}
	code, err := strconv.Atoi(r.Metadata.Get(KeyErrorCode))
	if err != nil || code <= int(message.OK) {
		code = int(message.Unknown)
	}
	return message.Errorf(message.Code(code), op, "%s", r.Metadata.Get(KeyError))
}
