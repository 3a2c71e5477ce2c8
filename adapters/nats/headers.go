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

// encode turns m into the NATS message published on subject. It does not
// change m.
func encode(subject string, m *message.Message) *natsgo.Msg {
	n := len(m.Metadata) + 3
	h := make(natsgo.Header, n)
	// One backing array for every header's value slice, instead of one
	// allocation per header.
	vals := make([]string, 0, n+1)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if plainValue(m.ID) {
		set(jetstream.MsgIDHeader, m.ID)
	} else {
		// Still deduplicated by the stream, under its encoded form.
		enc := b64.EncodeToString([]byte(m.ID))
		set(jetstream.MsgIDHeader, enc)
		set(HeaderIDB64, enc)
	}
	if m.Key != "" {
		if plainValue(m.Key) {
			set(HeaderKey, m.Key)
		} else {
			set(HeaderKeyB64, b64.EncodeToString([]byte(m.Key)))
		}
	}
	if !m.Time.IsZero() {
		set(HeaderTime, strconv.FormatInt(m.Time.UnixNano(), 10))
	}
	for k, v := range m.Metadata {
		if plainKey(k) && plainValue(v) {
			set(k, v)
		} else {
			set(HeaderMetaB64+b64.EncodeToString([]byte(k)), b64.EncodeToString([]byte(v)))
		}
	}
	return &natsgo.Msg{Subject: subject, Header: h, Data: m.Payload}
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
