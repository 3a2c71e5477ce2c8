package middleware

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
)

// chaosDriver wraps a subscriber.Driver and makes its deliveries worse, as
// a broker without order may: each subscription keeps back what the inner
// one delivered and hands it out in random order and random batch sizes,
// and delivers some messages a second time (a copy whose ack and nack are
// swallowed, as a broker's duplicate would be settled by nobody).
type chaosDriver struct {
	subscriber.Driver
	seed    uint64
	dupRate float64

	mu    sync.Mutex
	subs  int
	dups  int
	total int
}

type chaosDupAck struct{ n int }

func (d *chaosDriver) Open(ctx context.Context, topic string, cfg subscriber.OpenConfig) (subscriber.Subscription, error) {
	sub, err := d.Driver.Open(ctx, topic, cfg)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.subs++
	seed := d.seed + uint64(d.subs)
	d.mu.Unlock()
	return &chaosSub{Subscription: sub, d: d, rnd: rand.New(rand.NewPCG(seed, seed*7+1))}, nil
}

// counts returns how many deliveries the driver made and how many of them
// were duplicates it invented.
func (d *chaosDriver) counts() (total, dups int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total, d.dups
}

type chaosSub struct {
	subscriber.Subscription
	d   *chaosDriver
	rnd *rand.Rand // used by the Receive goroutine only
	buf []subscriber.Received
}

func (s *chaosSub) Receive(ctx context.Context, max int) ([]subscriber.Received, error) {
	if len(s.buf) == 0 {
		recs, err := s.Subscription.Receive(ctx, max)
		if err != nil {
			return nil, err
		}
		s.buf = append(s.buf, recs...)
	} else {
		// Gather whatever else is ready, without blocking for long.
		tctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		recs, _ := s.Subscription.Receive(tctx, max)
		cancel()
		s.buf = append(s.buf, recs...)
	}
	s.rnd.Shuffle(len(s.buf), func(i, j int) { s.buf[i], s.buf[j] = s.buf[j], s.buf[i] })
	n := 1 + s.rnd.IntN(min(len(s.buf), max))
	out := make([]subscriber.Received, n)
	copy(out, s.buf[:n])
	s.buf = append(s.buf[:0], s.buf[n:]...)
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.total += n
	for _, r := range out {
		if _, dup := r.AckID.(chaosDupAck); dup || s.rnd.Float64() >= s.d.dupRate {
			continue
		}
		// A later, second delivery of the same message.
		d, _ := r.Msg.Delivery()
		d.Redelivered = true
		s.d.dups++
		s.buf = append(s.buf, subscriber.Received{Msg: message.Received(r.Msg.Clone(), d, nil), AckID: chaosDupAck{s.d.dups}})
	}
	return out, nil
}

func (s *chaosSub) Ack(ctx context.Context, ids []any) error {
	if ids = realAcks(ids); len(ids) == 0 {
		return nil
	}
	return s.Subscription.Ack(ctx, ids)
}

func (s *chaosSub) Nack(ctx context.Context, ids []any, delay time.Duration) error {
	if ids = realAcks(ids); len(ids) == 0 {
		return nil
	}
	return s.Subscription.Nack(ctx, ids, delay)
}

func realAcks(ids []any) []any {
	out := ids[:0:0]
	for _, id := range ids {
		if _, dup := id.(chaosDupAck); !dup {
			out = append(out, id)
		}
	}
	return out
}

// chaosBus is a memory broker with a publisher and subscribers whose
// deliveries go through a chaosDriver.
type chaosBus struct {
	broker *memory.Broker
	pub    *publisher.Publisher
	chaos  *chaosDriver
}

func newChaosBus(t testing.TB, seed uint64, dupRate float64) *chaosBus {
	t.Helper()
	b, err := memory.New(memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := publisher.New(b.PublisherDriver(), publisher.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(context.Background()) })
	return &chaosBus{broker: b, pub: pub, chaos: &chaosDriver{Driver: b.SubscriberDriver(), seed: seed, dupRate: dupRate}}
}

// subscriber returns a new Subscriber over the chaos driver, closed at the
// end of the test.
func (cb *chaosBus) subscriber(t testing.TB) *subscriber.Subscriber {
	t.Helper()
	s, err := subscriber.New(cb.chaos, subscriber.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}
