package rabbitmq

import (
	"hash/fnv"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/polybus/polybus/message"
)

// Limits on names, so that every queue name polybus derives stays within
// AMQP's 255-byte short strings.
const (
	maxTopic = 160
	maxGroup = 64
)

// checkTopic refuses topics that cannot be an exchange name of their own.
func checkTopic(op, topic string) error {
	switch {
	case topic == "":
		return message.Errorf(message.InvalidArgument, op, "empty topic")
	case len(topic) > maxTopic:
		return message.Errorf(message.InvalidArgument, op, "topic of %d bytes: at most %d", len(topic), maxTopic)
	case !utf8.ValidString(topic):
		return message.Errorf(message.InvalidArgument, op, "topic %q is not valid UTF-8", topic)
	case strings.HasPrefix(topic, "amq."):
		return message.Errorf(message.InvalidArgument, op, "topic %q: names starting with amq. belong to RabbitMQ", topic)
	}
	for _, r := range topic {
		if r < 0x20 || r == 0x7f {
			return message.Errorf(message.InvalidArgument, op, "topic %q has a control character", topic)
		}
	}
	return nil
}

// checkGroup refuses groups outside [A-Za-z0-9._:-]{1,64}: the characters
// '@', '#' and '~' then separate the parts of the names in queueName and
// friends, which keeps those names injective.
func checkGroup(op, group string) error {
	if group == "" || len(group) > maxGroup {
		return message.Errorf(message.InvalidArgument, op, "group %q: want 1 to %d characters", group, maxGroup)
	}
	for i := 0; i < len(group); i++ {
		c := group[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return message.Errorf(message.InvalidArgument, op, "group %q: only letters, digits and . _ : - are allowed", group)
		}
	}
	return nil
}

// QueueName returns the name of group's queue on topic in the unordered
// layout: "group@topic". Other AMQP clients consume from it.
func QueueName(topic, group string) string { return group + "@" + topic }

// PartitionQueueName returns the name of partition p's queue of group on
// topic in the ordered layout: "group#p@topic".
func PartitionQueueName(topic, group string, p int) string {
	return group + "#" + strconv.Itoa(p) + "@" + topic
}

// RoutingKey returns the routing key of partition p: "p.<p>". Every group
// queue of the unordered layout binds "#" and so receives them all.
func RoutingKey(p int) string { return "p." + strconv.Itoa(p) }

// Partition returns the partition of a message key among n: FNV-1a (32
// bit) of the key, modulo n. Another client that publishes with keys
// computes the same to keep a key's messages in one partition.
func Partition(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key)) // never fails
	return int(h.Sum32() % uint32(n))
}

// retryQueueName is the delay queue of one delay bucket for a group queue.
func retryQueueName(queue string, bucket string) string {
	i := strings.IndexByte(queue, '@')
	return queue[:i] + "~" + bucket + queue[i:]
}

// membersQueueName is the queue whose consumers count a group's live
// subscribers in the ordered layout.
func membersQueueName(topic, group string) string { return group + "~members@" + topic }
