package middleware

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// dlqWith builds DLQ on a fake clock.
func dlqWith(t *testing.T, cfg DLQConfig) (subscriber.Middleware, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	cfg.now = clk.now
	mw, err := DLQ(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return mw, clk
}

func returning(err error) subscriber.Handler {
	return func(context.Context, *message.Message) error { return err }
}

// oneDeadLetter checks that pub got exactly one publish, of one message,
// to topic, and returns the message.
func oneDeadLetter(t *testing.T, pub *fakePublisher, topic string) *message.Message {
	t.Helper()
	got := pub.got()
	if len(got) != 1 || got[0].topic != topic || len(got[0].msgs) != 1 {
		t.Fatalf("publishes = %+v, want one message to %q", got, topic)
	}
	return got[0].msgs[0]
}

func TestDLQPermanentErrorIsDeadLetteredWithExactMetadata(t *testing.T) {
	pub := &fakePublisher{}
	type hook struct {
		m, dead *message.Message
		err     error
	}
	var hooks []hook
	mw, clk := dlqWith(t, DLQConfig{Publisher: pub, OnDeadLetter: func(ctx context.Context, m, dead *message.Message, err error) {
		hooks = append(hooks, hook{m, dead, err})
	}})
	m := received("m1", "orders", "billing", 2)
	m.Metadata = message.Metadata{"tenant": "acme", message.KeyCorrelationID: "c-1"}
	cause := message.PermanentError(errors.New("bad payload"))

	if err := mw(returning(cause))(context.Background(), m); err != nil {
		t.Fatalf("err = %v, want nil (acked after the dead letter was published)", err)
	}
	dead := oneDeadLetter(t, pub, "orders.dlq")
	now := clk.now().Format(time.RFC3339Nano)
	want := message.Metadata{
		"tenant":                   "acme",
		message.KeyCorrelationID:   "c-1",
		message.KeyDLQReason:       "permanent",
		message.KeyDLQError:        "permanent: bad payload",
		message.KeyDLQTopic:        "orders",
		message.KeyDLQGroup:        "billing",
		message.KeyDLQAttempts:     "2",
		message.KeyDLQFirstFailure: now,
		message.KeyDLQLastFailure:  now,
	}
	if !maps.Equal(dead.Metadata, want) {
		t.Fatalf("dead letter metadata =\n%v\nwant\n%v", dead.Metadata, want)
	}
	if dead.ID != m.ID || dead.Key != m.Key || string(dead.Payload) != string(m.Payload) || !dead.Time.Equal(m.Time) {
		t.Fatalf("dead letter %+v does not keep the message's ID, Key, Payload and Time", dead)
	}
	if _, ok := dead.Delivery(); ok {
		t.Fatal("dead letter carries delivery facts")
	}
	if len(m.Metadata) != 2 {
		t.Fatalf("the received message's metadata was changed: %v", m.Metadata)
	}
	if len(hooks) != 1 || hooks[0].m != m || hooks[0].dead != dead || hooks[0].err != nil {
		t.Fatalf("OnDeadLetter calls = %+v", hooks)
	}
}

func TestDLQAfterInProcessRetriesAreExhausted(t *testing.T) {
	pub := &fakePublisher{}
	dlq, clk := dlqWith(t, DLQConfig{Publisher: pub})
	var calls int
	handler := func(ctx context.Context, m *message.Message) error {
		calls++
		return errTransient
	}
	first := clk.now()
	retry, err := Retry(RetryConfig{MaxAttempts: 3, InitialInterval: time.Second, RandomizationFactor: NoJitter, sleep: clk.sleep, now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	m := received("m1", "orders", "g", 1)
	if err := subscriber.Chain(dlq, retry)(handler)(context.Background(), m); err != nil {
		t.Fatalf("err = %v, want nil", err)
	}
	if calls != 3 {
		t.Fatalf("handler calls = %d, want 3", calls)
	}
	dead := oneDeadLetter(t, pub, "orders.dlq")
	md := dead.Metadata
	// Waits of 1s and 2s passed between the first failure and the last.
	if md[message.KeyDLQReason] != "max-attempts" || md[message.KeyDLQAttempts] != "3" ||
		md[message.KeyDLQFirstFailure] != first.Format(time.RFC3339Nano) ||
		md[message.KeyDLQLastFailure] != first.Add(3*time.Second).Format(time.RFC3339Nano) ||
		md[message.KeyDLQError] != "polybus: retry: gave up after 3 attempts: downstream unavailable" {
		t.Fatalf("dead letter metadata = %v", md)
	}
}

func TestDLQAfterRedeliveryRetriesAreExhausted(t *testing.T) {
	pub := &fakePublisher{}
	dlq, clk := dlqWith(t, DLQConfig{Publisher: pub})
	retry, err := Retry(RetryConfig{Mode: Redelivery, MaxAttempts: 3, RandomizationFactor: NoJitter, now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	h := subscriber.Chain(dlq, retry)(returning(errTransient))
	// A broker that counts no attempts: Retry counts, and remembers the
	// first failure.
	first := clk.now()
	for i := 1; i <= 2; i++ {
		err := h(context.Background(), received("m1", "orders", "g", 0))
		if _, ok := message.RetryDelay(err); !ok || !errors.Is(err, errTransient) {
			t.Fatalf("delivery %d: err = %v, want the transient error passed through with a delay", i, err)
		}
		clk.advance(time.Minute)
	}
	if len(pub.got()) != 0 {
		t.Fatalf("dead-lettered early: %+v", pub.got())
	}
	if err := h(context.Background(), received("m1", "orders", "g", 0)); err != nil {
		t.Fatalf("third delivery: err = %v, want nil", err)
	}
	md := oneDeadLetter(t, pub, "orders.dlq").Metadata
	if md[message.KeyDLQReason] != "max-attempts" || md[message.KeyDLQAttempts] != "3" ||
		md[message.KeyDLQFirstFailure] != first.Format(time.RFC3339Nano) ||
		md[message.KeyDLQLastFailure] != first.Add(2*time.Minute).Format(time.RFC3339Nano) {
		t.Fatalf("dead letter metadata = %v", md)
	}
}

func TestDLQPublishFailureNacksWithOriginalError(t *testing.T) {
	pub := &fakePublisher{failFirst: 1, err: errPublish}
	var hookErr error
	mw, _ := dlqWith(t, DLQConfig{Publisher: pub, OnDeadLetter: func(_ context.Context, _, _ *message.Message, err error) { hookErr = err }})
	cause := message.PermanentError(errors.New("bad payload"))
	h := mw(returning(cause))
	if err := h(context.Background(), received("m1", "orders", "g", 1)); err != cause {
		t.Fatalf("err = %v, want the handler's error unchanged", err)
	}
	if hookErr != errPublish {
		t.Fatalf("OnDeadLetter got %v, want the publish error", hookErr)
	}
	// The redelivery is dead-lettered once the publisher works again.
	if err := h(context.Background(), received("m1", "orders", "g", 2)); err != nil {
		t.Fatalf("redelivery: err = %v, want nil", err)
	}
	if got := pub.got(); len(got) != 2 || len(got[1].msgs) != 1 || got[1].msgs[0].ID != "m1" {
		t.Fatalf("publishes = %+v", got)
	}
}

func TestDLQPassesTransientErrorsThrough(t *testing.T) {
	pub := &fakePublisher{}
	mw, _ := dlqWith(t, DLQConfig{Publisher: pub})
	delayed := message.RetryAfter(errTransient, time.Second)
	for _, err := range []error{errTransient, delayed} {
		if got := mw(returning(err))(context.Background(), received("m1", "orders", "g", 9)); got != err {
			t.Fatalf("err = %v, want %v unchanged", got, err)
		}
	}
	if err := mw(returning(nil))(context.Background(), received("m1", "orders", "g", 1)); err != nil {
		t.Fatal(err)
	}
	if len(pub.got()) != 0 {
		t.Fatalf("publishes = %+v, want none", pub.got())
	}
}

func TestDLQStandaloneMaxAttempts(t *testing.T) {
	pub := &fakePublisher{}
	mw, _ := dlqWith(t, DLQConfig{Publisher: pub, MaxAttempts: 3})
	h := mw(returning(errTransient))
	if err := h(context.Background(), received("m1", "orders", "g", 2)); err != errTransient {
		t.Fatalf("attempt 2: err = %v, want it passed through", err)
	}
	// No attempt count from the broker: never triggers.
	if err := h(context.Background(), received("m1", "orders", "g", 0)); err != errTransient {
		t.Fatalf("attempt 0: err = %v, want it passed through", err)
	}
	if err := h(context.Background(), received("m1", "orders", "g", 3)); err != nil {
		t.Fatalf("attempt 3: err = %v, want nil", err)
	}
	md := oneDeadLetter(t, pub, "orders.dlq").Metadata
	if md[message.KeyDLQReason] != "max-attempts" || md[message.KeyDLQAttempts] != "3" || md[message.KeyDLQError] != errTransient.Error() {
		t.Fatalf("dead letter metadata = %v", md)
	}
}

func TestDLQTopicAndReplayedFirstFailure(t *testing.T) {
	pub := &fakePublisher{}
	mw, _ := dlqWith(t, DLQConfig{Publisher: pub, Topic: "graveyard"})
	m := received("m1", "orders", "g", 1)
	m.Metadata = message.Metadata{message.KeyDLQFirstFailure: "2025-01-01T00:00:00Z", message.KeyDLQReason: "old"}
	if err := mw(returning(message.PermanentError(errTransient)))(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	md := oneDeadLetter(t, pub, "graveyard").Metadata
	if md[message.KeyDLQFirstFailure] != "2025-01-01T00:00:00Z" || md[message.KeyDLQReason] != "permanent" {
		t.Fatalf("dead letter metadata = %v: want the replayed first failure kept and the reason renewed", md)
	}
}

func TestDLQNeverDeadLettersWhenContextEnded(t *testing.T) {
	pub := &fakePublisher{}
	mw, _ := dlqWith(t, DLQConfig{Publisher: pub, MaxAttempts: 1})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cause := message.PermanentError(errTransient)
	if err := mw(returning(cause))(ctx, received("m1", "orders", "g", 5)); err != cause {
		t.Fatalf("err = %v, want the handler's error", err)
	}
	if len(pub.got()) != 0 {
		t.Fatalf("publishes = %+v, want none", pub.got())
	}
}

func TestDLQWithoutTopicForUnreceivedMessage(t *testing.T) {
	pub := &fakePublisher{}
	mw, _ := dlqWith(t, DLQConfig{Publisher: pub})
	cause := message.PermanentError(errTransient)
	if err := mw(returning(cause))(context.Background(), message.New([]byte("x"))); err != cause {
		t.Fatalf("err = %v, want the handler's error", err)
	}
	if len(pub.got()) != 0 {
		t.Fatalf("publishes = %+v, want none", pub.got())
	}
}

func TestDLQCutsLongErrorsOnRuneBoundary(t *testing.T) {
	pub := &fakePublisher{}
	mw, _ := dlqWith(t, DLQConfig{Publisher: pub, MaxErrorLength: 5})
	// "permanent: é..." — byte 5 of "ab€cd" falls inside the euro sign.
	if err := mw(returning(message.PermanentError(errors.New("x"))))(context.Background(), received("m1", "t", "g", 1)); err != nil {
		t.Fatal(err)
	}
	if got := oneDeadLetter(t, pub, "t.dlq").Metadata[message.KeyDLQError]; got != "perma" {
		t.Fatalf("error = %q, want %q", got, "perma")
	}
	if got := truncate("ab€cd", 4); got != "ab" {
		t.Fatalf("truncate = %q, want %q", got, "ab")
	}
	if got := truncate("ab€cd", 5); got != "ab€" {
		t.Fatalf("truncate = %q, want %q", got, "ab€")
	}
	if got := truncate(strings.Repeat("x", 3), 10); got != "xxx" {
		t.Fatalf("truncate = %q", got)
	}
}

func TestDLQConfigValidation(t *testing.T) {
	for _, cfg := range []DLQConfig{
		{},
		{Publisher: &fakePublisher{}, MaxAttempts: -1},
		{Publisher: &fakePublisher{}, MaxErrorLength: -1},
	} {
		mw, err := DLQ(cfg)
		wantInvalid(t, err)
		if mw != nil {
			t.Fatal("middleware returned with an error")
		}
	}
}
