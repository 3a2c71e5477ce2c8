package sqs

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/polybus/polybus/message"
)

// The message attributes that polybus writes besides the application's
// metadata. SQS allows 10 attributes per message; polybus uses up to five
// of them, and packs the metadata into one when it does not fit the rest
// (see the package documentation).
const (
	// AttrID carries Message.ID.
	AttrID = "polybus-id"
	// AttrKey carries Message.Key when it is not empty.
	AttrKey = "polybus-key"
	// AttrTime carries Message.Time as decimal nanoseconds since the Unix
	// epoch, as a Number.
	AttrTime = "polybus-time"
	// AttrEncoding says how the body holds the payload when it is not the
	// payload itself: "base64" (standard, padded) for a payload that is not
	// text SQS accepts, "empty" for an empty payload (the body is then ".",
	// as SQS takes no empty body).
	AttrEncoding = "polybus-enc"
	// AttrMetadata carries the whole metadata, as a Binary attribute
	// holding a JSON object of strings, when it does not travel as one
	// attribute per entry.
	AttrMetadata = "polybus-md"
)

// Limits of SQS (AWS and ElasticMQ 1.7 alike, checked against both).
const (
	// sqsMessageLimit is SQS's limit on one message (body and attributes,
	// counted as AWS does: name, data type and value of each attribute),
	// and on the sum of a SendMessageBatch's entries.
	sqsMessageLimit = 1 << 20
	// maxAttrs is the most message attributes SQS takes on one message.
	maxAttrs = 10
	// envelope is what MaxMessageSize leaves of sqsMessageLimit for
	// polybus's attributes, the metadata's packing and an ID of a few
	// hundred bytes.
	envelope = 4 << 10
	// MaxMessageSize is the declared Capabilities.MaxMessageSize: a
	// binary payload travels in base64, 4 bytes for every 3.
	MaxMessageSize = (sqsMessageLimit - envelope) / 4 * 3
	// batchEntries is the most entries of one SendMessageBatch,
	// DeleteMessageBatch or ChangeMessageVisibilityBatch call.
	batchEntries = 10
)

const (
	typeString = "String"
	typeNumber = "Number"
	typeBinary = "Binary"
)

var reservedAttrs = map[string]bool{AttrID: true, AttrKey: true, AttrTime: true, AttrEncoding: true, AttrMetadata: true}

// sqsText reports whether s is non-empty text that SQS accepts in a body or
// String attribute: valid UTF-8 of the characters #x9, #xA, #xD, #x20 to
// #xD7FF, #xE000 to #xFFFD and #x10000 to #x10FFFF.
// A payload is checked as the bytes it is, with no copy into a string.
func sqsText[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && n == 1 || r >= 0xD800 && r <= 0xDFFF || r == 0xFFFE || r == 0xFFFF {
			return false
		}
		i += n
	}
	return true
}

// attrName reports whether k can be a message attribute name of its own:
// letters, digits, '-', '_' and '.', at most 256 characters, no leading,
// trailing or double '.', not starting with "AWS." or "Amazon." in any
// case, and not one of polybus's own.
func attrName(k string) bool {
	if k == "" || len(k) > 256 || reservedAttrs[k] || k[0] == '.' || k[len(k)-1] == '.' || strings.Contains(k, "..") {
		return false
	}
	lk := strings.ToLower(k)
	if strings.HasPrefix(lk, "aws.") || strings.HasPrefix(lk, "amazon.") {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// stringAttr returns s as a String attribute when SQS takes it as text,
// and as a Binary one otherwise.
func stringAttr(s string) types.MessageAttributeValue {
	if sqsText(s) {
		return types.MessageAttributeValue{DataType: aws.String(typeString), StringValue: aws.String(s)}
	}
	return types.MessageAttributeValue{DataType: aws.String(typeBinary), BinaryValue: []byte(s)}
}

// attrString returns an attribute's value as a string, whatever its type.
func attrString(v types.MessageAttributeValue) string {
	if v.StringValue != nil {
		return *v.StringValue
	}
	return string(v.BinaryValue)
}

// encoded is one message in SQS's form, shared by every queue it goes to.
type encoded struct {
	body  string
	attrs map[string]types.MessageAttributeValue
	// groupID and dedupID are set for FIFO queues.
	groupID, dedupID *string
	// size counts body and attributes as SQS does.
	size int
}

// encode turns m into SQS's form. It fails with TooLarge when the result
// passes SQS's limit and with InvalidArgument for metadata that is not
// valid UTF-8 (which polybus's JSON packing cannot carry).
func encode(m *message.Message, fifo bool) (*encoded, error) {
	const op = "sqs: publish"
	e := &encoded{attrs: make(map[string]types.MessageAttributeValue, 4+len(m.Metadata))}
	switch p := m.Payload; {
	case len(p) == 0:
		e.body = "."
		e.attrs[AttrEncoding] = types.MessageAttributeValue{DataType: aws.String(typeString), StringValue: aws.String("empty")}
	case sqsText(p):
		e.body = string(p)
	default:
		e.body = base64.StdEncoding.EncodeToString(p)
		e.attrs[AttrEncoding] = types.MessageAttributeValue{DataType: aws.String(typeString), StringValue: aws.String("base64")}
	}
	e.attrs[AttrID] = stringAttr(m.ID)
	if m.Key != "" {
		e.attrs[AttrKey] = stringAttr(m.Key)
	}
	if !m.Time.IsZero() {
		e.attrs[AttrTime] = types.MessageAttributeValue{DataType: aws.String(typeNumber), StringValue: aws.String(strconv.FormatInt(m.Time.UnixNano(), 10))}
	}
	if len(m.Metadata) > 0 {
		// One attribute per entry when every entry can be one and they
		// all fit; otherwise all of them in one packed attribute, so that
		// any number of entries travels.
		plain := len(e.attrs)+len(m.Metadata) <= maxAttrs
		if plain {
			for k, v := range m.Metadata {
				if !attrName(k) || !sqsText(v) {
					plain = false
					break
				}
			}
		}
		if plain {
			for k, v := range m.Metadata {
				e.attrs[k] = types.MessageAttributeValue{DataType: aws.String(typeString), StringValue: aws.String(v)}
			}
		} else {
			for k, v := range m.Metadata {
				if !utf8.ValidString(k) || !utf8.ValidString(v) {
					return nil, message.Errorf(message.InvalidArgument, op,
						"message %q: metadata entry %q is not valid UTF-8, which SQS attributes cannot carry", m.ID, k)
				}
			}
			js, err := json.Marshal(map[string]string(m.Metadata))
			if err != nil {
				return nil, message.Errorf(message.InvalidArgument, op, "message %q: metadata: %w", m.ID, err)
			}
			e.attrs[AttrMetadata] = types.MessageAttributeValue{DataType: aws.String(typeBinary), BinaryValue: js}
		}
	}
	e.size = len(e.body)
	for k, v := range e.attrs {
		e.size += len(k) + len(*v.DataType) + len(attrString(v))
	}
	if fifo {
		key := m.Key
		if key == "" {
			// No key, no order: each message is its own group, so that
			// keyless messages do not wait for one another.
			key = m.ID
		}
		e.groupID = aws.String(fifoID(key))
		e.dedupID = aws.String(fifoID(m.ID))
	}
	if e.size > sqsMessageLimit {
		return nil, message.Errorf(message.TooLarge, op,
			"message %q is %d bytes in SQS's form (body and attributes); SQS takes at most %d", m.ID, e.size, sqsMessageLimit)
	}
	return e, nil
}

// decode rebuilds the polybus message of a received SQS message.
func decode(sm *types.Message) *message.Message {
	m := &message.Message{}
	body := aws.ToString(sm.Body)
	var md message.Metadata
	set := func(k, v string) {
		if md == nil {
			md = message.Metadata{}
		}
		md[k] = v
	}
	enc := ""
	for k, v := range sm.MessageAttributes {
		s := attrString(v)
		switch k {
		case AttrID:
			m.ID = s
		case AttrKey:
			m.Key = s
		case AttrTime:
			if ns, err := strconv.ParseInt(s, 10, 64); err == nil {
				m.Time = time.Unix(0, ns)
			} else {
				set(k, s)
			}
		case AttrEncoding:
			enc = s
		case AttrMetadata:
			var packed map[string]string
			if err := json.Unmarshal(v.BinaryValue, &packed); err == nil {
				for pk, pv := range packed {
					set(pk, pv)
				}
			} else {
				set(k, s)
			}
		default:
			set(k, s)
		}
	}
	m.Metadata = md
	switch enc {
	case "empty":
		m.Payload = []byte{}
	case "base64":
		if p, err := base64.StdEncoding.DecodeString(body); err == nil {
			m.Payload = p
		} else {
			m.Payload = []byte(body)
		}
	default:
		m.Payload = []byte(body)
	}
	// A message that no polybus publisher wrote (boto3's, the console's):
	// SQS's own facts stand in.
	foreign := m.ID == ""
	if foreign {
		m.ID = aws.ToString(sm.MessageId)
	}
	if m.Time.IsZero() {
		if ms, err := strconv.ParseInt(sm.Attributes[string(types.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil {
			m.Time = time.UnixMilli(ms)
		}
	}
	if foreign && m.Key == "" {
		// A FIFO message's group is its key.
		m.Key = sm.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)]
	}
	return m
}
