package nats

import (
	"hash/fnv"
	"strconv"
	"strings"
)

// Partitioned layout (see the package documentation, "Partitions"): the
// stream of topic T has, besides T itself, one subject per partition,
// PartitionPrefix + "<p>." + T, and a publisher puts each message on the
// subject of its key's partition. Every group has one durable pull
// consumer per partition, under the priority policy pinned_client, so that
// one client at a time receives a partition's messages.

// PartitionPrefix starts the partition subjects of every topic: partition p
// of topic T is the subject "_PB.<p>.T". Topics may not start with it.
const PartitionPrefix = "_PB."

// DefaultPartitions is the number of partitions of a stream that polybus
// creates when Config.Partitions is 0.
const DefaultPartitions = 8

// maxPartitions bounds Config.Partitions: every group has a consumer per
// partition.
const maxPartitions = 256

// metaPartitions is the stream metadata key that records the stream's
// partition count; every client reads it from the stream, so that all of
// them agree whatever their own Config says.
const metaPartitions = "polybus-partitions"

// priorityGroup is the priority group of every partition consumer.
const priorityGroup = "polybus"

// partitionOf returns the partition of a message: FNV-1a (32 bits) of its
// key, modulo n; a message without a key, which promises no order, is
// spread by its ID instead.
func partitionOf(key, id string, n int) int {
	h := fnv.New32a()
	if key != "" {
		_, _ = h.Write([]byte(key))
	} else {
		_, _ = h.Write([]byte(id))
	}
	return int(h.Sum32() % uint32(n))
}

// partitionSubject returns the subject of partition p of topic.
func partitionSubject(topic string, p int) string {
	return PartitionPrefix + strconv.Itoa(p) + "." + topic
}

// partitionWildcard returns the subject filter of all of topic's partitions.
func partitionWildcard(topic string) string {
	return PartitionPrefix + "*." + topic
}

// partitionConsumerName is the durable consumer of partition p of group:
// the escaped group name, "_P" and p. Escaped names never hold "_P" (an
// escape is '_' and two hex digits), so these never collide with a group's
// unpartitioned consumer nor with another group's.
func partitionConsumerName(group string, p int) string {
	suffix := "_P" + strconv.Itoa(p)
	return escapedNameMax("", "H_", group, maxNameLen-len(suffix)) + suffix
}

// memberPrefix is the membership key prefix of group on stream: the KV key
// of each member is memberPrefix + its ID.
func memberPrefix(stream, group string) string {
	// KV keys take [-/_=.a-zA-Z0-9]; stream names of polybus's own
	// streams and escaped names use a subset.
	return stream + "." + escapedNameMax("", "H_", group, 200) + "."
}

// parsePartitions reads a stream's partition count from its metadata; 0
// when it has none (a stream of the unpartitioned layout).
func parsePartitions(md map[string]string) int {
	n, err := strconv.Atoi(strings.TrimSpace(md[metaPartitions]))
	if err != nil || n < 1 || n > maxPartitions {
		return 0
	}
	return n
}
