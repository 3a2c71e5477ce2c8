package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
)

// TestInjectContinuesTrace: a message that carries a context (Inject, as
// before an outbox records it) and is published later outside any span
// (as by the relay) gets a publish span that is a child of that context.
func TestInjectContinuesTrace(t *testing.T) {
	tr := newTraced(t, "polybus.memory")
	c := open(t, "mem://", tr.tel.OpenOption())
	ctx, request := tr.tp.Tracer("test").Start(context.Background(), "request")
	m := &message.Message{ID: "outboxed"}
	tr.tel.Inject(ctx, m)
	request.End()
	if err := c.Publisher().Publish(context.Background(), "orders", m); err != nil {
		t.Fatal(err)
	}
	pub := one(t, tr.spans("publish orders", "messaging.message.id", "outboxed"), "the relay's publish span")
	if pub.Parent().SpanID() != request.SpanContext().SpanID() || pub.SpanContext().TraceID() != request.SpanContext().TraceID() {
		t.Errorf("publish span's parent %v, want the request span %v", pub.Parent(), request.SpanContext())
	}
}

// TestBatchLinks: a batch received from three traces makes a receive
// span of its own trace, linked to each message's publish span.
func TestBatchLinks(t *testing.T) {
	tr := newTraced(t, "polybus.memory")
	c := open(t, "mem://?partitions=1", tr.tel.OpenOption())
	ids := []string{"one", "two", "three"}
	for _, id := range ids {
		if err := c.Publisher().Publish(context.Background(), "orders", &message.Message{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	handled := 0
	consume(t, c, "orders", func(context.Context, *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		handled++
		return nil
	}, append(tr.tel.SubscribeOptions(), subscriber.Prefetch(8))...)
	pbtest.WaitFor(t, "three process spans", func() bool {
		n := 0
		for _, id := range ids {
			n += len(tr.spans("process orders", "messaging.message.id", id))
		}
		return n == 3
	})
	recv := tr.spans("receive orders", "messaging.batch.message_count", "3")
	if len(recv) != 1 {
		t.Fatalf("%d receive spans of a batch of 3 (receive spans: %d)", len(recv), len(tr.spans("receive orders", "messaging.operation.type", "receive")))
	}
	for _, id := range ids {
		pub := one(t, tr.spans("publish orders", "messaging.message.id", id), "publish "+id)
		if !linked(recv[0], pub.SpanContext()) {
			t.Errorf("the receive span does not link to %s's publish span", id)
		}
		if recv[0].SpanContext().TraceID() == pub.SpanContext().TraceID() {
			t.Errorf("the receive span of three traces is in %s's trace", id)
		}
	}
}

// TestLoggingTraceID: Logging's lines carry the trace of the process span:
// the message's own (published with telemetry) or, for a message that
// carried none, the trace its process span started.
func TestLoggingTraceID(t *testing.T) {
	tr := newTraced(t, "polybus.memory")
	b, err := memory.New(memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	traced, err := b.Client(polybus.ClientOptions{Publisher: publisher.Options{Hook: tr.tel.PublisherHook()}})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := b.Client(polybus.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plain.Close(context.Background()); traced.Close(context.Background()) })

	var mu sync.Mutex
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&lockedWriter{mu: &mu, w: &buf}, nil))
	logging, err := middleware.Logging(middleware.LoggingConfig{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := traced.Publisher().Publish(ctx, "orders", &message.Message{ID: "traced"}); err != nil {
		t.Fatal(err)
	}
	if err := plain.Publisher().Publish(ctx, "orders", &message.Message{ID: "plain"}); err != nil {
		t.Fatal(err)
	}
	consume(t, traced, "orders", func(context.Context, *message.Message) error { return nil },
		append(tr.tel.SubscribeOptions(), subscriber.Use(logging))...)
	pbtest.WaitFor(t, "two process spans", func() bool {
		return len(tr.spans("process orders", "messaging.message.id", "traced"))+len(tr.spans("process orders", "messaging.message.id", "plain")) == 2
	})
	pbtest.WaitFor(t, "two log lines", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return bytes.Count(buf.Bytes(), []byte("\n")) == 2
	})
	mu.Lock()
	logged := bytes.Clone(buf.Bytes())
	mu.Unlock()
	for _, line := range bytes.Split(bytes.TrimSpace(logged), []byte("\n")) {
		var l struct {
			ID      string `json:"id"`
			TraceID string `json:"trace_id"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			t.Fatal(err)
		}
		span := one(t, tr.spans("process orders", "messaging.message.id", l.ID), "process "+l.ID)
		if l.TraceID != span.SpanContext().TraceID().String() {
			t.Errorf("line of %s has trace_id %q, its process span is in %s", l.ID, l.TraceID, span.SpanContext().TraceID())
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
