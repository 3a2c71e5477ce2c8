package nats

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus/message"
)

// The headers that polybus writes besides the application's metadata. Every
// name starts with HeaderPrefix (exact case: NATS headers are
// case-sensitive, and nats.go neither canonicalises nor folds them).
const (
	// HeaderPrefix starts every header that polybus owns.
	HeaderPrefix = "Polybus-"
	// HeaderKey carries Message.Key when the key is a plain header value
	// (see the package documentation); HeaderKeyB64 carries it otherwise,
	// in unpadded base64url.
	HeaderKey    = HeaderPrefix + "Key"
	HeaderKeyB64 = HeaderPrefix + "Key-B64"
	// HeaderIDB64 carries Message.ID, in unpadded base64url, when the ID is
	// not a plain header value; otherwise the ID is only in Nats-Msg-Id.
	HeaderIDB64 = HeaderPrefix + "Id-B64"
	// HeaderTime carries Message.Time as decimal nanoseconds since the Unix
	// epoch: cheaper to write and read than RFC 3339, and shorter.
	HeaderTime = HeaderPrefix + "Time"
	// HeaderMetaB64 prefixes a metadata entry whose key or value cannot be
	// a header as it is: the header name is HeaderMetaB64 followed by the
	// key, and the header value is the value, both in unpadded base64url.
	HeaderMetaB64 = HeaderPrefix + "Md-"
)

var b64 = base64.RawURLEncoding

// plainKey reports whether metadata key k travels as a header of the same
// name: a name that nats.go accepts (printable ASCII without separators), not
// one of NATS's own (Nats-*, in any case: the server acts on some) and not
// one of polybus's (Polybus-*).
func plainKey(k string) bool {
	if k == "" || strings.HasPrefix(k, HeaderPrefix) || len(k) >= 5 && strings.EqualFold(k[:5], "nats-") {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c < 33 || c > 126 || strings.IndexByte(`"()/,:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// plainValue reports whether v survives a header unchanged: nats.go trims
// leading and trailing spaces and tabs and replaces CR and LF.
func plainValue(v string) bool {
	if v == "" {
		return true
	}
	if isSpace(v[0]) || isSpace(v[len(v)-1]) {
		return false
	}
	return strings.IndexByte(v, '\r') < 0 && strings.IndexByte(v, '\n') < 0 && strings.IndexByte(v, 0) < 0
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// envelope writes messages' headers for one batch into one header map that
// it reuses, message after message: building a map per message cost more
// than anything else polybus adds to a publish. The reuse is safe because
// nats.go serialises a message's headers before PublishMsgAsync returns and
// reads the message again only to retry it (turned off: see noRetry) or to
// hand it to an async error or ack callback (none is set: see open.go).
// An envelope is not safe for concurrent use.
type envelope struct {
	h natsgo.Header
	// vals backs every header's one-element value slice, so that setting a
	// header allocates nothing once vals has grown.
	vals []string
	// times holds the batch's HeaderTime values, in message order; see
	// newEnvelope.
	times []string
}

// newEnvelope returns an envelope for msgs. It formats every message's
// Time up front into one string, instead of one allocation per message.
func newEnvelope(msgs []*message.Message) *envelope {
	most := 0
	for _, m := range msgs {
		most = max(most, len(m.Metadata))
	}
	e := &envelope{
		h:     make(natsgo.Header, most+3),
		vals:  make([]string, 0, most+4),
		times: make([]string, len(msgs)),
	}
	buf := make([]byte, 0, 20*len(msgs))
	ends := make([]int, len(msgs))
	for i, m := range msgs {
		if !m.Time.IsZero() {
			buf = strconv.AppendInt(buf, m.Time.UnixNano(), 10)
		}
		ends[i] = len(buf)
	}
	all := string(buf)
	start := 0
	for i, end := range ends {
		e.times[i] = all[start:end]
		start = end
	}
	return e
}

// header returns the headers of msgs[i], the message that newEnvelope got
// at index i. The map is valid until the next call: it does not change m.
func (e *envelope) header(i int, m *message.Message) natsgo.Header {
	clear(e.h)
	e.vals = e.vals[:0]
	if plainValue(m.ID) {
		e.set(jetstream.MsgIDHeader, m.ID)
	} else {
		// Still deduplicated by the stream, under its encoded form.
		enc := b64.EncodeToString([]byte(m.ID))
		e.set(jetstream.MsgIDHeader, enc)
		e.set(HeaderIDB64, enc)
	}
	if m.Key != "" {
		if plainValue(m.Key) {
			e.set(HeaderKey, m.Key)
		} else {
			e.set(HeaderKeyB64, b64.EncodeToString([]byte(m.Key)))
		}
	}
	if t := e.times[i]; t != "" {
		e.set(HeaderTime, t)
	}
	for k, v := range m.Metadata {
		if plainKey(k) && plainValue(v) {
			e.set(k, v)
		} else {
			e.set(HeaderMetaB64+b64.EncodeToString([]byte(k)), b64.EncodeToString([]byte(v)))
		}
	}
	return e.h
}

func (e *envelope) set(k, v string) {
	e.vals = append(e.vals, v)
	n := len(e.vals)
	e.h[k] = e.vals[n-1 : n : n]
}

// decode rebuilds the message of a received NATS message. Headers that no
// polybus publisher wrote (a plain NATS client's) become metadata, except
// NATS's own (Nats-*); a header with several values gives its first, and a
// polybus header that does not decode is kept as metadata as it is.
// A message without an ID header gets "<stream>:<sequence>", stable across
// redeliveries; one without a time header gets the time the stream stored
// it.
func decode(data []byte, h natsgo.Header, md *jetstream.MsgMetadata) *message.Message {
	m := &message.Message{Payload: data}
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		v := vs[0]
		switch {
		case k == HeaderKey:
			m.Key = v
			continue
		case k == HeaderKeyB64:
			if key, err := b64.DecodeString(v); err == nil {
				m.Key = string(key)
				continue
			}
		case k == HeaderTime:
			if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
				m.Time = time.Unix(0, ns)
				continue
			}
		case k == HeaderIDB64:
			if _, err := b64.DecodeString(v); err == nil {
				continue // read below
			}
		case strings.HasPrefix(k, HeaderMetaB64):
			mk, err1 := b64.DecodeString(k[len(HeaderMetaB64):])
			mv, err2 := b64.DecodeString(v)
			if err1 == nil && err2 == nil {
				m.Metadata = setMeta(m.Metadata, string(mk), string(mv))
				continue
			}
		case len(k) >= 5 && strings.EqualFold(k[:5], "nats-"):
			continue // NATS's own, such as Nats-Msg-Id
		}
		m.Metadata = setMeta(m.Metadata, k, v)
	}
	if id, err := b64.DecodeString(h.Get(HeaderIDB64)); err == nil && len(id) > 0 {
		m.ID = string(id)
	} else {
		m.ID = h.Get(jetstream.MsgIDHeader)
	}
	if md != nil {
		if m.ID == "" {
			m.ID = md.Stream + ":" + strconv.FormatUint(md.Sequence.Stream, 10)
		}
		if m.Time.IsZero() {
			m.Time = md.Timestamp
		}
	}
	return m
}

func setMeta(md message.Metadata, k, v string) message.Metadata {
	if md == nil {
		md = message.Metadata{}
	}
	md[k] = v
	return md
}
