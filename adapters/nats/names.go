package nats

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode/utf8"

	"github.com/polybus/polybus/message"
)

// maxTopicLen bounds a topic (and so a subject) in bytes; the NATS protocol
// line that carries it is limited to a few KiB.
const maxTopicLen = 1024

// maxNameLen is JetStream's limit on stream and consumer names.
const maxNameLen = 255

// checkTopic reports whether topic can be used as a literal NATS subject:
// the subject of a topic is the topic itself.
func checkTopic(op, topic string) error {
	bad := func(why string) error {
		return message.Errorf(message.InvalidArgument, op, "topic %q: %s", topic, why)
	}
	switch {
	case topic == "":
		return bad("empty")
	case len(topic) > maxTopicLen:
		return bad("longer than 1024 bytes")
	case !utf8.ValidString(topic):
		return bad("not valid UTF-8")
	case topic[0] == '$':
		return bad("subjects starting with $ belong to the NATS server")
	case strings.HasPrefix(topic, "_INBOX."):
		return bad("subjects under _INBOX. carry NATS replies")
	case strings.HasPrefix(topic, PartitionPrefix):
		return bad("subjects under " + PartitionPrefix + " are polybus's partition subjects")
	case topic[0] == '.' || topic[len(topic)-1] == '.' || strings.Contains(topic, ".."):
		return bad("dots separate non-empty subject tokens")
	}
	for i := 0; i < len(topic); i++ {
		switch c := topic[i]; {
		case c <= ' ' || c == 0x7f:
			return bad("whitespace and control characters cannot appear in a NATS subject")
		case c == '*' || c == '>':
			return bad("* and > are NATS subject wildcards")
		}
	}
	return nil
}

// checkGroup reports whether group is a usable consumer group name. Any
// UTF-8 text is: the durable consumer's name is an escaped form of it.
func checkGroup(op, group string) error {
	if group == "" || !utf8.ValidString(group) || len(group) > maxTopicLen {
		return message.Errorf(message.InvalidArgument, op, "consumer group %q: want 1 to 1024 bytes of UTF-8", group)
	}
	return nil
}

// streamName is the name of the stream that polybus creates for topic:
// "PB_" and the escaped topic. Long topics get "PBH_", a prefix of the
// escaped topic and a hash of the whole topic.
func streamName(topic string) string {
	return escapedName("PB_", "PBH_", topic)
}

// consumerName is the durable consumer name of group on a stream that
// polybus created for one topic: the escaped group name. On a stream that
// someone else created and that may capture several topics, the name also
// carries a hash of the topic ("T<hash>_<group>"), so that one group on two
// topics of that stream gets two consumers.
func consumerName(group, topic string, ownStream bool) string {
	if ownStream {
		return escapedName("", "H_", group)
	}
	return escapedName("T"+hash(topic, 16)+"_", "TH"+hash(topic, 16)+"_", group)
}

// escapedName escapes s into the characters that stream and consumer names
// allow everywhere, and that file systems (they name directories) keep
// apart: lower-case ASCII letters, digits and '-' stay; every other byte,
// '_' and upper-case letters included, becomes '_' and two upper-case hex
// digits. The mapping is injective, and no two results differ only in case,
// so "Orders" and "orders" get different directories on case-insensitive
// file systems too.
func escapedName(prefix, longPrefix, s string) string {
	return escapedNameMax(prefix, longPrefix, s, maxNameLen)
}

// escapedNameMax is escapedName with a length limit of limit bytes (at
// least 200) instead of maxNameLen.
func escapedNameMax(prefix, longPrefix, s string, limit int) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(prefix) + len(s))
	b.WriteString(prefix)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xf])
	}
	name := b.String()
	if len(name) <= limit {
		return name
	}
	// Too long: keep a readable head (cut before an escape, never inside
	// one) and make it unique with a hash of the whole input. Names with
	// longPrefix never collide with short ones, which use prefix.
	head := name[len(prefix):]
	cut := 160
	for cut > 0 && (head[cut-1] == '_' || cut >= 2 && head[cut-2] == '_') {
		cut--
	}
	return longPrefix + head[:cut] + "_" + hash(s, 32)
}

// hash returns the first n hex digits of the SHA-256 of s.
func hash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}
