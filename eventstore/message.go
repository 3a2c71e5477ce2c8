package eventstore

import (
	"strconv"

	"github.com/polybus/polybus/message"
)

// Metadata keys that ToMessage sets, so a consumer knows which event a
// message carries.
const (
	// KeyEventType carries Event.Type.
	KeyEventType = message.MetadataPrefix + "event-type"
	// KeyStream carries Event.Stream.
	KeyStream = message.MetadataPrefix + "event-stream"
	// KeyVersion carries Event.Version, in decimal.
	KeyVersion = message.MetadataPrefix + "event-version"
	// KeyPosition carries Event.Position as text (see ParsePosition),
	// when it is known.
	KeyPosition = message.MetadataPrefix + "event-position"
)

// ToMessage returns the message that carries e on a bus: ID = the event's
// ID (so consumers dedupe), Key = its stream (so it keeps stream order),
// Payload = its encoded data, Time = its time, and its metadata with
// KeyEventType, KeyStream and KeyVersion added.
func ToMessage(e *Event) *message.Message {
	md := e.Metadata.Clone()
	if md == nil {
		md = message.Metadata{}
	}
	md[KeyEventType] = e.Type
	md[KeyStream] = e.Stream
	md[KeyVersion] = strconv.FormatInt(e.Version, 10)
	if !e.Position.IsZero() {
		md[KeyPosition] = e.Position.String()
	}
	return &message.Message{ID: e.ID, Key: e.Stream, Payload: e.Raw, Metadata: md, Time: e.Time}
}

// FromMessage decodes the event a message made by ToMessage carries. It
// fails with message.ErrInvalidArgument when m has no event type.
func (s *Store) FromMessage(m *message.Message) (*Event, error) {
	t := m.Metadata.Get(KeyEventType)
	if t == "" {
		return nil, message.Errorf(message.InvalidArgument, "eventstore: from message", "message %s carries no %s", m.ID, KeyEventType)
	}
	r := Record{ID: m.ID, Stream: m.Metadata.Get(KeyStream), Type: t, Data: m.Payload, Time: m.Time}
	r.Version, _ = strconv.ParseInt(m.Metadata.Get(KeyVersion), 10, 64)
	if p := m.Metadata.Get(KeyPosition); p != "" {
		r.Position, _ = ParsePosition(p)
	}
	md := m.Metadata.Clone()
	for _, k := range []string{KeyEventType, KeyStream, KeyVersion, KeyPosition} {
		delete(md, k)
	}
	if len(md) > 0 {
		r.Metadata = md
	}
	return s.Decode(r)
}
