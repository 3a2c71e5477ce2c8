package telemetry_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/polybus/polybus"
	_ "github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/telemetry"
)

// Example_prometheus exports polybus's metrics to Prometheus: an OTel meter
// provider reads into a client_golang registry, which promhttp serves at
// /metrics (an httptest server here; http.Handle("/metrics", ...) in a
// program).
func Example_prometheus() {
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		panic(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.Background())
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	const url = "mem://"
	tel, err := telemetry.New(telemetry.Config{MeterProvider: mp, System: telemetry.System(url)})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	c, err := polybus.Open(ctx, url, tel.OpenOption())
	if err != nil {
		panic(err)
	}
	defer c.Close(ctx)
	for i := range 3 {
		if err := c.Publisher().Publish(ctx, "orders", &message.Message{Key: fmt.Sprint("ord-", i)}); err != nil {
			panic(err)
		}
	}
	subCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Subscriber().Subscribe(subCtx, "orders", func(context.Context, *message.Message) error { return nil },
			tel.SubscribeOptions()...)
	}()

	// Scrape until the three acks are counted.
	var lines []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		lines = scrapeLines(srv.URL, "polybus_published_total", "polybus_received_total", "polybus_acked_total")
		if len(lines) == 3 && strings.HasSuffix(lines[0], " 3") {
			break
		}
	}
	stop()
	<-done
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// polybus_acked_total{messaging_consumer_group_name="default",messaging_destination_name="orders",messaging_system="polybus.memory"} 3
	// polybus_published_total{messaging_destination_name="orders",messaging_system="polybus.memory"} 3
	// polybus_received_total{messaging_consumer_group_name="default",messaging_destination_name="orders",messaging_system="polybus.memory"} 3
}

// scrapeLines returns the samples of the named metrics, without the
// otel_scope_* labels, in the order served.
func scrapeLines(url string, names ...string) []string {
	resp, err := http.Get(url)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		for _, n := range names {
			if strings.HasPrefix(sc.Text(), n+"{") {
				i := strings.LastIndexByte(sc.Text(), ' ')
				out = append(out, dropScope(sc.Text()[:i])+sc.Text()[i:])
			}
		}
	}
	return out
}
