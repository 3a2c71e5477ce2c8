package subscriber_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 20 * time.Second

func newBroker(t *testing.T) *memory.Broker {
	t.Helper()
	b, err := memory.New(memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func client(t *testing.T, pd publisher.Driver, sd subscriber.Driver) *polybus.Client {
	t.Helper()
	c, err := polybus.NewClient(pd, sd, polybus.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func TestChainRunsFirstOutermost(t *testing.T) {
	var order []string
	mw := func(name string) subscriber.Middleware {
		return func(next subscriber.Handler) subscriber.Handler {
			return func(ctx context.Context, m *message.Message) error {
				order = append(order, name)
				return next(ctx, m)
			}
		}
	}
	h := subscriber.Chain(mw("a"), nil, mw("b"), mw("c"))(func(context.Context, *message.Message) error {
		order = append(order, "h")
		return nil
	})
	if err := h(context.Background(), message.New(nil)); err != nil {
		t.Fatal(err)
	}
	if got := len(order); got != 4 || order[0] != "a" || order[1] != "b" || order[2] != "c" || order[3] != "h" {
		t.Fatalf("order %v, want [a b c h]", order)
	}
}

func TestSubscribeRejectsBadArguments(t *testing.T) {
	b := newBroker(t)
	c := client(t, b.PublisherDriver(), b.SubscriberDriver())
	s := c.Subscriber()
	ok := func(context.Context, *message.Message) error { return nil }
	ctx := context.Background()
	cases := []struct {
		name  string
		topic string
		h     subscriber.Handler
		opts  []subscriber.Option
	}{
		{"empty topic", "", ok, nil},
		{"nil handler", "t", nil, nil},
		{"negative concurrency", "t", ok, []subscriber.Option{subscriber.Concurrency(-1)}},
		{"prefetch below concurrency", "t", ok, []subscriber.Option{subscriber.Concurrency(8), subscriber.Prefetch(2)}},
		{"unknown ack mode", "t", ok, []subscriber.Option{subscriber.WithAckMode(7)}},
		{"unknown start", "t", ok, []subscriber.Option{subscriber.StartAt(9)}},
		{"negative nack delay", "t", ok, []subscriber.Option{subscriber.NackDelay(-time.Second)}},
	}
	for _, tc := range cases {
		if err := s.Subscribe(ctx, tc.topic, tc.h, tc.opts...); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", tc.name, err)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(ctx, "t", ok); !errors.Is(err, message.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
}

func TestCloseDeadlineCancelsStuckHandlers(t *testing.T) {
	b := newBroker(t)
	ctx := context.Background()
	c1 := client(t, b.PublisherDriver(), b.SubscriberDriver())
	m := message.New([]byte("slow"))
	if err := c1.Publisher().Publish(ctx, "t", m); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var handlerErr atomic.Value
	subDone := make(chan error, 1)
	go func() {
		subDone <- c1.Subscriber().Subscribe(ctx, "t", func(hctx context.Context, _ *message.Message) error {
			close(started)
			<-hctx.Done() // honours its context, as handlers must
			handlerErr.Store(hctx.Err())
			return hctx.Err()
		}, subscriber.Group("g"))
	}()
	<-started
	t0 := time.Now()
	closeCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := c1.Subscriber().Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took < 100*time.Millisecond || took > wait {
		t.Fatalf("Close took %s: it must wait for the deadline, then cancel", took)
	}
	if err := <-subDone; err != nil {
		t.Fatal(err)
	}
	if err, _ := handlerErr.Load().(error); !errors.Is(err, context.Canceled) {
		t.Fatalf("handler saw %v, want its context cancelled", err)
	}
	// The cancelled handler's message was nacked: the group gets it again.
	c2 := client(t, b.PublisherDriver(), b.SubscriberDriver())
	got := make(chan *message.Message, 1)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go c2.Subscriber().Subscribe(sctx, "t", func(_ context.Context, m *message.Message) error {
		got <- m
		return nil
	}, subscriber.Group("g"))
	select {
	case r := <-got:
		if r.ID != m.ID || r.Attempt() != 2 {
			t.Fatalf("redelivered %s attempt %d, want %s attempt 2", r.ID, r.Attempt(), m.ID)
		}
	case <-time.After(wait):
		t.Fatal("message not redelivered after its handler was cancelled")
	}
	stop()
	c2.Close(ctx)
}

// A Subscribe call stopped by its own context drains for DrainTimeout;
// a Close that starts meanwhile bounds that drain by its own deadline.
func TestCloseDeadlineBoundsADrainUnderWay(t *testing.T) {
	b := newBroker(t)
	ctx := context.Background()
	c := client(t, b.PublisherDriver(), b.SubscriberDriver())
	if err := c.Publisher().Publish(ctx, "t", message.New([]byte("slow"))); err != nil {
		t.Fatal(err)
	}
	stopping := make(chan (<-chan struct{}), 1)
	var handlerErr atomic.Value
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	subDone := make(chan error, 1)
	go func() {
		subDone <- c.Subscriber().Subscribe(sctx, "t", func(hctx context.Context, _ *message.Message) error {
			stopping <- subscriber.InfoFrom(hctx).Stopping()
			<-hctx.Done()
			handlerErr.Store(hctx.Err())
			return hctx.Err()
		}, subscriber.Group("g"), subscriber.DrainTimeout(time.Hour))
	}()
	var draining <-chan struct{}
	select {
	case draining = <-stopping:
	case <-time.After(wait):
		t.Fatal("handler never called")
	}
	stop()
	select {
	case <-draining:
	case <-time.After(wait):
		t.Fatal("the run did not start draining after its context ended")
	}
	closeCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- c.Subscriber().Close(closeCtx) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("Close waited for the hour-long DrainTimeout, not for its own deadline")
	}
	if err := <-subDone; err != nil {
		t.Fatal(err)
	}
	if err, _ := handlerErr.Load().(error); !errors.Is(err, context.Canceled) {
		t.Fatalf("handler saw %v, want its context cancelled", err)
	}
}

// noDelay declares that its broker cannot delay a nack, and records the
// delays it is asked for.
type noDelay struct {
	subscriber.Driver
	mu     sync.Mutex
	delays []time.Duration
}

func (d *noDelay) Capabilities() message.Capabilities {
	c := d.Driver.Capabilities()
	c.NackDelay = false
	return c
}

func (d *noDelay) Open(ctx context.Context, topic string, cfg subscriber.OpenConfig) (subscriber.Subscription, error) {
	s, err := d.Driver.Open(ctx, topic, cfg)
	return &recordNack{Subscription: s, d: d}, err
}

type recordNack struct {
	subscriber.Subscription
	d *noDelay
}

func (r *recordNack) Nack(ctx context.Context, ids []any, delay time.Duration) error {
	r.d.mu.Lock()
	r.d.delays = append(r.d.delays, delay)
	r.d.mu.Unlock()
	return r.Subscription.Nack(ctx, ids, delay)
}

func TestNackDelayIsEmulatedWhereTheBrokerHasNone(t *testing.T) {
	const delay = 250 * time.Millisecond
	b := newBroker(t)
	d := &noDelay{Driver: b.SubscriberDriver()}
	c := client(t, b.PublisherDriver(), d)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := c.Publisher().Publish(ctx, "t", message.New([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var times []time.Time
	second := make(chan struct{})
	subDone := make(chan error, 1)
	go func() {
		subDone <- c.Subscriber().Subscribe(ctx, "t", func(context.Context, *message.Message) error {
			mu.Lock()
			defer mu.Unlock()
			times = append(times, time.Now())
			if len(times) == 1 {
				return message.RetryAfter(errors.New("later"), delay)
			}
			close(second)
			return nil
		})
	}()
	select {
	case <-second:
	case <-time.After(wait):
		t.Fatal("not redelivered")
	}
	stop()
	if err := <-subDone; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if gap := times[1].Sub(times[0]); gap < delay {
		t.Fatalf("redelivered after %s, before the %s delay", gap, delay)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.delays) != 1 || d.delays[0] != 0 {
		t.Fatalf("driver asked for delays %v; a broker without NackDelay must get 0", d.delays)
	}
}

func TestInfoDescribesTheSubscribeCall(t *testing.T) {
	b := newBroker(t)
	c := client(t, b.PublisherDriver(), b.SubscriberDriver())
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := c.Publisher().Publish(ctx, "info", message.New(nil)); err != nil {
		t.Fatal(err)
	}
	if subscriber.InfoFrom(ctx) != nil {
		t.Fatal("Info outside a Subscribe call")
	}
	got := make(chan subscriber.Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- c.Subscriber().Subscribe(ctx, "info", func(hctx context.Context, _ *message.Message) error {
			got <- *subscriber.InfoFrom(hctx)
			return nil
		}, subscriber.Group("grp"), subscriber.Concurrency(3), subscriber.Unordered())
	}()
	select {
	case i := <-got:
		if i.Topic != "info" || i.Group != "grp" || i.Concurrency != 3 || i.Prefetch != 12 || i.Ordered || i.AckMode != subscriber.AtLeastOnce {
			t.Fatalf("Info %+v", i)
		}
	case <-time.After(wait):
		t.Fatal("handler not called")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
