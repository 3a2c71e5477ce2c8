package benchmarks

import (
	"context"
	"strings"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wmessage "github.com/ThreeDotsLabs/watermill/message"
)

// NewWatermillKafka is watermill-kafka (Sarama) on a kafka:// URL, a
// SyncProducer for the publisher (Watermill sends a publish call's
// messages one SendMessage at a time) and a Sarama consumer group per
// subscriber. Every variant partitions on the message key (Watermill's
// partitioning marshaler, the key from the metadata) and creates the topic
// in Subscribe (SubscribeInitialize, KafkaPartitions partitions, as the
// raw client). With tuned false, the rest is Watermill's default Sarama
// configuration (acks from the leader only, a new group starts at the
// newest offset, auto-commit every second, protocol version 1.0). Tuned:
// acks=all as the raw client, a new group starts at the oldest offset,
// Sarama's consumer channel buffer at prefetch, protocol version
// kafkaVersion.
func NewWatermillKafka(url string, prefetch int, tuned bool) (*Watermill, error) {
	brokers := strings.Split(strings.TrimPrefix(strings.SplitN(url, "?", 2)[0], "kafka://"), ",")
	marshaler := wmkafka.NewWithPartitioningMarshaler(func(_ string, m *wmessage.Message) (string, error) {
		return m.Metadata.Get(wmKey), nil
	})
	pcfg := wmkafka.DefaultSaramaSyncPublisherConfig()
	scfg := wmkafka.DefaultSaramaSubscriberConfig()
	if tuned {
		pcfg.Producer.RequiredAcks = sarama.WaitForAll
		pcfg.Version = kafkaVersion
		scfg.Version = kafkaVersion
		scfg.Consumer.Offsets.Initial = sarama.OffsetOldest
		scfg.ChannelBufferSize = prefetch
	}
	pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{Brokers: brokers, Marshaler: marshaler, OverwriteSaramaConfig: pcfg}, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	return &Watermill{Pub: pub, NewSub: func(group string) (wmessage.Subscriber, error) {
		sub, err := wmkafka.NewSubscriber(wmkafka.SubscriberConfig{
			Brokers: brokers, Unmarshaler: marshaler, OverwriteSaramaConfig: scfg, ConsumerGroup: group,
			InitializeTopicDetails: &sarama.TopicDetail{NumPartitions: KafkaPartitions, ReplicationFactor: 1},
		}, watermill.NopLogger{})
		if err != nil {
			return nil, err
		}
		return kafkaInitSub{sub}, nil
	}}, nil
}

// kafkaVersion is the protocol version of the tuned Sarama clients.
var kafkaVersion = sarama.V3_6_0_0

// kafkaInitSub creates the topic before it subscribes.
type kafkaInitSub struct{ *wmkafka.Subscriber }

func (s kafkaInitSub) Subscribe(ctx context.Context, topic string) (<-chan *wmessage.Message, error) {
	if err := s.SubscribeInitialize(topic); err != nil {
		return nil, err
	}
	return s.Subscriber.Subscribe(ctx, topic)
}
