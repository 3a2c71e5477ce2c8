package kafka

import (
	"bytes"
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

// recordSlab hands out the memory of a batch's records from a few
// allocations per batch instead of several per message: the headers, the
// bytes of IDs, times and keys, and the readers of keys and values.
type recordSlab struct {
	headers []kafkago.Header
	bytes   []byte
	readers []sliceBytes
}

// newRecordSlab sizes a slab for msgs.
func newRecordSlab(msgs []*message.Message) *recordSlab {
	nh, nb, nr := 0, 0, 0
	for _, m := range msgs {
		nh += 2 + len(m.Metadata)
		nb += len(m.ID) + 20 + len(m.Key)
		for _, v := range m.Metadata {
			nb += len(v)
		}
		nr++
		if m.Key != "" {
			nr++
		}
	}
	return &recordSlab{headers: make([]kafkago.Header, 0, nh), bytes: make([]byte, 0, nb), readers: make([]sliceBytes, nr)}
}

// sliceBytes is a kafka-go Bytes over a byte slice (kafka.NewBytes
// allocates one per value).
type sliceBytes struct{ bytes.Reader }

func (*sliceBytes) Close() error { return nil }

// reader returns a Bytes over b (nil for nil: a null value).
func (s *recordSlab) reader(b []byte) kafkago.Bytes {
	if b == nil {
		return nil
	}
	if len(s.readers) == 0 {
		return kafkago.NewBytes(b)
	}
	r := &s.readers[0]
	s.readers = s.readers[1:]
	r.Reset(b)
	return r
}

// appendBytes copies b into the slab and returns the copy; later copies
// do not move it.
func appendBytes[T string | []byte](s *recordSlab, b T) []byte {
	if len(s.bytes)+len(b) > cap(s.bytes) {
		s.bytes = make([]byte, 0, max(len(b), 256))
	}
	start := len(s.bytes)
	s.bytes = append(s.bytes, b...)
	return s.bytes[start:len(s.bytes):len(s.bytes)]
}

// record returns the Kafka record of m, the most bytes it can take in a
// record batch, and its key's bytes (nil for no key), from slab's memory.
func (s *recordSlab) record(m *message.Message) (kafkago.Record, int, []byte) {
	n := 2 + len(m.Metadata)
	if len(s.headers)+n > cap(s.headers) {
		s.headers = make([]kafkago.Header, 0, n)
	}
	start := len(s.headers)
	s.headers = append(s.headers, kafkago.Header{Key: HeaderID, Value: appendBytes(s, m.ID)})
	if !m.Time.IsZero() {
		var t [20]byte
		s.headers = append(s.headers, kafkago.Header{Key: HeaderTime, Value: appendBytes(s, strconv.AppendInt(t[:0], m.Time.UnixNano(), 10))})
	}
	for k, v := range m.Metadata {
		s.headers = append(s.headers, kafkago.Header{Key: k, Value: appendBytes(s, v)})
	}
	hs := s.headers[start:len(s.headers):len(s.headers)]
	size := recordOverhead + len(m.Key) + len(m.Payload)
	for _, h := range hs {
		size += headerOverhead + len(h.Key) + len(h.Value)
	}
	r := kafkago.Record{Time: m.Time, Value: s.reader(m.Payload), Headers: hs}
	var key []byte
	if m.Key != "" {
		key = appendBytes(s, m.Key)
		r.Key = s.reader(key)
	}
	return r, size, key
}

// decode rebuilds the message of a fetched record into m and returns the
// record's broker ID, "partition:offset". Headers that no polybus
// publisher wrote (another client's) become metadata; of a repeated header,
// the first value counts. A record without an ID header gets
// "<topic>:<partition>:<offset>", stable across redeliveries; one without a
// time header gets the record's timestamp. The key, the ID and the broker
// ID share one allocation.
func decode(m *message.Message, km *kafkago.Message) (brokerID string) {
	*m = message.Message{Payload: km.Value}
	var id []byte
	for _, h := range km.Headers {
		switch h.Key {
		case HeaderID:
			if len(id) == 0 {
				id = h.Value
			}
			continue
		case HeaderTime:
			if !m.Time.IsZero() {
				continue
			}
			if ns, ok := parseNanos(h.Value); ok {
				m.Time = time.Unix(0, ns)
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
	var stack [128]byte
	buf := append(stack[:0], km.Key...)
	keyEnd := len(buf)
	if len(id) > 0 {
		buf = append(buf, id...)
	} else {
		buf = append(buf, km.Topic...)
		buf = append(buf, ':')
		buf = strconv.AppendInt(buf, int64(km.Partition), 10)
		buf = append(buf, ':')
		buf = strconv.AppendInt(buf, km.Offset, 10)
	}
	idEnd := len(buf)
	buf = strconv.AppendInt(buf, int64(km.Partition), 10)
	buf = append(buf, ':')
	buf = strconv.AppendInt(buf, km.Offset, 10)
	all := string(buf)
	m.Key, m.ID = all[:keyEnd], all[keyEnd:idEnd]
	if m.Time.IsZero() {
		m.Time = km.Time
	}
	return all[idEnd:]
}

// parseNanos parses the decimal (optionally negative) int64 of a time
// header, without the allocation of strconv.ParseInt(string(b)).
func parseNanos(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	switch {
	case neg && n <= 1<<63:
		return -int64(n), true
	case !neg && n < 1<<63:
		return int64(n), true
	}
	return 0, false
}
