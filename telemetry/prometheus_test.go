package telemetry_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
	"github.com/polybus/polybus/telemetry"
)

// scrape GETs url and returns each sample's value by its series, the
// metric name and its labels as the exposition format prints them, less
// the otel_scope_* labels.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		samples[dropScope(line[:i])] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return samples
}

// dropScope removes the otel_scope_* labels from a series.
func dropScope(series string) string {
	name, labels, ok := strings.Cut(series, "{")
	if !ok {
		return series
	}
	var kept []string
	for _, l := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
		if !strings.HasPrefix(l, "otel_scope_") {
			kept = append(kept, l)
		}
	}
	if len(kept) == 0 {
		return name
	}
	return name + "{" + strings.Join(kept, ",") + "}"
}

// TestPrometheusScrape runs a subscriber on mem:// through a scripted
// run (three messages handled at once, one after two retries, one
// dead-lettered after exhausting its three attempts, a duplicate
// deduplicated, a publish rejected) and scrapes the metrics over HTTP
// from a client_golang registry, while the subscriber still runs.
func TestPrometheusScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)

	broker, err := memory.New(memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const topic, group, dlqGroup = "orders", "billing", "polybus-dlq"
	tel, err := telemetry.New(telemetry.Config{MeterProvider: mp, System: "polybus.memory", Depths: []telemetry.Depth{
		{Source: broker, Topic: topic, Group: group},
		{Source: broker, Topic: topic + middleware.DefaultDLQSuffix, Group: dlqGroup, DeadLetter: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Close() })
	c, err := broker.Client(polybus.ClientOptions{Publisher: publisher.Options{Hook: tel.PublisherHook()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })

	// The dead-letter readers' group exists (as after a first `polybus
	// dlq ls`) and reads nothing: its depth is the dead letters.
	stopDLQ := pbtest.Consume(t, c, topic+middleware.DefaultDLQSuffix, func(context.Context, *message.Message) error {
		return errors.New("not reading")
	}, subscriber.Group(dlqGroup))
	pbtest.WaitFor(t, "the dead-letter group", func() bool { return len(broker.Members(topic+middleware.DefaultDLQSuffix, dlqGroup)) == 1 })
	stopDLQ()

	chain, err := middleware.DefaultChain(middleware.ChainConfig{
		Logging: &middleware.LoggingConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		DLQ:     &middleware.DLQConfig{Publisher: c.Publisher()},
		Retry:   &middleware.RetryConfig{MaxAttempts: 3, InitialInterval: time.Millisecond, RandomizationFactor: middleware.NoJitter},
		Inner:   []subscriber.Middleware{mustDedupe(t)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := map[string]int{}
	handler := func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		calls[m.ID]++
		n := calls[m.ID]
		mu.Unlock()
		switch {
		case m.ID == "flaky" && n <= 2, m.ID == "poison":
			return errors.New("transient failure")
		}
		return nil
	}
	opts := append(tel.SubscribeOptions(), subscriber.Use(chain), subscriber.Group(group), subscriber.Concurrency(1))
	pbtest.Consume(t, c, topic, handler, opts...)
	pbtest.WaitFor(t, "the subscription", func() bool { return len(broker.Members(topic, group)) == 1 })

	ctx := context.Background()
	for _, id := range []string{"a", "b", "c", "flaky", "poison"} {
		if err := c.Publisher().Publish(ctx, topic, &message.Message{ID: id, Key: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Publisher().Publish(ctx, topic, &message.Message{ID: "a", Key: "a"}); err != nil {
		t.Fatal(err)
	}
	bad := &message.Message{Metadata: message.Metadata{"": "empty key"}}
	if err := c.Publisher().Publish(ctx, topic, bad); !errors.Is(err, message.ErrInvalidArgument) {
		t.Fatalf("publish with an empty metadata key: %v", err)
	}
	// Telemetry counts a delivery's outcome before the subscriber settles
	// it: once the group owes nothing, every count is in.
	pbtest.WaitFor(t, "the acks", func() bool { return broker.Depth(topic, group) == 0 })
	mu.Lock()
	h := calls["flaky"] + calls["poison"] + calls["a"]
	mu.Unlock()
	if h != 7 {
		t.Errorf("handler calls of flaky, poison, a: %d, want 3 + 3 + 1", h)
	}

	got := scrape(t, srv.URL)
	sys := `messaging_system="polybus.memory"`
	cons := `{messaging_consumer_group_name="billing",messaging_destination_name="orders",` + sys + `}`
	want := map[string]float64{
		`polybus_published_total{messaging_destination_name="orders",` + sys + `}`:                                    6,
		`polybus_published_total{messaging_destination_name="orders.dlq",` + sys + `}`:                                1,
		`polybus_publish_errors_total{error_type="invalid argument",messaging_destination_name="orders",` + sys + `}`: 1,
		"polybus_received_total" + cons:                   6,
		"polybus_acked_total" + cons:                      6,
		"polybus_retried_total" + cons:                    4,
		"polybus_dead_lettered_total" + cons:              1,
		"polybus_deduplicated_total" + cons:               1,
		"polybus_handler_inflight" + cons:                 0,
		"polybus_handler_duration_seconds_count" + cons:   6,
		"polybus_end_to_end_latency_seconds_count" + cons: 6,
		"polybus_consumer_lag" + cons:                     0,
		`polybus_dlq_depth{messaging_consumer_group_name="polybus-dlq",messaging_destination_name="orders.dlq",` + sys + `}`: 1,
	}
	for series, v := range want {
		if g, ok := got[series]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", series, g, ok, v)
		}
	}
	for series := range got {
		for _, none := range []string{"polybus_nacked_total", "polybus_deferred_total"} {
			if strings.HasPrefix(series, none) {
				t.Errorf("%s is reported: nothing was %s", series, none)
			}
		}
	}
	if t.Failed() {
		for s, v := range got {
			if strings.HasPrefix(s, "polybus_") {
				t.Logf("%s %v", s, v)
			}
		}
	}
}

func mustDedupe(t *testing.T) subscriber.Middleware {
	mw, err := middleware.Dedupe(middleware.DedupeConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return mw
}
