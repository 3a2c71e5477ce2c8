package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/polybus/polybus/bench"
)

// KafkaPartitions is the partition count of the topics the raw Kafka
// client creates: the polybus adapter's default (kafka.Config.Partitions).
const KafkaPartitions = 8

// RawKafka is segmentio/kafka-go tuned as the polybus adapter uses it:
// topics created ahead with KafkaPartitions partitions (replication 1); a
// kafka.Writer per publisher on one shared Transport, acks=all, murmur2
// partitioning on the key, MaxAttempts 1, a publish call written as one
// batch (BatchSize = the call, BatchBytes 16 MiB, and a
// BatchTimeout of 20µs: polybus writes a call's records at once, with no
// linger, while a Writer's partial batch waits for BatchTimeout, 1s when
// zero; a 1ms one, as in adapters/kafka/bench_test.go, put the steady
// phase's one-message calls at a p50 of 80ms; POLYBUS_BENCH_KAFKA_LINGER
// sets it); a
// kafka.Reader per consumer in the group (MinBytes 1, MaxBytes 16 MiB,
// MaxWait 500ms, QueueCapacity prefetch, heartbeat 1s, session 10s, from
// the earliest offset), FetchMessage then the handler, and the handled
// messages committed synchronously in batches (what has piled up while
// the last commit ran), as the adapter commits each ack batch.
type RawKafka struct {
	brokers  []string
	tr       *kafkago.Transport
	cl       *kafkago.Client
	prefetch int
	batch    int

	mu     sync.Mutex
	topics map[string]bool
}

// NewRawKafka returns the raw client for a kafka://host:port[,host:port]
// URL; prefetch is each Reader's QueueCapacity, batch the Writer's
// BatchSize (the workload's publish call).
func NewRawKafka(ctx context.Context, url string, prefetch, batch int) (*RawKafka, error) {
	hosts := strings.TrimPrefix(strings.SplitN(url, "?", 2)[0], "kafka://")
	brokers := strings.Split(hosts, ",")
	tr := &kafkago.Transport{}
	k := &RawKafka{brokers: brokers, tr: tr, cl: &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: tr, Timeout: 10 * time.Second},
		prefetch: prefetch, batch: batch, topics: map[string]bool{}}
	if _, err := k.cl.Metadata(ctx, &kafkago.MetadataRequest{}); err != nil {
		return nil, fmt.Errorf("raw kafka: %w", err)
	}
	return k, nil
}

// ensure creates topic once, then waits until its metadata has leaders.
func (k *RawKafka) ensure(ctx context.Context, topic string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.topics[topic] {
		return nil
	}
	res, err := k.cl.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{
		Topic: topic, NumPartitions: KafkaPartitions, ReplicationFactor: 1}}})
	if err != nil {
		return err
	}
	if err := res.Errors[topic]; err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		md, err := k.cl.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) == KafkaPartitions {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("raw kafka: topic %s has no leaders after 30s", topic)
		}
		time.Sleep(100 * time.Millisecond)
	}
	k.topics[topic] = true
	return nil
}

func (k *RawKafka) Publisher(ctx context.Context, topic string) (bench.Publisher, error) {
	if err := k.ensure(ctx, topic); err != nil {
		return nil, err
	}
	w := &kafkago.Writer{
		Transport: k.tr, Addr: kafkago.TCP(k.brokers...), Topic: topic,
		Balancer: &kafkago.Murmur2Balancer{}, MaxAttempts: 1,
		BatchSize: max(k.batch, 1), BatchBytes: 16 << 20, BatchTimeout: kafkaBatchTimeout,
		RequiredAcks: kafkago.RequireAll,
	}
	return &kafkaPub{w: w}, nil
}

type kafkaPub struct {
	w   *kafkago.Writer
	buf []kafkago.Message
}

// Publish writes msgs and returns once every one is acknowledged by all
// in-sync replicas. While the Writer's transport has not yet seen the
// new topic's metadata, it retries for up to 30 seconds.
func (p *kafkaPub) Publish(ctx context.Context, msgs []bench.Message) error {
	p.buf = p.buf[:0]
	for _, m := range msgs {
		var key []byte
		if m.Key != "" {
			key = []byte(m.Key)
		}
		p.buf = append(p.buf, kafkago.Message{Key: key, Value: m.Payload})
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.w.WriteMessages(ctx, p.buf...)
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) || !retriable(err) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func retriable(err error) bool {
	var t interface{ Temporary() bool }
	if errors.As(err, &t) && t.Temporary() {
		return true
	}
	var we kafkago.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && !errors.Is(e, kafkago.UnknownTopicOrPartition) && !errors.Is(e, kafkago.LeaderNotAvailable) && !errors.Is(e, kafkago.NotLeaderForPartition) {
				return false
			}
		}
		return true
	}
	var ne net.Error
	return errors.Is(err, kafkago.UnknownTopicOrPartition) || errors.Is(err, kafkago.LeaderNotAvailable) || errors.As(err, &ne)
}

func (p *kafkaPub) Close(context.Context) error { return p.w.Close() }

func (k *RawKafka) Subscribe(ctx context.Context, topic, group string, consumers int, handle func([]byte)) (bench.Subscription, error) {
	if err := k.ensure(ctx, topic); err != nil {
		return nil, err
	}
	s, ctx := bench.NewConsumers(ctx)
	for range consumers {
		r := kafkago.NewReader(kafkago.ReaderConfig{
			Brokers: k.brokers, GroupID: group, Topic: topic,
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 500 * time.Millisecond,
			QueueCapacity: k.prefetch, StartOffset: kafkago.FirstOffset,
			HeartbeatInterval: time.Second, SessionTimeout: 10 * time.Second,
			RebalanceTimeout: 30 * time.Second,
		})
		commits := make(chan kafkago.Message, k.prefetch)
		s.Go(func() {
			defer close(commits)
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					if ctx.Err() == nil {
						s.Fail(err)
					}
					return
				}
				handle(m.Value)
				commits <- m
			}
		})
		s.Go(func() {
			defer r.Close()
			batch := make([]kafkago.Message, 0, k.prefetch)
			for m := range commits {
				batch = append(batch[:0], m)
			more:
				for len(batch) < cap(batch) {
					select {
					case m, ok := <-commits:
						if !ok {
							break more
						}
						batch = append(batch, m)
					default:
						break more
					}
				}
				cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := r.CommitMessages(cctx, batch...); err != nil && ctx.Err() == nil {
					s.Fail(err)
				}
				cancel()
			}
		})
	}
	return s, nil
}

func (k *RawKafka) Close(context.Context) error {
	k.tr.CloseIdleConnections()
	return nil
}

// kafkaBatchTimeout is the raw Writer's BatchTimeout.
var kafkaBatchTimeout = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("POLYBUS_BENCH_KAFKA_LINGER")); err == nil {
		return d
	}
	return 20 * time.Microsecond
}()
