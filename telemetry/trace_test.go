package telemetry_test

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/polybus/polybus"
	_ "github.com/polybus/polybus/adapters/kafka"
	_ "github.com/polybus/polybus/adapters/memory"
	_ "github.com/polybus/polybus/adapters/nats"
	_ "github.com/polybus/polybus/adapters/rabbitmq"
	"github.com/polybus/polybus/adapters/sqs"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
	"github.com/polybus/polybus/telemetry"
)

// brokerURLs are the adapters the tracing test runs on: the real brokers
// of scripts/brokers by brokertest (skipped when absent, failed under
// CI=true), and the in-process ones.
var brokerURLs = []struct {
	name string
	url  func(t *testing.T) string
}{
	{"memory", func(*testing.T) string { return "mem://" }},
	{"embedded", func(t *testing.T) string { return "embedded://" + t.TempDir() }},
	{"nats", func(t *testing.T) string { return brokertest.URL(t, "nats") }},
	{"kafka", func(t *testing.T) string { return brokertest.URL(t, "kafka") }},
	{"rabbitmq", func(t *testing.T) string { return brokertest.URL(t, "rabbitmq") }},
	{"sqs", func(t *testing.T) string { return brokertest.URL(t, "sqs") }},
}

// TestTraceAcrossBrokers publishes a message A that fails its first
// delivery and, on its second, publishes B from its handler. On every
// adapter: A's publish span is the parent of both its process spans (one
// per attempt, attempts 1 and 2), a receive span links to it, B's publish
// span is a child of A's second process span and B's process span a child
// of that: one trace, with the conventions' attribute names.
func TestTraceAcrossBrokers(t *testing.T) {
	for _, b := range brokerURLs {
		t.Run(b.name, func(t *testing.T) {
			rawURL := b.url(t)
			system := telemetry.System(rawURL)
			tr := newTraced(t, system)
			c := open(t, rawURL, tr.tel.OpenOption())
			in, out, group := unique("in"), unique("out"), unique("g")
			if b.name == "sqs" {
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					if err := sqs.DeleteTopics(ctx, c, []string{in, out}); err != nil {
						t.Errorf("delete topics: %v", err)
					}
				})
			}
			testTrace(t, tr, c, system, in, out, group)
		})
	}
}

func testTrace(t *testing.T, tr *traced, c *polybus.Client, system, in, out, group string) {
	var r ready
	var mu sync.Mutex
	calls := map[string]int{}
	var partitionA = -1
	correlation, _ := middleware.Correlation(middleware.CorrelationConfig{})
	var b *message.Message
	opts := append(tr.tel.SubscribeOptions(), subscriber.Use(correlation), subscriber.Group(group))
	consume(t, c, in, func(ctx context.Context, m *message.Message) error {
		if r.probe(m) {
			return nil
		}
		mu.Lock()
		calls[m.ID]++
		n := calls[m.ID]
		d, _ := m.Delivery()
		partitionA = d.Partition
		mu.Unlock()
		if n == 1 {
			return message.RetryAfter(errors.New("first attempt fails"), 10*time.Millisecond)
		}
		next := &message.Message{ID: message.NewID(), Key: m.Key, Payload: []byte("B")}
		middleware.Propagate(ctx, next)
		mu.Lock()
		b = next
		mu.Unlock()
		return c.Publisher().Publish(ctx, out, next)
	}, opts...)
	gotB := make(chan string, 1)
	consume(t, c, out, func(ctx context.Context, m *message.Message) error {
		if !r.probe(m) {
			select {
			case gotB <- m.ID:
			default:
			}
		}
		return nil
	}, append(tr.tel.SubscribeOptions(), subscriber.Group(group))...)
	r.await(t, c, in)
	r.await(t, c, out)

	a := &message.Message{Key: "order-1", Payload: []byte("A")}
	if err := c.Publisher().Publish(context.Background(), in, a); err != nil {
		t.Fatal(err)
	}
	var bID string
	select {
	case bID = <-gotB:
	case <-time.After(pbtest.Wait):
		t.Fatal("B was not delivered")
	}
	mu.Lock()
	if b == nil || b.ID != bID {
		mu.Unlock()
		t.Fatalf("delivered %s, published %v", bID, b)
	}
	mu.Unlock()
	// A's second process span ends after its handler returned, which may
	// be after B was handled.
	pbtest.WaitFor(t, "B's process span and A's two", func() bool {
		return len(tr.spans("process "+out, "messaging.message.id", bID)) == 1 && len(tr.spans("process "+in, "messaging.message.id", a.ID)) == 2
	})

	pubA := one(t, tr.spans("publish "+in, "messaging.message.id", a.ID), "A's publish span")
	traceID := pubA.SpanContext().TraceID()
	if pubA.SpanKind() != trace.SpanKindProducer {
		t.Errorf("publish span kind %v", pubA.SpanKind())
	}
	wantAttrs(t, pubA, map[string]string{
		"messaging.system": system, "messaging.destination.name": in,
		"messaging.operation.type": "send", "messaging.operation.name": "publish",
		"messaging.message.id": a.ID,
	})

	procA := tr.spans("process "+in, "messaging.message.id", a.ID)
	sort.Slice(procA, func(i, j int) bool { return procA[i].StartTime().Before(procA[j].StartTime()) })
	if len(procA) != 2 {
		t.Fatalf("A has %d process spans, want 2 (one per attempt)", len(procA))
	}
	for i, s := range procA {
		childOf(t, s, pubA, "A's process span")
		want := map[string]string{
			"messaging.system": system, "messaging.destination.name": in,
			"messaging.consumer.group.name": group,
			"messaging.operation.type":      "process", "messaging.operation.name": "process",
			"messaging.message.id": a.ID, telemetry.AttrAttempt: strconv.Itoa(i + 1),
			telemetry.AttrOutcome: []string{"nacked", "acked"}[i],
		}
		if partitionA >= 0 {
			want["messaging.destination.partition.id"] = strconv.Itoa(partitionA)
		}
		wantAttrs(t, s, want)
	}

	var recv []sdktrace.ReadOnlySpan
	for _, s := range tr.rec.Ended() {
		if s.Name() == "receive "+in && linked(s, pubA.SpanContext()) {
			recv = append(recv, s)
		}
	}
	if len(recv) != 2 {
		t.Errorf("%d receive spans link to A's publish span, want 2 (one per delivery)", len(recv))
	}
	for _, s := range recv {
		wantAttrs(t, s, map[string]string{
			"messaging.system": system, "messaging.destination.name": in,
			"messaging.consumer.group.name": group, "messaging.operation.type": "receive",
		})
		if attrs(s)["messaging.batch.message_count"] == "" {
			t.Errorf("receive span without messaging.batch.message_count: %v", attrs(s))
		}
		if len(s.Links()) == 1 && s.SpanContext().TraceID() != traceID {
			t.Errorf("a receive span of A alone is not in A's trace")
		}
	}

	pubB := one(t, tr.spans("publish "+out, "messaging.message.id", bID), "B's publish span")
	childOf(t, pubB, procA[1], "B's publish span")
	wantAttrs(t, pubB, map[string]string{
		"messaging.message.conversation_id": a.ID, telemetry.AttrCausationID: a.ID,
	})
	procB := one(t, tr.spans("process "+out, "messaging.message.id", bID), "B's process span")
	childOf(t, procB, pubB, "B's process span")
	wantAttrs(t, procB, map[string]string{
		"messaging.message.conversation_id": a.ID, telemetry.AttrCausationID: a.ID,
		telemetry.AttrOutcome: "acked",
	})
	if procB.SpanContext().TraceID() != traceID {
		t.Errorf("B's process span is in trace %s, A's publish in %s", procB.SpanContext().TraceID(), traceID)
	}
}

func one(t *testing.T, spans []sdktrace.ReadOnlySpan, what string) sdktrace.ReadOnlySpan {
	t.Helper()
	if len(spans) != 1 {
		t.Fatalf("%s: %d spans, want 1", what, len(spans))
	}
	return spans[0]
}

func childOf(t *testing.T, s, parent sdktrace.ReadOnlySpan, what string) {
	t.Helper()
	if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("%s (%s) has parent %s/%s, want %s/%s", what, s.Name(),
			s.Parent().TraceID(), s.Parent().SpanID(), parent.SpanContext().TraceID(), parent.SpanContext().SpanID())
	}
}
