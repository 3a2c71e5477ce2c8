package conformance_test

import (
	"context"
	"log/slog"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/conformance"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
)

// restartHarness simulates a persistent broker that restarts: while it is
// down (100ms) publishes and subscription opens fail as Unavailable, and
// every open subscription's connection drops, so its in-flight messages go
// back to the group and its late acks are lost. The memory broker behind
// it keeps its messages, as a persistent broker does.
//
// With lossy set, it is broken: while down it acknowledges publishes that
// it does not store.
type restartHarness struct {
	*brokerHarness
	lossy bool

	mu   sync.Mutex
	down bool
	subs map[*restartSub]bool
}

func newRestartHarness(t *testing.T, lossy bool) *restartHarness {
	return &restartHarness{brokerHarness: newBrokerHarness(t), lossy: lossy, subs: map[*restartSub]bool{}}
}

func (h *restartHarness) Open(context.Context) (*polybus.Client, error) {
	// The subscriber's warnings about the outage are expected: keep them
	// out of the test log.
	quiet := subscriber.Options{Logger: slog.New(slog.DiscardHandler)}
	return polybus.NewClient(restartPub{h.b.PublisherDriver(), h}, restartDriver{h.b.SubscriberDriver(), h},
		polybus.ClientOptions{Subscriber: quiet})
}

func (h *restartHarness) Restart(ctx context.Context) error {
	h.mu.Lock()
	h.down = true
	subs := make([]*restartSub, 0, len(h.subs))
	for s := range h.subs {
		subs = append(subs, s)
	}
	h.mu.Unlock()
	for _, s := range subs {
		s.drop()
	}
	// The outage lasts a while, so that publishers see it.
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	h.mu.Lock()
	h.down = false
	h.mu.Unlock()
	return ctx.Err()
}

func (h *restartHarness) isDown() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.down
}

var errDown = message.Errorf(message.Unavailable, "restart", "broker is restarting")

func restartCaps(c message.Capabilities) message.Capabilities {
	c.Name = "memory-restartable"
	c.Persistent = true
	return c
}

type restartPub struct {
	publisher.Driver
	h *restartHarness
}

func (p restartPub) SendBatch(ctx context.Context, topic string, msgs []*message.Message) error {
	if p.h.isDown() {
		if p.h.lossy {
			return nil
		}
		return errDown
	}
	return p.Driver.SendBatch(ctx, topic, msgs)
}

func (p restartPub) Capabilities() message.Capabilities { return restartCaps(p.Driver.Capabilities()) }

type restartDriver struct {
	subscriber.Driver
	h *restartHarness
}

func (d restartDriver) Capabilities() message.Capabilities {
	return restartCaps(d.Driver.Capabilities())
}

func (d restartDriver) Open(ctx context.Context, topic string, cfg subscriber.OpenConfig) (subscriber.Subscription, error) {
	s := &restartSub{d: d, topic: topic, cfg: cfg}
	if _, err := s.current(ctx); err != nil {
		return nil, err
	}
	d.h.mu.Lock()
	d.h.subs[s] = true
	d.h.mu.Unlock()
	return s, nil
}

// restartSub is a subscription whose connection (inner) drops on restart
// and is opened again by the next Receive.
type restartSub struct {
	d     restartDriver
	topic string
	cfg   subscriber.OpenConfig

	mu    sync.Mutex
	inner subscriber.Subscription
}

// ackRef ties an ack ID to the connection that delivered it.
type ackRef struct {
	inner subscriber.Subscription
	id    any
}

func (s *restartSub) current(ctx context.Context) (subscriber.Subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.d.h.isDown() {
		return nil, errDown
	}
	if s.inner == nil {
		in, err := s.d.Driver.Open(ctx, s.topic, s.cfg)
		if err != nil {
			return nil, err
		}
		s.inner = in
	}
	return s.inner, nil
}

func (s *restartSub) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inner != nil {
		_ = s.inner.Close()
		s.inner = nil
	}
}

func (s *restartSub) Receive(ctx context.Context, max int) ([]subscriber.Received, error) {
	in, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	recs, err := in.Receive(ctx, max)
	if err != nil {
		if ctx.Err() == nil {
			s.mu.Lock()
			dropped := s.inner != in
			s.mu.Unlock()
			if dropped {
				return nil, errDown
			}
		}
		return nil, err
	}
	for i := range recs {
		recs[i].AckID = ackRef{in, recs[i].AckID}
	}
	return recs, nil
}

// settle passes acks or nacks to the connections that delivered them; those
// of a dropped connection are lost, as on a real broker.
func (s *restartSub) settle(ids []any, f func(subscriber.Subscription, []any) error) error {
	s.mu.Lock()
	cur := s.inner
	s.mu.Unlock()
	by := map[subscriber.Subscription][]any{}
	lost := false
	for _, id := range ids {
		ref := id.(ackRef)
		if ref.inner != cur {
			lost = true
			continue
		}
		by[ref.inner] = append(by[ref.inner], ref.id)
	}
	for in, ids := range by {
		if err := f(in, ids); err != nil {
			return err
		}
	}
	if lost {
		return errDown
	}
	return nil
}

func (s *restartSub) Ack(ctx context.Context, ids []any) error {
	return s.settle(ids, func(in subscriber.Subscription, ids []any) error { return in.Ack(ctx, ids) })
}

func (s *restartSub) Nack(ctx context.Context, ids []any, delay time.Duration) error {
	return s.settle(ids, func(in subscriber.Subscription, ids []any) error { return in.Nack(ctx, ids, delay) })
}

func (s *restartSub) Close() error {
	s.d.h.mu.Lock()
	delete(s.d.h.subs, s)
	s.d.h.mu.Unlock()
	s.drop()
	return nil
}

// TestSimulatedRestart runs the broker-restart test against the simulated
// persistent broker (it passes, counting duplicates) and against its lossy
// variant (it fails).
func TestSimulatedRestart(t *testing.T) {
	only := regexp.MustCompile(`^BrokerRestart$`)
	rep := conformance.RunAll(t.Context(), newRestartHarness(t, false), conformance.Options{Run: only})
	res, ok := rep.Result("BrokerRestart")
	if !ok || res.Status != conformance.Pass {
		t.Fatalf("BrokerRestart against a broker that keeps its messages: %+v", res)
	}
	for _, m := range []string{"published", "duplicates", "publish_failures", "restart_ms"} {
		if _, ok := res.Metrics[m]; !ok {
			t.Errorf("metric %q missing from %v", m, res.Metrics)
		}
	}
	t.Logf("restart metrics: %v", res.Metrics)

	rep = conformance.RunAll(t.Context(), newRestartHarness(t, true), conformance.Options{Run: only, Timeout: 5 * time.Second})
	if res, _ := rep.Result("BrokerRestart"); res.Status != conformance.Fail {
		t.Errorf("BrokerRestart against a broker that loses acknowledged publishes: %s, want fail", res.Status)
	} else {
		t.Logf("lossy restart failed as it should: %s", firstLine(res.Reason))
	}
}
