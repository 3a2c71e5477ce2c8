package benchmarks

import (
	"context"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	wmessage "github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NewWatermillNATS is watermill-nats's JetStream package (pkg/jetstream)
// on connections from connect (one for the publisher, one per
// subscriber: a Subscriber's Close drains its connection). Every variant
// creates the topic's stream with SubscribeInitialize (Watermill's
// default stream: file storage, limits retention, the server's 2-minute
// duplicates window, as the raw client's). The publisher is Watermill's
// only one: a synchronous PublishMsg per message, each PubAck awaited
// before the next.
//
// With tuned false, the subscribers keep Watermill's defaults: an
// ephemeral consumer per subscriber (so a group of several consumers gets
// every message once per consumer), nats.go's default pull size, and a
// DoubleAck per message. Tuned, they share a durable consumer per group,
// as the raw client (explicit acks, MaxAckPending prefetch, but AckWait
// wmNATSAckWait,
// deliver all), pull prefetch messages at a time with a 1s heartbeat, and
// ack asynchronously (a plain Ack, as the raw client).
func NewWatermillNATS(connect func() (*natsgo.Conn, error), prefetch int, tuned bool) (*Watermill, error) {
	nc, err := connect()
	if err != nil {
		return nil, err
	}
	pub, err := wmjs.NewPublisher(wmjs.PublisherConfig{Conn: nc, Logger: watermill.NopLogger{}})
	if err != nil {
		nc.Close()
		return nil, err
	}
	newSub := func(group string) (wmessage.Subscriber, error) {
		snc, err := connect()
		if err != nil {
			return nil, err
		}
		cfg := wmjs.SubscriberConfig{Conn: snc, Logger: watermill.NopLogger{}}
		if tuned {
			cfg.AckAsync = true
			cfg.ConsumeOptions = []jetstream.PullConsumeOpt{jetstream.PullMaxMessages(prefetch), jetstream.PullHeartbeat(time.Second)}
			cfg.ResourceInitializer = func(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
				c, err := js.CreateOrUpdateConsumer(ctx, topic, jetstream.ConsumerConfig{
					Durable: "watermill__" + group, AckPolicy: jetstream.AckExplicitPolicy, AckWait: wmNATSAckWait,
					MaxDeliver: -1, MaxAckPending: prefetch, DeliverPolicy: jetstream.DeliverAllPolicy,
				})
				return c, nil, err
			}
		}
		sub, err := wmjs.NewSubscriber(cfg)
		if err != nil {
			snc.Close()
			return nil, err
		}
		return initSub{sub}, nil
	}
	return &Watermill{Pub: pub, NewSub: newSub}, nil
}

// wmNATSAckWait is the tuned consumer's AckWait. A closed Watermill
// subscriber leaves its last pull's messages unacked (the raw client's
// Drain handles and acks them): with 30s, the raw client's, the next
// subscriber of the group waited 30s for their redelivery, and the
// consume phase ran at 33 msgs/s.
const wmNATSAckWait = 2 * time.Second

// initSub creates the stream before it subscribes.
type initSub struct{ *wmjs.Subscriber }

func (s initSub) Subscribe(ctx context.Context, topic string) (<-chan *wmessage.Message, error) {
	if err := s.SubscribeInitialize(topic); err != nil && !strings.Contains(err.Error(), "already in use") {
		return nil, err
	}
	return s.Subscriber.Subscribe(ctx, topic)
}
