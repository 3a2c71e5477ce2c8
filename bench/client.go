package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
)

// Message is one message of the workload.
type Message struct {
	Key     string
	Payload []byte
}

// A Client moves the workload's messages through one broker with one client
// library. Run calls Publisher and Subscribe from one goroutine; a
// Publisher is used by one goroutine at a time.
type Client interface {
	// Publisher returns a publisher for topic. Run opens one per publisher
	// goroutine.
	Publisher(ctx context.Context, topic string) (Publisher, error)
	// Subscribe starts consumers members of group on topic and returns once
	// they are started (not necessarily joined). handle is called for
	// every delivery, from many goroutines at once; the message is acked
	// when handle returns. The payload is valid only during the call.
	Subscribe(ctx context.Context, topic, group string, consumers int, handle func(payload []byte)) (Subscription, error)
	// Close releases the client.
	Close(ctx context.Context) error
}

// Publisher publishes to one topic.
type Publisher interface {
	// Publish returns once the broker has accepted every message of msgs.
	Publish(ctx context.Context, msgs []Message) error
	Close(ctx context.Context) error
}

// Subscription is a running set of consumers.
type Subscription interface {
	// Close stops the consumers and waits for their handlers.
	Close(ctx context.Context) error
}

// Cleaner is implemented by clients that can remove a topic (and its
// groups) after a run, for brokers where topics cost something (SQS queues).
type Cleaner interface {
	Cleanup(ctx context.Context, topic string) error
}

// PolybusOptions tunes the polybus client.
type PolybusOptions struct {
	// Concurrency and Prefetch of each consumer (subscriber.Config);
	// zero keeps polybus's defaults.
	Concurrency, Prefetch int
	// Unordered turns per-key order off.
	Unordered bool
	// Chain wraps the handler in middleware.DefaultChain with logging (to
	// nowhere, at debug level for successes), dead-lettering, retry by
	// redelivery and a one-minute timeout; false runs the handler bare.
	Chain bool
	// Subscribe are more options for every Subscribe call, applied before
	// Chain (so their middleware is outside it): telemetry's, for one.
	Subscribe []subscriber.Option
	// Cleanup removes a run's topics (sqs.DeleteTopics has this
	// signature); nil leaves them.
	Cleanup func(ctx context.Context, c *polybus.Client, topics []string) error
}

// Polybus returns a Client that opens url with polybus.Open (so the
// adapter for url's scheme must be registered: import its package). The
// connection is opened at once, so an unreachable broker fails here.
func Polybus(ctx context.Context, url string, opts PolybusOptions) (Client, error) {
	c, err := polybus.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	return FromClient(c, opts), nil
}

// FromClient returns a Client that runs the workload through c; its Close
// closes c.
func FromClient(c *polybus.Client, opts PolybusOptions) Client {
	return &polyClient{c: c, opts: opts}
}

// chain is the DefaultChain of PolybusOptions.Chain.
func chain(c *polybus.Client) (subscriber.Middleware, error) {
	return middleware.DefaultChain(middleware.ChainConfig{
		Logging: &middleware.LoggingConfig{Logger: slog.New(slog.DiscardHandler), SuccessLevel: slog.LevelDebug},
		DLQ:     &middleware.DLQConfig{Publisher: c.Publisher()},
		Retry:   &middleware.RetryConfig{Mode: middleware.Redelivery},
		Timeout: &middleware.TimeoutConfig{Timeout: time.Minute},
	})
}

type polyClient struct {
	c    *polybus.Client
	opts PolybusOptions
}

func (p *polyClient) Publisher(ctx context.Context, topic string) (Publisher, error) {
	return polyPublisher{p: p, topic: topic}, nil
}

type polyPublisher struct {
	p     *polyClient
	topic string
}

func (pp polyPublisher) Publish(ctx context.Context, msgs []Message) error {
	ms := make([]*message.Message, len(msgs))
	for i := range msgs {
		ms[i] = &message.Message{Key: msgs[i].Key, Payload: msgs[i].Payload}
	}
	return pp.p.c.Publisher().Publish(ctx, pp.topic, ms...)
}

func (polyPublisher) Close(context.Context) error { return nil }

func (p *polyClient) Subscribe(ctx context.Context, topic, group string, consumers int, handle func([]byte)) (Subscription, error) {
	cfg := subscriber.Config{
		Group:       group,
		Concurrency: p.opts.Concurrency,
		Prefetch:    p.opts.Prefetch,
		Unordered:   p.opts.Unordered,
	}
	opts := append([]subscriber.Option{subscriber.WithConfig(cfg)}, p.opts.Subscribe...)
	if p.opts.Chain {
		mw, err := chain(p.c)
		if err != nil {
			return nil, err
		}
		opts = append(opts, subscriber.Use(mw))
	}
	h := func(_ context.Context, m *message.Message) error {
		handle(m.Payload)
		return nil
	}
	s, ctx := NewConsumers(ctx)
	for range consumers {
		s.Go(func() {
			if err := p.c.Subscriber().Subscribe(ctx, topic, h, opts...); err != nil && !errors.Is(err, context.Canceled) {
				s.Fail(err)
			}
		})
	}
	return s, nil
}

// Consumers is the Subscription of a Client whose consumers are
// goroutines: start each with Go, under the context NewConsumers returns,
// and report their errors with Fail. Close cancels that context, waits for
// the goroutines as long as its own context allows, runs OnClose, and
// returns the first error reported.
type Consumers struct {
	// OnClose, when set, runs in Close after the goroutines ended (to
	// close channels or subscriptions); it may call Fail.
	OnClose func()

	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

// NewConsumers returns empty Consumers and the context their goroutines
// run under: it keeps ctx's values, not its cancellation; Close ends it.
func NewConsumers(ctx context.Context) (*Consumers, context.Context) {
	c := &Consumers{}
	ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	return c, ctx
}

// Go runs f in a goroutine that Close waits for.
func (c *Consumers) Go(f func()) { c.wg.Go(f) }

// Fail records err; Close returns the first one recorded.
func (c *Consumers) Fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

// Close stops the consumers; see Consumers.
func (c *Consumers) Close(ctx context.Context) error {
	c.cancel()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("bench: consumers did not stop: %w", ctx.Err())
	}
	if c.OnClose != nil {
		c.OnClose()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (p *polyClient) Cleanup(ctx context.Context, topic string) error {
	if p.opts.Cleanup == nil {
		return nil
	}
	return p.opts.Cleanup(ctx, p.c, []string{topic})
}

func (p *polyClient) Close(ctx context.Context) error { return p.c.Close(ctx) }
