package middleware

import (
	"context"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// CorrelationConfig configures Correlation. It has no fields yet; it keeps
// the constructor shape of this package uniform.
type CorrelationConfig struct{}

// CorrelationInfo is the correlation of the message being handled.
type CorrelationInfo struct {
	// CorrelationID names the flow: the consumed message's
	// message.KeyCorrelationID, or its ID when it has none (it starts a
	// flow).
	CorrelationID string
	// MessageID is the consumed message's ID: the causation ID of every
	// message published while handling it.
	MessageID string
	// CausationID is the consumed message's own message.KeyCausationID,
	// "" when it has none.
	CausationID string
}

type correlationKey struct{}

// Correlation returns middleware that puts the consumed message's
// CorrelationInfo in the handler's context, where CorrelationFromContext
// finds it and Propagate (or a Propagating publisher) stamps it on the
// messages that the handler publishes: message.KeyCorrelationID carries the
// flow's correlation ID from message to message, and message.KeyCausationID
// names the message that caused each one.
//
// Errors: none; the error result keeps the constructor shape uniform.
func Correlation(CorrelationConfig) (subscriber.Middleware, error) {
	return func(next subscriber.Handler) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			info := CorrelationInfo{
				CorrelationID: m.Metadata.Get(message.KeyCorrelationID),
				MessageID:     m.ID,
				CausationID:   m.Metadata.Get(message.KeyCausationID),
			}
			if info.CorrelationID == "" {
				info.CorrelationID = m.ID
			}
			return next(ContextWithCorrelation(ctx, info), m)
		}
	}, nil
}

// ContextWithCorrelation returns ctx carrying info. Correlation calls it for
// each consumed message; call it yourself to start a flow outside a
// handler, such as in an HTTP request that publishes.
func ContextWithCorrelation(ctx context.Context, info CorrelationInfo) context.Context {
	return &valueCtx[correlationKey, CorrelationInfo]{Context: ctx, val: info}
}

// CorrelationFromContext returns the CorrelationInfo that Correlation (or
// ContextWithCorrelation) put in ctx, and whether there was one.
func CorrelationFromContext(ctx context.Context) (CorrelationInfo, bool) {
	if info, ok := ctx.Value(correlationKey{}).(*CorrelationInfo); ok {
		return *info, true
	}
	return CorrelationInfo{}, false
}

// Propagate stamps the correlation in ctx on msgs before they are
// published: message.KeyCorrelationID gets the flow's correlation ID and
// message.KeyCausationID the consumed message's ID. A key that a message
// already has is kept, so a handler can set its own. Without a correlation
// in ctx, Propagate does nothing. Nil messages are skipped (Publish reports
// them).
func Propagate(ctx context.Context, msgs ...*message.Message) {
	info, ok := CorrelationFromContext(ctx)
	if !ok {
		return
	}
	for _, m := range msgs {
		if m == nil {
			continue
		}
		if m.Metadata == nil {
			m.Metadata = make(message.Metadata, 2)
		}
		if info.CorrelationID != "" && m.Metadata[message.KeyCorrelationID] == "" {
			m.Metadata[message.KeyCorrelationID] = info.CorrelationID
		}
		if info.MessageID != "" && m.Metadata[message.KeyCausationID] == "" {
			m.Metadata[message.KeyCausationID] = info.MessageID
		}
	}
}

// Propagating returns a Publisher that calls Propagate on every message and
// then publishes through p: hand it to handlers in place of p.
func Propagating(p Publisher) Publisher {
	return propagating{p}
}

type propagating struct{ p Publisher }

func (pp propagating) Publish(ctx context.Context, topic string, msgs ...*message.Message) error {
	Propagate(ctx, msgs...)
	return pp.p.Publish(ctx, topic, msgs...)
}
