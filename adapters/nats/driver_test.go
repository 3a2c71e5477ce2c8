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
		Name: "nats", OrderPerKey: true, ConsumerGroups: true, FanOut: true, Retained: true,
		Nack: true, NackDelay: true, AttemptCount: true, Persistent: true,
		MaxMessageSize: 1<<20 - 1024,
	}
	if got != want {
		t.Fatalf("capabilities %+v, want %+v", got, want)
	}
}

// TestDeduplicated publishes one message twice (a retry): the stream
// stores it once.
func TestDeduplicated(t *testing.T) {
	c := open(t, embeddedURL(t))
	topic := unique("dedupe")
	m := message.New([]byte("once"))
	publish(t, c, topic, m)
	publish(t, c, topic, m.Clone())
	last := message.New([]byte("marker"))
	publish(t, c, topic, last)
	s := newSink()
	subscribe(t, c, topic, s.handle, subscriber.Concurrency(1))
	if got := s.waitCount(t, 2); !slices.Equal(ids(got), []string{m.ID, last.ID}) {
		t.Fatalf("got %v, want the message once then the marker", ids(got))
	}
}

// TestConsumerSettings checks the group's consumer: explicit acks, the
// subscription's ack deadline and prefetch, and the start position.
func TestConsumerSettings(t *testing.T) {
	c := open(t, embeddedURL(t)+"?ack_wait=7s")
	topic := unique("settings")
	var js jetstream.JetStream
	c.Subscriber().As(&js)
	check := func(group string, wantWait time.Duration, wantPending int, wantDeliver jetstream.DeliverPolicy) {
		t.Helper()
		cons, err := js.Consumer(context.Background(), "PB_"+topic, group)
		if err != nil {
			t.Fatal(err)
		}
		cfg := cons.CachedInfo().Config
		if cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.AckWait != wantWait || cfg.MaxAckPending != wantPending ||
			cfg.DeliverPolicy != wantDeliver || cfg.FilterSubject != topic || cfg.MaxDeliver != -1 {
			t.Errorf("consumer %s: %+v", group, cfg)
		}
	}
	nop := func(context.Context, *message.Message) error { return nil }
	stop := subscribe(t, c, topic, nop, subscriber.Group("a"), subscriber.AckDeadline(3*time.Second), subscriber.Prefetch(9))
	waitConsumer(t, js, "PB_"+topic, "a")
	check("a", 3*time.Second, 9, jetstream.DeliverAllPolicy)
	stop()
	stop = subscribe(t, c, topic, nop, subscriber.Group("b"), subscriber.StartAt(subscriber.Latest))
	waitConsumer(t, js, "PB_"+topic, "b")
	check("b", 7*time.Second, 32, jetstream.DeliverNewPolicy)
	stop()
	// Opening a group again with other settings updates the updatable ones.
	stop = subscribe(t, c, topic, nop, subscriber.Group("a"), subscriber.Prefetch(64))
	deadline := time.Now().Add(10 * time.Second)
	for {
		cons, err := js.Consumer(context.Background(), "PB_"+topic, "a")
		if err == nil && cons.CachedInfo().Config.MaxAckPending == 64 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("group a not updated")
		}
		time.Sleep(10 * time.Millisecond)
	}
	check("a", 7*time.Second, 64, jetstream.DeliverAllPolicy)
	stop()
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
