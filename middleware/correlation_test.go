package middleware

import (
	"context"
	"maps"
	"testing"

	"github.com/polybus/polybus/message"
)

// capture runs mw around a handler and returns the correlation it saw.
func capture(t *testing.T, m *message.Message) (CorrelationInfo, bool) {
	t.Helper()
	mw, err := Correlation(CorrelationConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var info CorrelationInfo
	var ok bool
	_ = mw(func(ctx context.Context, m *message.Message) error {
		info, ok = CorrelationFromContext(ctx)
		return nil
	})(context.Background(), m)
	return info, ok
}

func TestCorrelationStartsAFlowWithTheMessageID(t *testing.T) {
	info, ok := capture(t, received("m1", "t", "g", 1))
	if want := (CorrelationInfo{CorrelationID: "m1", MessageID: "m1"}); !ok || info != want {
		t.Fatalf("info = %+v %v, want %+v", info, ok, want)
	}
}

func TestCorrelationCarriesTheFlow(t *testing.T) {
	m := received("m2", "t", "g", 1)
	m.Metadata = message.Metadata{message.KeyCorrelationID: "flow-1", message.KeyCausationID: "m1"}
	info, ok := capture(t, m)
	if want := (CorrelationInfo{CorrelationID: "flow-1", MessageID: "m2", CausationID: "m1"}); !ok || info != want {
		t.Fatalf("info = %+v %v, want %+v", info, ok, want)
	}
}

func TestPropagateStampsOutgoingMessages(t *testing.T) {
	ctx := ContextWithCorrelation(context.Background(), CorrelationInfo{CorrelationID: "flow-1", MessageID: "m2", CausationID: "m1"})
	plain := &message.Message{ID: "out-1"}
	tagged := &message.Message{ID: "out-2", Metadata: message.Metadata{"x": "y"}}
	own := &message.Message{ID: "out-3", Metadata: message.Metadata{message.KeyCorrelationID: "mine", message.KeyCausationID: "me"}}
	Propagate(ctx, plain, nil, tagged, own)
	for _, c := range []struct {
		m    *message.Message
		want message.Metadata
	}{
		{plain, message.Metadata{message.KeyCorrelationID: "flow-1", message.KeyCausationID: "m2"}},
		{tagged, message.Metadata{"x": "y", message.KeyCorrelationID: "flow-1", message.KeyCausationID: "m2"}},
		{own, message.Metadata{message.KeyCorrelationID: "mine", message.KeyCausationID: "me"}},
	} {
		if !maps.Equal(c.m.Metadata, c.want) {
			t.Fatalf("%s: metadata = %v, want %v", c.m.ID, c.m.Metadata, c.want)
		}
	}
	// Without a correlation in the context: untouched.
	untouched := &message.Message{ID: "out-4"}
	Propagate(context.Background(), untouched)
	if untouched.Metadata != nil {
		t.Fatalf("metadata = %v, want nil", untouched.Metadata)
	}
}

func TestPropagatingPublisherAcrossTwoHops(t *testing.T) {
	pub := &fakePublisher{}
	out := Propagating(pub)
	mw, err := Correlation(CorrelationConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// Hop 1: m1 starts the flow and causes a; hop 2: a causes b.
	republish := func(id string) func(ctx context.Context, m *message.Message) error {
		return func(ctx context.Context, m *message.Message) error {
			return out.Publish(ctx, "next", &message.Message{ID: id})
		}
	}
	if err := mw(republish("a"))(context.Background(), received("m1", "t", "g", 1)); err != nil {
		t.Fatal(err)
	}
	a := pub.got()[0].msgs[0]
	if err := mw(republish("b"))(context.Background(), message.Received(a, message.Delivery{Topic: "next"}, nil)); err != nil {
		t.Fatal(err)
	}
	b := pub.got()[1].msgs[0]
	for _, c := range []struct {
		m           *message.Message
		correlation string
		causation   string
	}{{a, "m1", "m1"}, {b, "m1", "a"}} {
		if c.m.Metadata[message.KeyCorrelationID] != c.correlation || c.m.Metadata[message.KeyCausationID] != c.causation {
			t.Fatalf("%s: metadata = %v, want correlation %s, causation %s", c.m.ID, c.m.Metadata, c.correlation, c.causation)
		}
	}
}
