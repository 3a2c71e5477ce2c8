package message

import (
	"crypto/rand"
	"maps"
	"sync"
	"time"

	"github.com/google/uuid"
)

// MetadataPrefix is the prefix of every metadata key that polybus itself
// sets. Keys under it are reserved; applications should use other keys.
const MetadataPrefix = "polybus-"

// Well-known metadata keys.
const (
	// KeyCorrelationID carries the correlation ID of a flow of messages.
	KeyCorrelationID = MetadataPrefix + "correlation-id"
	// KeyCausationID carries the ID of the message that caused this one.
	KeyCausationID = MetadataPrefix + "causation-id"
	// KeySequence carries a per-key sequence number (ordering middleware).
	KeySequence = MetadataPrefix + "seq"
	// KeyAttempt carries an attempt counter for brokers that count none.
	KeyAttempt = MetadataPrefix + "attempt"
	// KeyDLQReason, KeyDLQError, KeyDLQTopic, KeyDLQGroup, KeyDLQAttempts,
	// KeyDLQFirstFailure and KeyDLQLastFailure are set on dead letters.
	KeyDLQReason       = MetadataPrefix + "dlq-reason"
	KeyDLQError        = MetadataPrefix + "dlq-error"
	KeyDLQTopic        = MetadataPrefix + "dlq-topic"
	KeyDLQGroup        = MetadataPrefix + "dlq-group"
	KeyDLQAttempts     = MetadataPrefix + "dlq-attempts"
	KeyDLQFirstFailure = MetadataPrefix + "dlq-first-failure"
	KeyDLQLastFailure  = MetadataPrefix + "dlq-last-failure"
	// KeyType carries the name of the message's type, such as
	// "OrderPlaced": the CloudEvents "type" attribute. The buses (package
	// bus) and package schema set it.
	KeyType = MetadataPrefix + "type"
	// KeySchemaVersion carries the version (1, 2, ...) of the type's schema
	// that the payload was written with, in decimal; a message without it
	// is version 1 (package schema).
	KeySchemaVersion = MetadataPrefix + "schema-version"
	// KeyDataSchema carries a URI naming that schema and version: the
	// CloudEvents "dataschema" attribute (package schema). It is
	// informative; KeySchemaVersion is what polybus reads.
	KeyDataSchema = MetadataPrefix + "dataschema"
)

// Metadata holds a message's string headers. A nil Metadata is empty and
// safe to read.
type Metadata map[string]string

// Get returns the value of key, or "".
func (md Metadata) Get(key string) string { return md[key] }

// Clone returns a copy of md (nil for an empty md).
func (md Metadata) Clone() Metadata {
	if len(md) == 0 {
		return nil
	}
	return maps.Clone(md)
}

// Message is the unit that polybus publishes and delivers.
//
// A publisher stamps ID and Time when they are empty. Do not change a
// message while a Publish of it is running. On receipt, [Message.Delivery]
// reports where and how often the message was delivered.
type Message struct {
	// ID is unique per message and assigned by the producer (UUIDv7 by
	// default). It is the idempotency key: kept across redelivery,
	// dead-lettering and replay.
	ID string
	// Key orders and partitions: messages of one key go to one partition,
	// group or FIFO group, and keep their order where the broker keeps it.
	// Usually an entity ID such as "ord-123". May be empty.
	Key string
	// Payload is opaque and binary-safe. It may be empty.
	Payload []byte
	// Metadata holds string headers; keys starting with [MetadataPrefix]
	// belong to polybus.
	Metadata Metadata
	// Time is the producer's timestamp.
	Time time.Time

	delivery *Delivery
	native   func(any) bool
}

// New returns a message with a fresh ID, the current time and payload.
func New(payload []byte) *Message {
	return &Message{ID: NewID(), Payload: payload, Time: time.Now()}
}

// NewID returns a new message ID: a UUIDv7, whose text sorts by creation
// time. Its random bits come from crypto/rand through a process-wide
// buffer (idRandom), read a few kilobytes at a time rather than once per
// ID, as google/uuid's own EnableRandPool does, without changing that
// package's global setting for the rest of the program.
func NewID() string {
	id, err := uuid.NewV7FromReader(idRandom)
	if err != nil {
		// Unreachable: crypto/rand.Read does not fail.
		return uuid.NewString()
	}
	return id.String()
}

// idRandom buffers crypto/rand for NewID.
var idRandom = &randomBuffer{pos: randomBufferSize}

const randomBufferSize = 4096

// randomBuffer is an io.Reader of crypto/rand bytes, refilled from it a
// buffer at a time; each byte is handed out once.
type randomBuffer struct {
	mu  sync.Mutex
	buf [randomBufferSize]byte
	pos int
}

func (r *randomBuffer) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for n < len(p) {
		if r.pos == len(r.buf) {
			_, _ = rand.Read(r.buf[:]) // never fails (crypto/rand.Read)
			r.pos = 0
		}
		c := copy(p[n:], r.buf[r.pos:])
		clear(r.buf[r.pos : r.pos+c])
		r.pos += c
		n += c
	}
	return n, nil
}

// Size is the number of bytes of m that count against a broker's message
// size limit: payload, key and metadata keys and values. Adapters declare
// their limit in the same unit, reserving room for their own envelope.
func (m *Message) Size() int {
	n := len(m.Payload) + len(m.Key)
	for k, v := range m.Metadata {
		n += len(k) + len(v)
	}
	return n
}

// Delivery returns the facts of this delivery, and false for a message
// that was not received from a broker.
func (m *Message) Delivery() (Delivery, bool) {
	if m.delivery == nil {
		return Delivery{}, false
	}
	return *m.delivery, true
}

// Attempt returns the delivery attempt number (1 on first delivery), or 0
// when it is unknown.
func (m *Message) Attempt() int {
	if m.delivery == nil {
		return 0
	}
	return m.delivery.Attempt
}

// As reaches the broker's native message behind a received message. It
// returns false when target's type is not one the adapter offers (see each
// adapter's "# As" documentation) or the message was not received.
func (m *Message) As(target any) bool {
	if m.native == nil {
		return false
	}
	return m.native(target)
}

// Clone returns a deep copy of m's ID, Key, Payload, Metadata and Time. The
// copy carries no delivery facts: publishing it sends a new message with
// the same ID.
func (m *Message) Clone() *Message {
	c := &Message{ID: m.ID, Key: m.Key, Metadata: m.Metadata.Clone(), Time: m.Time}
	if m.Payload != nil {
		c.Payload = append([]byte{}, m.Payload...)
	}
	return c
}

// Delivery holds the read-only facts of one delivery of a message.
type Delivery struct {
	// Topic the message was received from.
	Topic string
	// Group is the consumer group that received it, "" when none.
	Group string
	// Attempt is 1 on the first delivery and rises with each redelivery;
	// 0 when the broker does not count.
	Attempt int
	// Redelivered reports that the broker has delivered the message before.
	Redelivered bool
	// Partition and Offset locate the message on partitioned logs (Kafka);
	// Partition is -1 elsewhere.
	Partition int
	Offset    int64
	// BrokerID is the broker's own message ID or position, where it has one
	// (SQS MessageId, JetStream stream sequence, AMQP delivery tag).
	BrokerID string
	// ReceivedAt is when polybus received the message.
	ReceivedAt time.Time
}

// Received attaches delivery facts and an optional native-message accessor
// to m and returns m. Adapters call it on each message they receive; the
// native function implements [Message.As].
func Received(m *Message, d Delivery, native func(any) bool) *Message {
	return ReceivedShared(m, &d, native)
}

// ReceivedShared is Received attaching d itself rather than a copy, for an
// adapter that allocates messages and their deliveries together (in
// slabs, say) so that a delivery costs no allocation of its own. Nothing
// may change *d afterwards: a handler reads it through [Message.Delivery].
func ReceivedShared(m *Message, d *Delivery, native func(any) bool) *Message {
	m.delivery = d
	m.native = native
	return m
}
