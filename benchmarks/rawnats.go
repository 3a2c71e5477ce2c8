package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/bench"
	"github.com/polybus/polybus/message"
)

// RawNATS is nats.go's jetstream package tuned as the polybus adapter uses
// it: a stream per topic as the adapter creates one (file storage, limits
// retention, discard old, one replica, a 2-minute duplicates window), each
// message published with PublishMsgAsync and a Nats-Msg-Id header (as
// polybus sets), no retries, a publish call's PubAcks all awaited before
// it returns (a 30s PubAck timeout, the adapter's publish_timeout); a
// durable pull consumer per group (explicit acks, AckWait 30s,
// MaxAckPending prefetch, deliver all), Consume with PullMaxMessages
// prefetch and a 1s heartbeat on each of the group's members, and an Ack
// per message after the handler.
type RawNATS struct {
	nc       *natsgo.Conn
	js       jetstream.JetStream
	prefetch int
	own      bool

	mu      sync.Mutex
	streams map[string]bool
}

// NewRawNATS connects to a nats:// URL.
func NewRawNATS(ctx context.Context, url string, prefetch int) (*RawNATS, error) {
	nc, err := natsgo.Connect(strings.SplitN(url, "?", 2)[0])
	if err != nil {
		return nil, fmt.Errorf("raw nats: %w", err)
	}
	return newRawNATS(nc, prefetch, true)
}

// NewRawNATSEmbedded connects in-process to the server of c, a polybus
// client of embedded://.
func NewRawNATSEmbedded(c *polybus.Client, prefetch int) (*RawNATS, error) {
	var srv *server.Server
	if !c.Publisher().As(&srv) {
		return nil, errors.New("raw nats: the polybus client has no embedded server")
	}
	nc, err := natsgo.Connect("", natsgo.InProcessServer(srv))
	if err != nil {
		return nil, fmt.Errorf("raw nats: %w", err)
	}
	return newRawNATS(nc, prefetch, true)
}

func newRawNATS(nc *natsgo.Conn, prefetch int, own bool) (*RawNATS, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<16),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &RawNATS{nc: nc, js: js, prefetch: prefetch, own: own, streams: map[string]bool{}}, nil
}

func natsStream(topic string) string {
	return "RAW_" + strings.NewReplacer(".", "_", "*", "_", ">", "_").Replace(topic)
}

func (n *RawNATS) ensure(ctx context.Context, topic string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.streams[topic] {
		return nil
	}
	_, err := n.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: natsStream(topic), Subjects: []string{topic},
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		Storage: jetstream.FileStorage, Replicas: 1, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("raw nats: stream for %s: %w", topic, err)
	}
	n.streams[topic] = true
	return nil
}

func (n *RawNATS) Publisher(ctx context.Context, topic string) (bench.Publisher, error) {
	if err := n.ensure(ctx, topic); err != nil {
		return nil, err
	}
	return &natsPub{n: n, topic: topic}, nil
}

type natsPub struct {
	n       *RawNATS
	topic   string
	futures []jetstream.PubAckFuture
}

func (p *natsPub) Publish(ctx context.Context, msgs []bench.Message) error {
	p.futures = p.futures[:0]
	for _, m := range msgs {
		nm := &natsgo.Msg{Subject: p.topic, Header: natsgo.Header{}, Data: m.Payload}
		nm.Header.Set(jetstream.MsgIDHeader, message.NewID())
		f, err := p.n.js.PublishMsgAsync(nm, jetstream.WithRetryAttempts(0))
		if err != nil {
			return err
		}
		p.futures = append(p.futures, f)
	}
	for _, f := range p.futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (p *natsPub) Close(context.Context) error { return nil }

func (n *RawNATS) Subscribe(ctx context.Context, topic, group string, consumers int, handle func([]byte)) (bench.Subscription, error) {
	if err := n.ensure(ctx, topic); err != nil {
		return nil, err
	}
	cons, err := n.js.CreateOrUpdateConsumer(ctx, natsStream(topic), jetstream.ConsumerConfig{
		Durable: group, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxDeliver: -1, MaxAckPending: n.prefetch, FilterSubject: topic,
	})
	if err != nil {
		return nil, fmt.Errorf("raw nats: consumer %s: %w", group, err)
	}
	s := &ccSub{}
	for range consumers {
		cc, err := cons.Consume(func(m jetstream.Msg) {
			handle(m.Data())
			if err := m.Ack(); err != nil {
				s.fail(err)
			}
		}, jetstream.PullMaxMessages(n.prefetch), jetstream.PullHeartbeat(time.Second))
		if err != nil {
			s.Close(ctx)
			return nil, err
		}
		s.ccs = append(s.ccs, cc)
	}
	return s, nil
}

type ccSub struct {
	ccs []jetstream.ConsumeContext
	mu  sync.Mutex
	err error
}

func (s *ccSub) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

func (s *ccSub) Close(ctx context.Context) error {
	for _, cc := range s.ccs {
		cc.Drain()
	}
	for _, cc := range s.ccs {
		select {
		case <-cc.Closed():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (n *RawNATS) Close(context.Context) error {
	if n.own {
		n.nc.Close()
	}
	return nil
}
