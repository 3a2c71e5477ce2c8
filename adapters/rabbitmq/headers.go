package rabbitmq

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/polybus/polybus/message"
)

// Headers that polybus itself sets. They are left out of a received
// message's metadata.
const (
	hdrPrefix  = "polybus-amqp-"
	hdrKey     = hdrPrefix + "key"      // Message.Key
	hdrTime    = hdrPrefix + "time"     // Message.Time, Unix nanoseconds
	hdrID      = hdrPrefix + "id"       // Message.ID when over 255 bytes
	hdrAttempt = hdrPrefix + "attempts" // deliveries before a delayed nack
	hdrMd      = hdrPrefix + "md-"      // a metadata entry that cannot be a header of its own name
	hdrPing    = hdrPrefix + "ping"     // a ping of a partition queue (see subscription.ping)
)

// reservedHeader reports whether a metadata key cannot travel as a header
// of its own name: RabbitMQ acts on CC and BCC (sender-selected routing)
// and sets x-death, x-first-death-*, x-last-death-*, x-delivery-count and
// x-received-from itself; polybus's own headers start with hdrPrefix; and
// AMQP field names are at most 255 bytes.
func reservedHeader(k string) bool {
	switch {
	case len(k) > 255, k == "", k == "CC", k == "BCC", strings.HasPrefix(k, hdrPrefix),
		k == "x-death", k == "x-delivery-count", k == "x-received-from",
		strings.HasPrefix(k, "x-first-death-"), strings.HasPrefix(k, "x-last-death-"):
		return true
	}
	return false
}

// publishing returns the AMQP message of m: persistent, ID in MessageId,
// time in Timestamp (seconds) and exactly in a header, key and metadata in
// headers.
func publishing(m *message.Message) amqp.Publishing {
	h := make(amqp.Table, len(m.Metadata)+2)
	for k, v := range m.Metadata {
		if reservedHeader(k) {
			h[hdrMd+base64.RawURLEncoding.EncodeToString([]byte(k))] = v
			continue
		}
		h[k] = v
	}
	if m.Key != "" {
		h[hdrKey] = m.Key
	}
	p := amqp.Publishing{
		Headers:      h,
		DeliveryMode: amqp.Persistent,
		Body:         m.Payload,
	}
	if !m.Time.IsZero() {
		h[hdrTime] = m.Time.UnixNano()
		p.Timestamp = m.Time
	}
	if len(m.ID) <= 255 {
		p.MessageId = m.ID
	} else {
		h[hdrID] = m.ID
	}
	return p
}

// decoded is what a delivery carries besides the message itself.
type decoded struct {
	msg      *message.Message
	attempts int // deliveries counted before the last delayed nack
}

// decode returns the message of an AMQP delivery. A message published by
// another client arrives with its headers as metadata (values in their
// text form), "<queue>:<delivery tag>" as ID when it has no MessageId and
// its Timestamp as time.
func decode(d *amqp.Delivery, queue string) decoded {
	m := &message.Message{ID: d.MessageId, Payload: d.Body}
	var out decoded
	for k, v := range d.Headers {
		switch {
		case k == hdrKey:
			m.Key = headerString(v)
		case k == hdrTime:
			if n, ok := v.(int64); ok {
				m.Time = time.Unix(0, n)
			}
		case k == hdrID:
			m.ID = headerString(v)
		case k == hdrAttempt:
			if n, ok := v.(int64); ok {
				out.attempts = int(n)
			}
		case strings.HasPrefix(k, hdrMd):
			key, err := base64.RawURLEncoding.DecodeString(k[len(hdrMd):])
			if err != nil {
				continue
			}
			if m.Metadata == nil {
				m.Metadata = message.Metadata{}
			}
			m.Metadata[string(key)] = headerString(v)
		case strings.HasPrefix(k, hdrPrefix), k == "x-delivery-count", k == "x-death",
			strings.HasPrefix(k, "x-first-death-"), strings.HasPrefix(k, "x-last-death-"):
			// The broker's and polybus's own bookkeeping.
		default:
			if m.Metadata == nil {
				m.Metadata = message.Metadata{}
			}
			m.Metadata[k] = headerString(v)
		}
	}
	if m.ID == "" {
		m.ID = queue + ":" + strconv.FormatUint(d.DeliveryTag, 10)
	}
	if m.Time.IsZero() && !d.Timestamp.IsZero() {
		m.Time = d.Timestamp
	}
	out.msg = m
	return out
}

// headerString returns a header value as text.
func headerString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case nil:
		return ""
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	}
	return fmt.Sprint(v)
}

// deliveryCount returns x-delivery-count (quorum queues: deliveries before
// this one), 0 when absent.
func deliveryCount(h amqp.Table) int {
	switch n := h["x-delivery-count"].(type) {
	case int64:
		return int(n)
	case int32:
		return int(n)
	case int:
		return n
	}
	return 0
}
