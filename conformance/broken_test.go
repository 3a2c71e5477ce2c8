package conformance_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/conformance"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
)

// brokerHarness opens clients over one memory broker, with its drivers
// optionally wrapped: the base of the deliberately broken adapters.
type brokerHarness struct {
	b       *memory.Broker
	wrapPub func(publisher.Driver) publisher.Driver
	wrapSub func(subscriber.Driver) subscriber.Driver
	n       atomic.Uint64
}

func newBrokerHarness(t *testing.T) *brokerHarness {
	t.Helper()
	b, err := memory.New(memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &brokerHarness{b: b}
}

func (h *brokerHarness) Open(context.Context) (*polybus.Client, error) {
	var pd publisher.Driver = h.b.PublisherDriver()
	var sd subscriber.Driver = h.b.SubscriberDriver()
	if h.wrapPub != nil {
		pd = h.wrapPub(pd)
	}
	if h.wrapSub != nil {
		sd = h.wrapSub(sd)
	}
	return polybus.NewClient(pd, sd, polybus.ClientOptions{})
}

func (h *brokerHarness) Name(kind string) string {
	return fmt.Sprintf("%s-%d", kind, h.n.Add(1))
}

// droppingPub accepts every batch and silently drops every 100th message
// it is given: a publisher that acknowledges what it never stored.
type droppingPub struct {
	publisher.Driver
	n *atomic.Int64
}

func (d droppingPub) SendBatch(ctx context.Context, topic string, msgs []*message.Message) error {
	kept := make([]*message.Message, 0, len(msgs))
	for _, m := range msgs {
		if d.n.Add(1)%100 != 0 {
			kept = append(kept, m)
		}
	}
	if len(kept) == 0 {
		return nil
	}
	return d.Driver.SendBatch(ctx, topic, kept)
}

// reorderingPub stores each batch back to front: every message arrives,
// but not in publish order.
type reorderingPub struct{ publisher.Driver }

func (d reorderingPub) SendBatch(ctx context.Context, topic string, msgs []*message.Message) error {
	rev := slices.Clone(msgs)
	slices.Reverse(rev)
	return d.Driver.SendBatch(ctx, topic, rev)
}

// forgetfulSub never passes acks on to the broker, so acked messages stay
// in flight and come back to the group when the subscription closes: an
// adapter that forgets to commit.
type forgetfulSub struct{ subscriber.Driver }

func (d forgetfulSub) Open(ctx context.Context, topic string, cfg subscriber.OpenConfig) (subscriber.Subscription, error) {
	s, err := d.Driver.Open(ctx, topic, cfg)
	if err != nil {
		return nil, err
	}
	return forgetfulSubscription{s}, nil
}

type forgetfulSubscription struct{ subscriber.Subscription }

func (forgetfulSubscription) Ack(context.Context, []any) error { return nil }

// keylessPub stores every message under its ID as key (the key is kept in
// metadata), so the broker spreads a key's messages over its partitions and their
// owners; keyedSub puts the key back on receipt. Together: a group whose
// subscribers compete for messages with no owner per key, as the memory
// broker was before partitions. One subscriber still sees per-key order.
type keylessPub struct{ publisher.Driver }

const brokenKey = "broken-key"

func (d keylessPub) SendBatch(ctx context.Context, topic string, msgs []*message.Message) error {
	out := make([]*message.Message, len(msgs))
	for i, m := range msgs {
		c := m.Clone()
		c.Metadata = c.Metadata.Clone()
		if c.Metadata == nil {
			c.Metadata = message.Metadata{}
		}
		c.Metadata[brokenKey] = c.Key
		c.Key = c.ID // spreads by hash, whatever the publish pattern
		out[i] = c
	}
	return d.Driver.SendBatch(ctx, topic, out)
}

type keyedSub struct{ subscriber.Driver }

func (d keyedSub) Open(ctx context.Context, topic string, cfg subscriber.OpenConfig) (subscriber.Subscription, error) {
	s, err := d.Driver.Open(ctx, topic, cfg)
	if err != nil {
		return nil, err
	}
	return keyedSubscription{s}, nil
}

type keyedSubscription struct{ subscriber.Subscription }

func (s keyedSubscription) Receive(ctx context.Context, max int) ([]subscriber.Received, error) {
	recs, err := s.Subscription.Receive(ctx, max)
	for _, r := range recs {
		r.Msg.Key = r.Msg.Metadata[brokenKey]
		delete(r.Msg.Metadata, brokenKey)
	}
	return recs, err
}

// TestBrokenAdaptersFail proves that the suite catches each defect: run
// with RunAll against a deliberately broken adapter, the tests named fail.
func TestBrokenAdaptersFail(t *testing.T) {
	cases := []struct {
		name string
		// run selects the tests to run; nil runs the whole suite.
		run      *regexp.Regexp
		setup    func(h *brokerHarness)
		wantFail []string
	}{{
		// Every lost message makes a test wait out its deadline, so only
		// two tests run.
		name: "drops every 100th message",
		run:  regexp.MustCompile(`^(RoundTrip|ConcurrentPublishers)$`),
		setup: func(h *brokerHarness) {
			n := new(atomic.Int64)
			h.wrapPub = func(d publisher.Driver) publisher.Driver { return droppingPub{d, n} }
		},
		wantFail: []string{"RoundTrip", "ConcurrentPublishers"},
	}, {
		name: "reorders",
		setup: func(h *brokerHarness) {
			h.wrapPub = func(d publisher.Driver) publisher.Driver { return reorderingPub{d} }
		},
		wantFail: []string{"PerKeyOrder"},
	}, {
		name: "redelivers acked messages",
		setup: func(h *brokerHarness) {
			h.wrapSub = func(d subscriber.Driver) subscriber.Driver { return forgetfulSub{d} }
		},
		wantFail: []string{"AckIsFinal"},
	}, {
		name: "splits a key across subscribers of a group",
		run:  regexp.MustCompile(`^PerKeyOrder`),
		setup: func(h *brokerHarness) {
			h.wrapPub = func(d publisher.Driver) publisher.Driver { return keylessPub{d} }
			h.wrapSub = func(d subscriber.Driver) subscriber.Driver { return keyedSub{d} }
		},
		wantFail: []string{"PerKeyOrderScaleOut", "PerKeyOrderRebalance"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newBrokerHarness(t)
			tc.setup(h)
			rep := conformance.RunAll(t.Context(), h, conformance.Options{Run: tc.run, Timeout: 3 * time.Second})
			for _, name := range tc.wantFail {
				res, ok := rep.Result(name)
				if !ok {
					t.Errorf("%s: not run", name)
					continue
				}
				if res.Status != conformance.Fail {
					t.Errorf("%s: status %s, want fail", name, res.Status)
					continue
				}
				t.Logf("%s failed as it should: %s", name, firstLine(res.Reason))
			}
			if t.Failed() {
				var sb strings.Builder
				_ = rep.WriteMatrix(&sb)
				t.Logf("report:\n%s", sb.String())
			}
		})
	}
}

// TestUnbrokenWrapperPasses is the control for TestBrokenAdaptersFail: the
// same harness with no defect passes the tests that catch the defects.
func TestUnbrokenWrapperPasses(t *testing.T) {
	h := newBrokerHarness(t)
	h.wrapPub = func(d publisher.Driver) publisher.Driver { return struct{ publisher.Driver }{d} }
	rep := conformance.RunAll(t.Context(), h, conformance.Options{
		Run: regexp.MustCompile(`^(RoundTrip|ConcurrentPublishers|PerKeyOrder|AckIsFinal)$`),
	})
	for _, res := range rep.Results {
		if res.Status != conformance.Pass {
			t.Errorf("%s: %s: %s", res.Name, res.Status, res.Reason)
		}
	}
	if len(rep.Results) != 4 {
		t.Errorf("%d results, want 4", len(rep.Results))
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
