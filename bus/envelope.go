package bus

import (
	"context"
	"strings"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
)

// PublishOption sets a field of a message that Publish, Send or Ask
// builds.
type PublishOption func(*message.Message)

// WithKey sets the message's Key (its ordering and partition key, such
// as the entity ID). A value whose type implements Keyer gets its key
// from it unless WithKey is given.
func WithKey(key string) PublishOption { return func(m *message.Message) { m.Key = key } }

// WithID sets the message's ID, its idempotency key. Default a fresh
// UUIDv7.
func WithID(id string) PublishOption { return func(m *message.Message) { m.ID = id } }

// WithHeader sets one metadata entry. Keys under message.MetadataPrefix
// belong to polybus: use them only as documented (such as
// message.KeyCorrelationID to start a flow with a chosen ID).
func WithHeader(key, value string) PublishOption {
	return func(m *message.Message) {
		if m.Metadata == nil {
			m.Metadata = message.Metadata{}
		}
		m.Metadata[key] = value
	}
}

// WithReplyTo asks the handler of a command to publish its outcome (a
// reply: KeyOutcome "ok" or "error", KeyReplyFor the command's ID) to
// topic. Package saga uses it to learn that a step's command was done.
func WithReplyTo(topic string) PublishOption { return WithHeader(KeyReplyTo, topic) }

// Keyer is implemented by a message type that carries its own key.
type Keyer interface {
	// MessageKey returns the message's Key.
	MessageKey() string
}

type messageKey struct{}

// MessageFrom returns the message that the handler running in ctx was
// called with: its ID, Key, metadata and delivery facts.
func MessageFrom(ctx context.Context) (*message.Message, bool) {
	m, ok := ctx.Value(messageKey{}).(*message.Message)
	return m, ok
}

// ContextWithMessage returns ctx carrying m as the message being handled
// (MessageFrom), so that what is published with ctx continues m's
// causation chain (Stamp). The bus's handlers get it already; call it in
// handlers of your own subscriptions (package saga does).
func ContextWithMessage(ctx context.Context, m *message.Message) context.Context {
	return context.WithValue(ctx, messageKey{}, m)
}

// encode builds the message of v: payload, type, kind, content type, the
// correlation of ctx (middleware.Propagate) and the causation chain.
func (b *Bus) encode(ctx context.Context, op, kind, typ string, v any, opts []PublishOption) (*message.Message, error) {
	payload, err := b.opts.Codec.Marshal(v)
	if err != nil {
		return nil, message.Errorf(message.InvalidArgument, op, "encoding %s: %w", typ, err)
	}
	m := &message.Message{Payload: payload, Metadata: message.Metadata{
		KeyType: typ, KeyKind: kind, KeyContentType: b.ctype,
	}}
	if k, ok := v.(Keyer); ok {
		m.Key = k.MessageKey()
	}
	for _, o := range opts {
		o(m)
	}
	if m.ID == "" {
		m.ID = message.NewID()
	}
	if b.ctype == "" {
		delete(m.Metadata, KeyContentType)
	}
	Stamp(ctx, m)
	if b.opts.Validate != nil {
		if err := b.opts.Validate(m); err != nil {
			return nil, message.Errorf(message.InvalidArgument, op, "%s %s, nothing sent: %w", kind, typ, err)
		}
	}
	return m, nil
}

// Stamp puts the flow of ctx on m, as every publish of the buses does:
// message.KeyCorrelationID and message.KeyCausationID from the
// correlation in ctx (middleware.Propagate; a handler's ctx has it), and
// KeyCausationChain: the consumed message's chain plus its ID. Keys that
// m already has are kept. Use it on messages that you publish yourself
// from a bus handler.
func Stamp(ctx context.Context, m *message.Message) {
	middleware.Propagate(ctx, m)
	parent, ok := MessageFrom(ctx)
	if !ok || m.Metadata.Get(KeyCausationChain) != "" {
		return
	}
	chain := CausationChain(parent)
	chain = append(chain, parent.ID)
	if len(chain) > MaxCausationChain {
		chain = chain[len(chain)-MaxCausationChain:]
	}
	if m.Metadata == nil {
		m.Metadata = message.Metadata{}
	}
	m.Metadata[KeyCausationChain] = strings.Join(chain, ",")
}

// CausationChain returns the IDs of the messages that led to m, oldest
// first, its direct cause last (KeyCausationChain); nil for a message
// that started its flow.
func CausationChain(m *message.Message) []string {
	s := m.Metadata.Get(KeyCausationChain)
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// CorrelationID returns the flow's correlation ID of the handler call
// running in ctx (the consumed message's message.KeyCorrelationID, or
// its ID when it started the flow), and "" outside a handler.
func CorrelationID(ctx context.Context) string {
	info, _ := middleware.CorrelationFromContext(ctx)
	return info.CorrelationID
}

// decode checks a received message's type and decodes it into a T. A
// message of another type, or one that does not decode, is permanent (a
// poison message: retrying cannot help).
func decode[T any](b *Bus, op, typ string, m *message.Message) (T, error) {
	var v T
	if got := m.Metadata.Get(KeyType); got != typ {
		return v, message.PermanentError(message.Errorf(message.InvalidArgument, op, "message %s has type %q, want %q", m.ID, got, typ))
	}
	if err := b.opts.Codec.Unmarshal(m.Payload, &v); err != nil {
		return v, message.PermanentError(message.Errorf(message.InvalidArgument, op, "decoding %s %s: %w", typ, m.ID, err))
	}
	return v, nil
}
