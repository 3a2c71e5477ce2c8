package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	amqp "github.com/rabbitmq/amqp091-go"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/awssnssqs"
	"gocloud.dev/pubsub/mempubsub"
	"gocloud.dev/pubsub/rabbitpubsub"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/bench"
)

// GoCDK is a bench.Client on Go CDK pubsub (gocloud.dev) with its driver
// defaults. A Topic is opened once per topic and shared by the
// publishers; Go CDK sends one message per Send call (and batches what is
// in flight at once underneath), so a publish call Sends its messages
// concurrently and returns once every Send has returned (each after the
// driver's ack: a publisher confirm on RabbitMQ, SendMessageBatch's reply
// on SQS). The key goes in the metadata ("key"; the RabbitMQ routing
// key). A group is one Subscription, received from by consumers
// goroutines, each message acked after the handler (Go CDK batches the
// acks).
type GoCDK struct {
	openTopic func(ctx context.Context, topic string) (*pubsub.Topic, error)
	openSub   func(ctx context.Context, topic, group string) (*pubsub.Subscription, error)
	// keepSubs keeps a group's Subscription from one Subscribe to the
	// next (mempubsub: a Subscription is the group's queue).
	keepSubs bool
	closeFn  func() error
	cleanup  func(ctx context.Context, topic string) error
	// noKeys sends no metadata.
	noKeys bool

	mu     sync.Mutex
	topics map[string]*pubsub.Topic
	subs   map[string]*pubsub.Subscription
}

func (g *GoCDK) topic(ctx context.Context, name string) (*pubsub.Topic, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.topics == nil {
		g.topics, g.subs = map[string]*pubsub.Topic{}, map[string]*pubsub.Subscription{}
	}
	if t, ok := g.topics[name]; ok {
		return t, nil
	}
	t, err := g.openTopic(ctx, name)
	if err != nil {
		return nil, err
	}
	g.topics[name] = t
	return t, nil
}

func (g *GoCDK) Publisher(ctx context.Context, topic string) (bench.Publisher, error) {
	t, err := g.topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	return cdkPub{t, g.noKeys}, nil
}

type cdkPub struct {
	t      *pubsub.Topic
	noKeys bool
}

func (p cdkPub) Publish(ctx context.Context, msgs []bench.Message) error {
	if len(msgs) == 1 {
		return p.t.Send(ctx, cdkMsg(msgs[0], p.noKeys))
	}
	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	for i, m := range msgs {
		wg.Go(func() { errs[i] = p.t.Send(ctx, cdkMsg(m, p.noKeys)) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func cdkMsg(m bench.Message, noKeys bool) *pubsub.Message {
	pm := &pubsub.Message{Body: m.Payload}
	if m.Key != "" && !noKeys {
		pm.Metadata = map[string]string{"key": m.Key}
	}
	return pm
}

func (cdkPub) Close(context.Context) error { return nil }

func (g *GoCDK) Subscribe(ctx context.Context, topic, group string, consumers int, handle func([]byte)) (bench.Subscription, error) {
	if _, err := g.topic(ctx, topic); err != nil {
		return nil, err
	}
	var sub *pubsub.Subscription
	g.mu.Lock()
	sub = g.subs[topic+"\x00"+group]
	g.mu.Unlock()
	if sub == nil {
		var err error
		if sub, err = g.openSub(ctx, topic, group); err != nil {
			return nil, err
		}
		if g.keepSubs {
			g.mu.Lock()
			g.subs[topic+"\x00"+group] = sub
			g.mu.Unlock()
		}
	}
	s, ctx := bench.NewConsumers(ctx)
	if !g.keepSubs {
		s.OnClose = func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := sub.Shutdown(sctx); err != nil {
				s.Fail(err)
			}
		}
	}
	for range consumers {
		s.Go(func() {
			for {
				m, err := sub.Receive(ctx)
				if err != nil {
					if ctx.Err() == nil {
						s.Fail(err)
					}
					return
				}
				handle(m.Body)
				m.Ack()
			}
		})
	}
	return s, nil
}

// Cleanup removes topic's queue, where the broker charges for it (SQS).
func (g *GoCDK) Cleanup(ctx context.Context, topic string) error {
	g.mu.Lock()
	t := g.topics[topic]
	delete(g.topics, topic)
	g.mu.Unlock()
	var err error
	if t != nil {
		err = t.Shutdown(ctx)
	}
	if g.cleanup != nil {
		err = errors.Join(err, g.cleanup(ctx, topic))
	}
	return err
}

func (g *GoCDK) Close(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var errs []error
	for _, s := range g.subs {
		errs = append(errs, s.Shutdown(ctx))
	}
	for _, t := range g.topics {
		errs = append(errs, t.Shutdown(ctx))
	}
	if g.closeFn != nil {
		errs = append(errs, g.closeFn())
	}
	return errors.Join(errs...)
}

// NewGoCDKMem is mempubsub: a Topic per topic, a Subscription per group
// (ack deadline 1 minute) that lives as long as the client.
func NewGoCDKMem() *GoCDK {
	g := &GoCDK{keepSubs: true}
	g.openTopic = func(context.Context, string) (*pubsub.Topic, error) { return mempubsub.NewTopic(), nil }
	g.openSub = func(ctx context.Context, topic, group string) (*pubsub.Subscription, error) {
		t, err := g.topic(ctx, topic)
		if err != nil {
			return nil, err
		}
		return mempubsub.NewSubscription(t, time.Minute), nil
	}
	return g
}

// NewGoCDKRabbit is rabbitpubsub on a connection of its own. Go CDK
// declares nothing: the client declares a durable fanout exchange per
// topic (what Go CDK asks for) and a durable quorum queue per group
// (topic.group) bound to it, with one Subscription per group for the
// client's life (as mempubsub). Publishes are confirmed (Go CDK waits for
// the confirms); the subscription keeps Go CDK's default prefetch.
func NewGoCDKRabbit(url string) (*GoCDK, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, fmt.Errorf("gocdk rabbit: %w", err)
	}
	declare := func(topic, group string) error {
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		defer ch.Close()
		if err := ch.ExchangeDeclare(topic, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
			return err
		}
		if group == "" {
			return nil
		}
		q := topic + "." + group
		if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); err != nil {
			return err
		}
		return ch.QueueBind(q, "", topic, false, nil)
	}
	// A Subscription per group for the client's life: shut down and
	// reopened between phases, the new one sometimes received nothing.
	g := &GoCDK{closeFn: conn.Close, keepSubs: true}
	g.openTopic = func(_ context.Context, topic string) (*pubsub.Topic, error) {
		if err := declare(topic, ""); err != nil {
			return nil, err
		}
		return rabbitpubsub.OpenTopic(conn, topic, &rabbitpubsub.TopicOptions{KeyName: "key"}), nil
	}
	g.openSub = func(_ context.Context, topic, group string) (*pubsub.Subscription, error) {
		if err := declare(topic, group); err != nil {
			return nil, err
		}
		return rabbitpubsub.OpenSubscription(conn, topic+"."+group, nil), nil
	}
	return g, nil
}

// NewGoCDKSQS is awssnssqs straight on SQS (no SNS: ElasticMQ has none),
// on the SDK client of c, a polybus client of sqs:// (as the raw client):
// a standard queue per topic (cdk-<topic>; the workload's one group is the
// queue), Go CDK's default batching, every body base64-encoded and no
// metadata (with its defaults, base64 for non-UTF-8 bodies only and the
// key as a message attribute, ElasticMQ rejected the batches:
// InvalidAttributeValue, InvalidMessageContents).
func NewGoCDKSQS(c *polybus.Client) (*GoCDK, error) {
	var api *sqs.Client
	if !c.Publisher().As(&api) {
		return nil, errors.New("gocdk sqs: the polybus client has no SQS client")
	}
	var mu sync.Mutex
	urls := map[string]string{}
	url := func(ctx context.Context, topic string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if u, ok := urls[topic]; ok {
			return u, nil
		}
		out, err := api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("cdk-" + topic)})
		if err != nil {
			return "", err
		}
		urls[topic] = aws.ToString(out.QueueUrl)
		return urls[topic], nil
	}
	g := &GoCDK{noKeys: true}
	g.openTopic = func(ctx context.Context, topic string) (*pubsub.Topic, error) {
		u, err := url(ctx, topic)
		if err != nil {
			return nil, err
		}
		return awssnssqs.OpenSQSTopic(ctx, api, u, &awssnssqs.TopicOptions{BodyBase64Encoding: awssnssqs.Always}), nil
	}
	g.openSub = func(ctx context.Context, topic, _ string) (*pubsub.Subscription, error) {
		u, err := url(ctx, topic)
		if err != nil {
			return nil, err
		}
		return awssnssqs.OpenSubscription(ctx, api, u, nil), nil
	}
	g.cleanup = func(ctx context.Context, topic string) error {
		mu.Lock()
		u, ok := urls[topic]
		delete(urls, topic)
		mu.Unlock()
		if !ok {
			return nil
		}
		_, err := api.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(u)})
		return err
	}
	return g, nil
}
