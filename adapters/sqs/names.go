package sqs

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"strings"
	"unicode/utf8"

	"github.com/polybus/polybus/message"
)

// SQS's limits on names and IDs.
const (
	maxQueueName = 80  // letters, digits, '-' and '_', ".fifo" included
	maxGroupID   = 128 // MessageGroupId and MessageDeduplicationId
	fifoSuffix   = ".fifo"
	// hashLen is the length of the topic and group hashes in queue names:
	// 8 base32 characters, 40 bits.
	hashLen = 8
)

// DLQGroup is the consumer group of a native dead-letter queue: the queue
// that [Config.MaxReceives] redrives to is the queue of this group on the
// topic's dead-letter topic ([DLQTopic]), which is where `polybus dlq`
// reads dead letters.
const DLQGroup = "polybus-dlq"

// DLQTopic returns the dead-letter topic of topic: topic + ".dlq".
func DLQTopic(topic string) string { return topic + ".dlq" }

var lowerB32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// hash8 returns 8 base32 characters of the SHA-256 of s.
func hash8(s string) string {
	sum := sha256.Sum256([]byte(s))
	return lowerB32.EncodeToString(sum[:5])
}

// readable returns s with every byte that a queue name cannot hold
// replaced by '_', cut to at most n bytes. It is for people reading queue
// names; the hashes beside it make names unique.
func readable(s string, n int) string {
	b := make([]byte, 0, min(len(s), n))
	for i := 0; i < len(s) && len(b) < n; i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b = append(b, c)
		default:
			b = append(b, '_')
		}
	}
	return string(b)
}

// namer builds queue names for one client: prefix, FIFO or not.
//
// A group's queue is named
//
//	PREFIX + hash8(topic) + "-" + readable(topic) + "." + readable(group) + "-" + hash8(group) [+ ".fifo"]
//
// where the readable parts are cut so that the whole fits SQS's 80
// characters. Everything up to and including the first "-" after the
// prefix is the topic's prefix: it has a fixed length after PREFIX and
// depends on the topic alone, so ListQueues(QueueNamePrefix) finds exactly
// the topic's queues (up to a 40-bit hash collision), whatever the topic
// and group names hold.
type namer struct {
	prefix string
	fifo   bool
}

// topicPrefix returns the name prefix shared by every queue of topic.
func (n namer) topicPrefix(topic string) string {
	return n.prefix + hash8(topic) + "-"
}

// queueName returns the name of the queue of group on topic.
func (n namer) queueName(topic, group string) string {
	p := n.topicPrefix(topic)
	suffix := ""
	if n.fifo {
		suffix = fifoSuffix
	}
	// Room for the readable parts: the rest is fixed.
	room := maxQueueName - len(p) - len(suffix) - 1 - 1 - hashLen
	room = max(room, 2)
	rt := readable(topic, room/2)
	rg := readable(group, room-len(rt))
	if len(rg) < room-len(rt) {
		rt = readable(topic, room-len(rg))
	}
	return p + rt + "_" + rg + "-" + hash8(group) + suffix
}

// ours reports whether a queue name found under a topic's prefix is one of
// this client's kind: FIFO queues for a FIFO client, standard ones
// otherwise.
func (n namer) ours(name string) bool {
	return strings.HasSuffix(name, fifoSuffix) == n.fifo
}

// queueNameOf returns the last path element of a queue URL: its name.
func queueNameOf(url string) string {
	return url[strings.LastIndexByte(url, '/')+1:]
}

// checkTopic refuses names that cannot be a topic on this client.
func (n namer) checkTopic(op, topic string) error {
	switch {
	case topic == "":
		return message.Errorf(message.InvalidArgument, op, "empty topic")
	case !utf8.ValidString(topic):
		return message.Errorf(message.InvalidArgument, op, "topic %q is not valid UTF-8", topic)
	case !n.fifo && strings.HasSuffix(topic, fifoSuffix):
		return message.Errorf(message.InvalidArgument, op,
			"topic %q ends in .fifo: FIFO topics need a client opened with fifo=true (Config.FIFO), where every topic is FIFO", topic)
	}
	return nil
}

// checkGroup refuses names that cannot be a group.
func checkGroup(op, group string) error {
	switch {
	case group == "":
		return message.Errorf(message.InvalidArgument, op, "empty group")
	case !utf8.ValidString(group):
		return message.Errorf(message.InvalidArgument, op, "group %q is not valid UTF-8", group)
	}
	return nil
}

// fifoIDChar reports whether c may appear in a MessageGroupId or
// MessageDeduplicationId: letters, digits and ASCII punctuation.
func fifoIDChar(c byte) bool {
	return c > ' ' && c < 0x7f
}

func validFIFOID(s string) bool {
	if s == "" || len(s) > maxGroupID {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !fifoIDChar(s[i]) {
			return false
		}
	}
	return true
}

// fifoID returns s when SQS takes it as a MessageGroupId or
// MessageDeduplicationId, and otherwise "pbh-" and the hex SHA-256 of s:
// the same s always gives the same ID.
func fifoID(s string) string {
	if validFIFOID(s) {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "pbh-" + hex.EncodeToString(sum[:])
}

// QueueName returns the name of the queue of group on topic for a client
// with the given prefix (Config.Prefix; "" is the default "pb-") and FIFO
// setting: for operators and other SQS clients that need to find a group's
// queue.
func QueueName(prefix string, fifo bool, topic, group string) string {
	if prefix == "" {
		prefix = "pb-"
	}
	return namer{prefix: prefix, fifo: fifo}.queueName(topic, group)
}
