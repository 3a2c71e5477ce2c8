package kafka

import (
	"context"
	"errors"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	meta "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/polybus/polybus/message"
)

// checkTopic refuses names that Kafka refuses: empty, "." or "..", longer
// than 249 bytes, or with a byte other than ASCII letters, digits, '.',
// '_' and '-'.
func checkTopic(op, topic string) error {
	if topic == "" || topic == "." || topic == ".." || len(topic) > 249 {
		return message.Errorf(message.InvalidArgument, op, "topic %q: Kafka topics are 1 to 249 bytes, not \".\" or \"..\"", topic)
	}
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return message.Errorf(message.InvalidArgument, op, "topic %q: Kafka topics take only ASCII letters, digits, '.', '_' and '-'", topic)
		}
	}
	return nil
}

// checkGroup refuses a group name that Kafka cannot take.
func checkGroup(op, group string) error {
	if group == "" || len(group) > 255 {
		return message.Errorf(message.InvalidArgument, op, "group %q: want 1 to 255 bytes", group)
	}
	return nil
}

// topicCache remembers the topics that this client has made sure of: that
// they exist and every partition has a leader. A topic is created (with
// Config.Partitions and Config.Replication) the first time it is used,
// once per client; concurrent callers wait for the same attempt.
type topicCache struct {
	c  *core
	mu sync.Mutex
	m  map[string]*topicEntry
}

type topicEntry struct {
	ready      chan struct{} // closed when the attempt ends
	err        error
	partitions []int // 0..n-1
}

// ensure returns the topic's partitions, creating the topic when it does
// not exist, and waiting until every partition has a leader.
func (tc *topicCache) ensure(ctx context.Context, topic string) ([]int, error) {
	for {
		tc.mu.Lock()
		e, ok := tc.m[topic]
		if !ok {
			e = &topicEntry{ready: make(chan struct{})}
			tc.m[topic] = e
			tc.mu.Unlock()
			e.partitions, e.err = tc.c.makeTopic(ctx, topic)
			if e.err != nil {
				tc.mu.Lock()
				delete(tc.m, topic)
				tc.mu.Unlock()
			}
			close(e.ready)
			return e.partitions, e.err
		}
		tc.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.err == nil {
			return e.partitions, nil
		}
		// That attempt failed (perhaps for its caller's context): try
		// again with ours.
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// forget drops topic from the cache, so that the next use looks it up (and
// creates it) again.
func (tc *topicCache) forget(topic string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if e, ok := tc.m[topic]; ok {
		select {
		case <-e.ready:
			delete(tc.m, topic)
		default:
		}
	}
}

// makeTopic creates topic unless it exists and waits for its leaders.
func (c *core) makeTopic(ctx context.Context, topic string) ([]int, error) {
	const op = "kafka: create topic"
	if parts, ok := c.leaders(ctx, topic, false); ok && c.leadersServe(ctx, topic, parts) {
		return parts, nil
	}
	res, err := c.client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{
		Topics: []kafkago.TopicConfig{{
			Topic:             topic,
			NumPartitions:     c.cfg.Partitions,
			ReplicationFactor: c.cfg.Replication,
		}},
	})
	if err != nil {
		return nil, coded(op, err)
	}
	if err := res.Errors[topic]; err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
		return nil, message.Errorf(ErrorCode(err), op, "create topic %s (%d partitions, replication %d): %w", topic, c.cfg.Partitions, c.cfg.Replication, err)
	}
	// Wait for the leaders in the metadata that the transport routes
	// produce requests by. A topic created by someone else is not in the
	// transport's cache yet: ask the broker itself (the topic exists, so
	// allowing auto-creation in that request creates nothing).
	backoff := 20 * time.Millisecond
	for {
		if parts, ok := c.leaders(ctx, topic, true); ok && c.leadersServe(ctx, topic, parts) {
			return parts, nil
		}
		if !sleepCtx(ctx, backoff) {
			return nil, ctx.Err()
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// leaders reports the topic's partitions when the metadata shows a leader
// for every one. fresh asks the broker rather than the transport's cache
// when the cache does not know the topic.
func (c *core) leaders(ctx context.Context, topic string, fresh bool) ([]int, bool) {
	res, err := c.transport.RoundTrip(ctx, c.client.Addr, &meta.Request{TopicNames: []string{topic}, AllowAutoTopicCreation: fresh})
	if err != nil {
		return nil, false
	}
	md, ok := res.(*meta.Response)
	if !ok || len(md.Topics) != 1 {
		return nil, false
	}
	t := md.Topics[0]
	if t.ErrorCode != 0 || len(t.Partitions) == 0 {
		return nil, false
	}
	parts := make([]int, len(t.Partitions))
	for i, p := range t.Partitions {
		if p.ErrorCode != 0 || p.LeaderID < 0 || int(p.PartitionIndex) >= len(parts) {
			return nil, false
		}
		parts[i] = i
	}
	return parts, true
}

// leadersServe reports whether every partition's leader answers for it:
// right after creation the metadata can name a leader that does not act as
// one yet (a produce then fails with NotLeaderForPartition). A ListOffsets
// goes to each leader and fails the same way until it does.
func (c *core) leadersServe(ctx context.Context, topic string, parts []int) bool {
	reqs := make([]kafkago.OffsetRequest, len(parts))
	for i, p := range parts {
		reqs[i] = kafkago.LastOffsetOf(p)
	}
	res, err := c.client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		return false
	}
	got := res.Topics[topic]
	if len(got) != len(parts) {
		return false
	}
	for _, po := range got {
		if po.Error != nil {
			return false
		}
	}
	return true
}
