package benchmarks

import (
	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	wmessage "github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// NewWatermillAMQP is watermill-amqp's durable pub/sub
// (NewDurablePubSubConfig: a durable fanout exchange per topic, a durable
// queue per group named topic_group bound to it, persistent messages), a
// connection for the publisher and one per subscriber. With tuned false,
// the rest keeps Watermill's defaults: no publisher confirms (Publish
// returns once the messages are written to the socket, not once the
// broker has them), a channel opened and closed for each Publish call,
// classic queues, a prefetch (QoS) of 1. Tuned, it is set up as the raw
// client: publisher confirms (Watermill waits for each message's confirm
// before it sends the next), a pool of 8 publishing channels, quorum
// queues, a prefetch of prefetch.
func NewWatermillAMQP(url string, prefetch int, tuned bool) (*Watermill, error) {
	config := func(group string) wmamqp.Config {
		gen := wmamqp.GenerateQueueNameTopicNameWithSuffix(group)
		c := wmamqp.NewDurablePubSubConfig(url, gen)
		if tuned {
			c.Publish.ConfirmDelivery = true
			c.Publish.ChannelPoolSize = 8
			c.Queue.Arguments = amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}
			c.Consume.Qos.PrefetchCount = prefetch
		}
		return c
	}
	pub, err := wmamqp.NewPublisher(config(""), watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	return &Watermill{Pub: pub, NewSub: func(group string) (wmessage.Subscriber, error) {
		return wmamqp.NewSubscriber(config(group), watermill.NopLogger{})
	}}, nil
}
