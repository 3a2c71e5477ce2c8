package kafka

import (
	"strconv"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/polybus/polybus/message"
)

// The record headers that polybus writes besides the application's
// metadata, which travels as headers of the same names.
const (
	// HeaderID carries Message.ID.
	HeaderID = "polybus-id"
	// HeaderTime carries Message.Time as decimal nanoseconds since the
	// Unix epoch (the record timestamp has milliseconds only).
	HeaderTime = "polybus-time"
)

// Sizes for the record batch limit: the batch header (v2: base offset 8,
// length 4, leader epoch 4, magic 1, crc 4, attributes 2, last offset
// delta 4, two timestamps 16, producer id 8, epoch 2, base sequence 4,
// record count 4), and the most a record's own framing can take (five
// varints of up to 5 bytes and a timestamp delta of up to 10).
const (
	batchHeader    = 61
	recordOverhead = 1 + 5*5 + 10
	headerOverhead = 2 * 5
)

// reserved reports whether a metadata key is one of the envelope's headers.
func reserved(k string) bool { return k == HeaderID || k == HeaderTime }

// record returns the Kafka record of m and the most bytes it can take in a
// record batch.
func record(m *message.Message) (kafkago.Record, int) {
	hs := make([]kafkago.Header, 0, 2+len(m.Metadata))
	hs = append(hs, kafkago.Header{Key: HeaderID, Value: []byte(m.ID)})
	if !m.Time.IsZero() {
		hs = append(hs, kafkago.Header{Key: HeaderTime, Value: strconv.AppendInt(nil, m.Time.UnixNano(), 10)})
	}
	for k, v := range m.Metadata {
		hs = append(hs, kafkago.Header{Key: k, Value: []byte(v)})
	}
	size := recordOverhead + len(m.Key) + len(m.Payload)
	for _, h := range hs {
		size += headerOverhead + len(h.Key) + len(h.Value)
	}
	r := kafkago.Record{Time: m.Time, Value: kafkago.NewBytes(m.Payload), Headers: hs}
	if m.Key != "" {
		r.Key = kafkago.NewBytes([]byte(m.Key))
	}
	return r, size
}

// decode rebuilds the message of a fetched record. Headers that no polybus
// publisher wrote (another client's) become metadata; of a repeated header,
// the first value counts. A record without an ID header gets
// "<topic>:<partition>:<offset>", stable across redeliveries; one without a
// time header gets the record's timestamp.
func decode(km *kafkago.Message) *message.Message {
	m := &message.Message{Payload: km.Value}
	if len(km.Key) > 0 {
		m.Key = string(km.Key)
	}
	for _, h := range km.Headers {
		switch h.Key {
		case HeaderID:
			if m.ID == "" {
				m.ID = string(h.Value)
			}
			continue
		case HeaderTime:
			if m.Time.IsZero() {
				if ns, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
					m.Time = time.Unix(0, ns)
					continue
				}
			} else {
				continue
			}
		}
		if _, dup := m.Metadata[h.Key]; dup {
			continue
		}
		if m.Metadata == nil {
			m.Metadata = message.Metadata{}
		}
		m.Metadata[h.Key] = string(h.Value)
	}
	if m.ID == "" {
		m.ID = km.Topic + ":" + strconv.Itoa(km.Partition) + ":" + strconv.FormatInt(km.Offset, 10)
	}
	if m.Time.IsZero() {
		m.Time = km.Time
	}
	return m
}
