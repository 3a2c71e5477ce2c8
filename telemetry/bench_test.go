package telemetry_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/subscriber"
	"github.com/polybus/polybus/telemetry"
)

// discard is a span exporter that drops every span.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

var benchPayload = make([]byte, 256)

// BenchmarkEndToEnd is adapters/memory's BenchmarkEndToEnd/ordered (64
// keys, calls of 100, one subscriber of concurrency 8, prefetch 256) with
// telemetry off and on; an op is one message published, delivered,
// handled and acked. Compare the allocs/op and ns/op of the
// sub-benchmarks:
//
//	off      no hooks, no middleware
//	metrics  the SDK meter provider (a manual reader, never collected) and a no-op tracer
//	on       metrics and the SDK tracer provider, always sampling, every span exported (synchronously) to a discarding exporter
//
//	go test -run '^$' -bench EndToEnd -benchmem -count 6 ./telemetry/
func BenchmarkEndToEnd(b *testing.B) {
	b.Run("off", func(b *testing.B) { benchEndToEnd(b, nil) })
	b.Run("metrics", func(b *testing.B) {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
		tel, err := telemetry.New(telemetry.Config{TracerProvider: noop.NewTracerProvider(), MeterProvider: mp})
		if err != nil {
			b.Fatal(err)
		}
		benchEndToEnd(b, tel)
	})
	b.Run("on", func(b *testing.B) {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSyncer(discard{}))
		b.Cleanup(func() {
			_ = mp.Shutdown(context.Background())
			_ = tp.Shutdown(context.Background())
		})
		tel, err := telemetry.New(telemetry.Config{TracerProvider: tp, MeterProvider: mp})
		if err != nil {
			b.Fatal(err)
		}
		benchEndToEnd(b, tel)
	})
}

func benchEndToEnd(b *testing.B, tel *telemetry.Telemetry) {
	var open []polybus.OpenOption
	opts := []subscriber.Option{subscriber.Concurrency(8), subscriber.Prefetch(256)}
	if tel != nil {
		open = append(open, tel.OpenOption())
		opts = append(tel.SubscribeOptions(), opts...)
	}
	c, err := polybus.Open(context.Background(), "mem://?max_messages=1000000&max_bytes=1073741824", open...)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(context.Background())
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = string(rune('A'+i%26)) + string(rune('a'+i/26))
	}
	pbtest.EndToEnd(b, c, "e2e", keys, benchPayload, opts...)
}
