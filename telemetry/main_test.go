package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
	"github.com/polybus/polybus/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var nameSeq atomic.Int64

// unique returns a fresh topic or group name for one test.
func unique(kind string) string {
	return fmt.Sprintf("pbtel-%s-%d-%d-%d", kind, os.Getpid(), time.Now().UnixNano()%1e6, nameSeq.Add(1))
}

// traced is a Telemetry over an always-sampling SDK tracer provider whose
// spans a SpanRecorder keeps.
type traced struct {
	tel *telemetry.Telemetry
	rec *tracetest.SpanRecorder
	tp  *sdktrace.TracerProvider
}

func newTraced(t testing.TB, system string) *traced {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tel, err := telemetry.New(telemetry.Config{TracerProvider: tp, System: system})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Close() })
	return &traced{tel: tel, rec: rec, tp: tp}
}

// open opens rawURL with opts and closes the client when the test ends.
func open(t testing.TB, rawURL string, opts ...polybus.OpenOption) *polybus.Client {
	t.Helper()
	return pbtest.Open(t, rawURL, opts...)
}

// probeKey marks the readiness probes, which handlers ack and ignore.
const probeKey = "test-probe"

// ready is a set of topics whose subscriptions have seen a probe.
type ready struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (r *ready) probe(m *message.Message) bool {
	if m.Metadata.Get(probeKey) == "" {
		return false
	}
	d, _ := m.Delivery()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	r.seen[d.Topic] = true
	return true
}

func (r *ready) has(topic string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[topic]
}

// await publishes probes to topic, again every 100ms, until its
// subscription saw one: on brokers where a group receives only what is
// published after it exists, the test publishes nothing before.
func (r *ready) await(t testing.TB, c *polybus.Client, topic string) {
	t.Helper()
	deadline := time.Now().Add(pbtest.Wait)
	for n := 0; !r.has(topic); n++ {
		if time.Now().After(deadline) {
			t.Fatalf("the subscription of %s saw none of %d probes", topic, n)
		}
		p := message.New(nil)
		p.Metadata = message.Metadata{probeKey: "1"}
		err := c.Publisher().Publish(context.Background(), topic, p)
		if err != nil && !errors.Is(err, message.ErrNotFound) && !errors.Is(err, message.ErrUnavailable) {
			t.Fatalf("probe %s: %v", topic, err)
		}
		until := time.Now().Add(100 * time.Millisecond)
		for !r.has(topic) && time.Now().Before(until) {
			time.Sleep(time.Millisecond)
		}
	}
}

// spans returns the ended spans named name whose attribute key is value.
func (tr *traced) spans(name, key, value string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range tr.rec.Ended() {
		if s.Name() != name {
			continue
		}
		for _, a := range s.Attributes() {
			if string(a.Key) == key && a.Value.Emit() == value {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// attrs returns s's attributes as strings.
func attrs(s sdktrace.ReadOnlySpan) map[string]string {
	m := map[string]string{}
	for _, a := range s.Attributes() {
		m[string(a.Key)] = a.Value.Emit()
	}
	return m
}

// wantAttrs checks that s has each attribute of want.
func wantAttrs(t testing.TB, s sdktrace.ReadOnlySpan, want map[string]string) {
	t.Helper()
	got := attrs(s)
	var bad []string
	for k, v := range want {
		if got[k] != v {
			bad = append(bad, fmt.Sprintf("%s=%q (want %q)", k, got[k], v))
		}
	}
	if len(bad) > 0 {
		t.Errorf("span %q: %s; all: %v", s.Name(), strings.Join(bad, ", "), got)
	}
}

// linked reports whether s links to sc.
func linked(s sdktrace.ReadOnlySpan, sc trace.SpanContext) bool {
	for _, l := range s.Links() {
		if l.SpanContext.TraceID() == sc.TraceID() && l.SpanContext.SpanID() == sc.SpanID() {
			return true
		}
	}
	return false
}

// consume runs Subscribe in the background until the test ends.
func consume(t testing.TB, c *polybus.Client, topic string, h subscriber.Handler, opts ...subscriber.Option) {
	t.Helper()
	pbtest.Consume(t, c, topic, h, opts...)
}
