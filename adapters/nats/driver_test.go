package nats_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	polynats "github.com/polybus/polybus/adapters/nats"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

func TestCapabilities(t *testing.T) {
	c := open(t, embeddedURL(t))
	got := c.Capabilities()
	want := message.Capabilities{
		Name: "nats", OrderPerKey: true, OrderPerKeyScaleOut: true, Rebalance: 15 * time.Second,
		ConsumerGroups: true, FanOut: true, Retained: true,
		Nack: true, NackDelay: true, AttemptCount: true, Persistent: true,
		MaxMessageSize: 1<<20 - 1024,
	}
	if got != want {
		t.Fatalf("capabilities %+v, want %+v", got, want)
	}
}

// TestDeduplicated publishes one message twice (a retry): the stream
// stores it once. All three share a key, so one partition holds them in
// publish order and a stored duplicate would come before the marker.
func TestDeduplicated(t *testing.T) {
	c := open(t, embeddedURL(t))
	topic := unique("dedupe")
	m := message.New([]byte("once"))
	m.Key = "k"
	publish(t, c, topic, m)
	publish(t, c, topic, m.Clone())
	last := message.New([]byte("marker"))
	last.Key = "k"
	publish(t, c, topic, last)
	s := newSink()
	subscribe(t, c, topic, s.handle, subscriber.Concurrency(1))
	if got := s.waitCount(t, 2); !slices.Equal(ids(got), []string{m.ID, last.ID}) {
		t.Fatalf("got %v, want the message once then the marker", ids(got))
	}
}

// TestConsumerSettings checks the group's partition consumers: explicit
// acks, the subscription's ack deadline, a pull limit of twice the prefetch
// spread over the partitions, the start position, one partition's subject
// each, and the pinned-client priority policy.
func TestConsumerSettings(t *testing.T) {
	c := open(t, embeddedURL(t)+"?ack_wait=7s&partitions=4")
	topic := unique("settings")
	var js jetstream.JetStream
	c.Subscriber().As(&js)
	stream := "PB_" + topic
	check := func(group string, wantWait time.Duration, wantPending int, wantDeliver jetstream.DeliverPolicy) {
		t.Helper()
		for p := range 4 {
			name := fmt.Sprintf("%s_P%d", group, p)
			cons, err := js.Consumer(context.Background(), stream, name)
			if err != nil {
				t.Fatalf("consumer %s: %v", name, err)
			}
			cfg := cons.CachedInfo().Config
			if cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.AckWait != wantWait || cfg.MaxAckPending != wantPending ||
				cfg.DeliverPolicy != wantDeliver || cfg.FilterSubject != fmt.Sprintf("_PB.%d.%s", p, topic) || cfg.MaxDeliver != -1 ||
				cfg.PriorityPolicy != jetstream.PriorityPolicyPinned || cfg.PinnedTTL != 5*time.Second ||
				!slices.Equal(cfg.PriorityGroups, []string{"polybus"}) {
				t.Errorf("consumer %s: %+v", name, cfg)
			}
		}
	}
	nop := func(context.Context, *message.Message) error { return nil }
	// Prefetch 9 over 4 partitions: ceil(2*9/4) = 5 each.
	stop := subscribe(t, c, topic, nop, subscriber.Group("a"), subscriber.AckDeadline(3*time.Second), subscriber.Prefetch(9))
	waitConsumer(t, js, stream, "a_P3")
	check("a", 3*time.Second, 5, jetstream.DeliverAllPolicy)
	stop()
	stop = subscribe(t, c, topic, nop, subscriber.Group("b"), subscriber.StartAt(subscriber.Latest))
	waitConsumer(t, js, stream, "b_P3")
	check("b", 7*time.Second, 16, jetstream.DeliverNewPolicy)
	stop()
	// Opening a group again with other settings updates the updatable ones.
	stop = subscribe(t, c, topic, nop, subscriber.Group("a"), subscriber.Prefetch(64))
	deadline := time.Now().Add(10 * time.Second)
	for {
		cons, err := js.Consumer(context.Background(), stream, "a_P3")
		if err == nil && cons.CachedInfo().Config.MaxAckPending == 32 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("group a not updated")
		}
		time.Sleep(10 * time.Millisecond)
	}
	check("a", 7*time.Second, 32, jetstream.DeliverAllPolicy)
	stop()
	// The stream: the topic, its partition subjects, the transform that
	// files plain publishes to the topic under partition 0, the count.
	st, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if !slices.Equal(cfg.Subjects, []string{topic, "_PB.*." + topic}) || cfg.SubjectTransform == nil ||
		cfg.SubjectTransform.Source != topic || cfg.SubjectTransform.Destination != "_PB.0."+topic ||
		cfg.Metadata["polybus-partitions"] != "4" {
		t.Errorf("stream config %+v", cfg)
	}
}

func waitConsumer(t *testing.T, js jetstream.JetStream, stream, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := js.Consumer(context.Background(), stream, name); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s not created", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestErrorCode(t *testing.T) {
	cases := []struct {
		err  error
		want message.Code
	}{
		{nil, message.OK},
		{natsgo.ErrNoResponders, message.Unavailable},
		{jetstream.ErrNoStreamResponse, message.Unavailable},
		{natsgo.ErrTimeout, message.Unavailable},
		{fmt.Errorf("publish: %w", natsgo.ErrConnectionClosed), message.Unavailable},
		{natsgo.ErrReconnectBufExceeded, message.Unavailable},
		{jetstream.ErrAsyncPublishTimeout, message.Unavailable},
		{context.DeadlineExceeded, message.Unavailable},
		{natsgo.ErrMaxPayload, message.TooLarge},
		{jetstream.ErrStreamMessageExceedsMaximum, message.TooLarge},
		{jetstream.ErrStreamNotFound, message.NotFound},
		{jetstream.ErrConsumerNotFound, message.NotFound},
		{natsgo.ErrAuthorization, message.PermissionDenied},
		{natsgo.ErrPermissionViolation, message.PermissionDenied},
		{jetstream.ErrJetStreamNotEnabled, message.Unimplemented},
		{jetstream.ErrTooManyStalledMsgs, message.ResourceExhausted},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008}, message.Unavailable},
		{&jetstream.APIError{Code: 400, ErrorCode: 10027}, message.ResourceExhausted},
		{&jetstream.APIError{Code: 400, ErrorCode: 10999}, message.InvalidArgument},
		{natsgo.ErrBadSubject, message.InvalidArgument},
		{errors.New("something else"), message.Unknown},
		{message.Errorf(message.Closed, "x", "y"), message.Closed},
	}
	for _, tc := range cases {
		if got := polynats.ErrorCode(tc.err); got != tc.want {
			t.Errorf("ErrorCode(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
