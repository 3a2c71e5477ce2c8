//go:build unix

package kafka_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// The benchmarks compare the polybus adapter with raw kafka-go on the
// broker of scripts/brokers, tuned the same way: one-partition topics
// created ahead, acks=all, murmur2 partitioning, 64 keys, calls of
// benchBatch messages from one goroutine, each awaited before the next.
// The raw publisher is a kafka.Writer with BatchSize benchBatch (a call
// fills a batch, so it is written at once; BatchTimeout 1ms for the rest)
// and MaxAttempts 1 (polybus does not retry either). The raw consumer is a
// kafka.Reader in a consumer group (FetchMessage, then CommitMessages
// synchronously every benchBatch messages); polybus runs an unordered
// subscriber with Prefetch benchPrefetch, a no-op handler and the
// default commits (synchronous, per ack batch), on the client that
// publishes (one client per application, as polybus is used: a second one
// would add a second metadata refresh of every topic of the broker);
// POLYBUS_KAFKA_BENCH_QUERY gives the subscriber a client of its own with
// these URL options (for instance commit_interval=5ms). The polybus side
// carries its envelope (the ID and time headers); the raw side sends the
// same ID as a header. Latency is from building a message to its handler,
// in an HDR histogram (1 µs to 1 min, 3 significant digits). Every run
// also reports the process's CPU time (user+system, getrusage) and heap
// allocations per message: the broker is another process, so this is the
// client's cost alone, and it is steadier than msgs/s on a shared machine.
//
// The figures for the notes come from TestBenchRounds, which alternates
// polybus and raw runs on the same broker, round after round, and prints
// per-round ratios and their medians; with POLYBUS_KAFKA_CEILING=1 it adds
// Kafka's own ProducerPerformance and ConsumerPerformance (see
// ceiling_test.go):
//
//	POLYBUS_KAFKA_BENCH=50000 POLYBUS_KAFKA_BENCH_ROUNDS=5 \
//	  go test -run '^TestBenchRounds$' -v -timeout 60m ./adapters/kafka/
//
// The Benchmark functions run the same code under go test -bench, for
// profiles:
//
//	go test -run '^$' -bench 'EndToEnd/256B/polybus' -benchtime 50000x \
//	  -cpuprofile /tmp/e2e.prof ./adapters/kafka/ && go tool pprof -top /tmp/e2e.prof
const (
	benchBatch    = 100
	benchPrefetch = 256
	benchKeys     = 64
)

var benchSizes = []int{256, 4096}

type benchEnv struct {
	url       string
	bootstrap []string
	c         *polybus.Client
	client    *kafkago.Client
}

func newBenchEnv(t testing.TB) *benchEnv {
	t.Helper()
	u := kafkaURL(t, "partitions=1")
	c := open(t, u)
	var kc *kafkago.Client
	if !c.Publisher().As(&kc) {
		t.Fatal("no kafka client")
	}
	host := strings.TrimPrefix(strings.SplitN(u, "?", 2)[0], "kafka://")
	return &benchEnv{url: u, bootstrap: strings.Split(host, ","), c: c, client: kc}
}

// topic returns a fresh topic, created by polybus (one partition), with
// one one-byte message in it.
func (e *benchEnv) topic(t testing.TB) string {
	t.Helper()
	topic := unique("bench")
	if err := e.c.Publisher().Publish(context.Background(), topic, message.New([]byte{0})); err != nil {
		t.Fatal(err)
	}
	return topic
}

// payload returns a size-byte payload that starts with now.
func payload(size int) []byte {
	p := make([]byte, size)
	binary.LittleEndian.PutUint64(p, uint64(time.Now().UnixNano()))
	return p
}

var benchKeyNames = func() []string {
	ks := make([]string, benchKeys)
	for i := range ks {
		ks[i] = fmt.Sprintf("key-%d", i)
	}
	return ks
}()

func benchKey(i int) string { return benchKeyNames[i%benchKeys] }

func polyPublish(t testing.TB, c *polybus.Client, topic string, n, size int) {
	ctx := context.Background()
	batch := make([]*message.Message, 0, benchBatch)
	for sent := 0; sent < n; sent += len(batch) {
		batch = batch[:0]
		for i := 0; i < benchBatch && sent+i < n; i++ {
			m := message.New(payload(size))
			m.Key = benchKey(sent + i)
			batch = append(batch, m)
		}
		if err := c.Publisher().Publish(ctx, topic, batch...); err != nil {
			t.Fatal(err)
		}
	}
}

// writer returns the raw side's writer, on a transport of its own; close
// ends its goroutines.
func (e *benchEnv) writer(topic string) (w *kafkago.Writer, close func()) {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &kafkago.Transport{Context: ctx}
	w = &kafkago.Writer{
		Transport:    tr,
		Addr:         kafkago.TCP(e.bootstrap...),
		Topic:        topic,
		Balancer:     &kafkago.Murmur2Balancer{},
		MaxAttempts:  1,
		BatchSize:    benchBatch,
		BatchBytes:   16 << 20,
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafkago.RequireAll,
	}
	return w, func() { w.Close(); cancel(); tr.CloseIdleConnections() }
}

// reader is the raw consumer: a kafka.Reader in a group of its own, from
// the earliest offset, with polybus's default fetch and group settings.
func (e *benchEnv) reader(topic string) *kafkago.Reader {
	return kafkago.NewReader(kafkago.ReaderConfig{
		Brokers: e.bootstrap, GroupID: unique("raw"), Topic: topic,
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 500 * time.Millisecond,
		QueueCapacity: benchPrefetch, StartOffset: kafkago.FirstOffset,
		HeartbeatInterval: time.Second, SessionTimeout: 10 * time.Second,
	})
}

func rawPublish(t testing.TB, w *kafkago.Writer, n, size int) {
	ctx := context.Background()
	batch := make([]kafkago.Message, 0, benchBatch)
	for sent := 0; sent < n; sent += len(batch) {
		batch = batch[:0]
		for i := 0; i < benchBatch && sent+i < n; i++ {
			batch = append(batch, kafkago.Message{
				Key:     []byte(benchKey(sent + i)),
				Value:   payload(size),
				Headers: []kafkago.Header{{Key: "polybus-id", Value: []byte(message.NewID())}},
			})
		}
		if err := w.WriteMessages(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
}

// warmUp writes one message with w, again until the writer's transport
// knows the topic (its metadata cache refreshes every few seconds).
func warmUp(t testing.TB, w *kafkago.Writer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := w.WriteMessages(context.Background(), kafkago.Message{Value: []byte{0}})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// benchResult is one measured run.
type benchResult struct {
	n       int
	elapsed time.Duration
	cpu     time.Duration // user+system of the whole process
	allocs  uint64        // heap allocations of the whole process
	lat     *hdrhistogram.Histogram
}

func (r benchResult) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// cpuPerMsg is the process's CPU time per message, in µs.
func (r benchResult) cpuPerMsg() float64 { return float64(r.cpu.Microseconds()) / float64(r.n) }

func (r benchResult) allocsPerMsg() float64 { return float64(r.allocs) / float64(r.n) }

// p returns the latency quantile q (0..100) in µs, or 0.
func (r benchResult) p(q float64) float64 {
	if r.lat == nil {
		return 0
	}
	return float64(r.lat.ValueAtQuantile(q))
}

func (r benchResult) String() string {
	s := fmt.Sprintf("%8.0f msgs/s %6.1f cpu-µs/msg %5.1f allocs/msg", r.rate(), r.cpuPerMsg(), r.allocsPerMsg())
	if r.lat != nil {
		s += fmt.Sprintf("  p50 %6.0fµs p99 %7.0fµs", r.p(50), r.p(99))
	}
	return s
}

// report adds r's figures to b.
func (r benchResult) report(b *testing.B) {
	b.ReportMetric(r.rate(), "msgs/s")
	b.ReportMetric(r.cpuPerMsg(), "cpu-µs/msg")
	if r.lat != nil {
		b.ReportMetric(r.p(50), "p50-µs")
		b.ReportMetric(r.p(99), "p99-µs")
	}
}

// meter measures one run: wall time, process CPU and allocations.
type meter struct {
	start  time.Time
	cpu    time.Duration
	allocs uint64
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

func startMeter() meter {
	runtime.GC()
	return meter{allocs: mallocs(), cpu: processCPU(), start: time.Now()}
}

func (m meter) stop(n int, lat *hdrhistogram.Histogram) benchResult {
	elapsed := time.Since(m.start)
	cpu := processCPU() - m.cpu
	return benchResult{n: n, elapsed: elapsed, cpu: cpu, allocs: mallocs() - m.allocs, lat: lat}
}

// latencies collects publish-to-handle latencies in µs.
type latencies struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func newLatencies() *latencies { return &latencies{h: hdrhistogram.New(1, 60_000_000, 3)} }

func (l *latencies) add(p []byte) {
	d := time.Duration(time.Now().UnixNano() - int64(binary.LittleEndian.Uint64(p)))
	l.mu.Lock()
	_ = l.h.RecordValue(max(d.Microseconds(), 1))
	l.mu.Unlock()
}

// The runs. Each gets a fresh topic (and group) and returns its figures.

func runPolyPublish(t testing.TB, e *benchEnv, size, n int) benchResult {
	topic := e.topic(t)
	m := startMeter()
	polyPublish(t, e.c, topic, n, size)
	return m.stop(n, nil)
}

func runRawPublish(t testing.TB, e *benchEnv, size, n int) benchResult {
	topic := e.topic(t)
	w, closeW := e.writer(topic)
	defer closeW()
	warmUp(t, w)
	m := startMeter()
	rawPublish(t, w, n, size)
	return m.stop(n, nil)
}

func runPolyEndToEnd(t testing.TB, e *benchEnv, size, n int) benchResult {
	topic := e.topic(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sub := e.subscriberClient(t, ctx)
	lat := newLatencies()
	var handled atomic.Int64
	done := make(chan struct{})
	ready := make(chan struct{}, 1)
	subDone := make(chan error, 1)
	go func() {
		subDone <- sub.Subscriber().Subscribe(ctx, topic, func(_ context.Context, m *message.Message) error {
			if len(m.Payload) == 1 { // the topic's first message
				ready <- struct{}{}
				return nil
			}
			lat.add(m.Payload)
			if handled.Add(1) == int64(n) {
				close(done)
			}
			return nil
		}, subscriber.Group(unique("g")), subscriber.Prefetch(benchPrefetch), subscriber.Unordered())
	}()
	waitBench(t, ready, subDone)
	mt := startMeter()
	polyPublish(t, e.c, topic, n, size)
	waitBench(t, done, subDone)
	r := mt.stop(n, lat.h)
	cancel()
	if err := <-subDone; err != nil {
		t.Errorf("subscribe: %v", err)
	}
	return r
}

// subscriberClient returns the client that the polybus runs subscribe
// with: the publishing one, as an application would, unless
// POLYBUS_KAFKA_BENCH_QUERY asks for other options, which then get a
// client of their own, closed when the test ends.
func (e *benchEnv) subscriberClient(t testing.TB, ctx context.Context) *polybus.Client {
	t.Helper()
	q := os.Getenv("POLYBUS_KAFKA_BENCH_QUERY")
	if q == "" {
		return e.c
	}
	c, err := polybus.Open(ctx, withQuery(e.url, q))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// waitBench waits for ch, failing if the subscription ends first or after
// two minutes.
func waitBench(t testing.TB, ch <-chan struct{}, subDone chan error) {
	t.Helper()
	select {
	case <-ch:
	case err := <-subDone:
		t.Fatalf("subscription ended: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("benchmark run timed out")
	}
}

func runRawEndToEnd(t testing.TB, e *benchEnv, size, n int) benchResult {
	topic := e.topic(t)
	w, closeW := e.writer(topic)
	defer closeW()
	warmUp(t, w)
	r := e.reader(topic)
	defer r.Close()
	lat := newLatencies()
	done := make(chan struct{})
	ready := make(chan struct{}, 1)
	var failed error
	go func() {
		defer close(done)
		var pending []kafkago.Message
		handled := 0
		for handled < n {
			m, err := r.FetchMessage(context.Background())
			if err != nil {
				failed = err
				return
			}
			if len(m.Value) == 1 {
				select {
				case ready <- struct{}{}:
				default:
				}
			} else {
				lat.add(m.Value)
				handled++
			}
			pending = append(pending, m)
			if len(pending) == benchBatch || handled == n {
				if err := r.CommitMessages(context.Background(), pending...); err != nil {
					failed = err
					return
				}
				pending = pending[:0]
			}
		}
	}()
	select {
	case <-ready:
	case <-done:
		t.Fatalf("raw reader: %v", failed)
	}
	mt := startMeter()
	rawPublish(t, w, n, size)
	<-done
	res := mt.stop(n, lat.h)
	if failed != nil {
		t.Fatalf("raw reader: %v", failed)
	}
	return res
}

// fill writes n messages of size bytes to topic with a raw writer, not
// measured, for the consume runs.
func (e *benchEnv) fill(t testing.TB, topic string, n, size int) {
	t.Helper()
	w, closeW := e.writer(topic)
	defer closeW()
	warmUp(t, w)
	rawPublish(t, w, n, size)
}

// runPolyConsume drains a backlog of n messages (plus the topic's first
// and the warm-up one) with a polybus subscriber; no latency, as the
// messages were written before.
func runPolyConsume(t testing.TB, e *benchEnv, size, n int) benchResult {
	topic := e.topic(t)
	e.fill(t, topic, n, size)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sub := e.subscriberClient(t, ctx)
	var handled atomic.Int64
	done := make(chan struct{})
	subDone := make(chan error, 1)
	total := int64(n + 2)
	var mt meter
	started := make(chan struct{})
	go func() {
		subDone <- sub.Subscriber().Subscribe(ctx, topic, func(_ context.Context, m *message.Message) error {
			switch handled.Add(1) {
			case 1: // the group has joined: measure from here
				mt = meter{allocs: mallocs(), cpu: processCPU(), start: time.Now()}
				close(started)
			case total:
				close(done)
			}
			return nil
		}, subscriber.Group(unique("g")), subscriber.Prefetch(benchPrefetch), subscriber.Unordered())
	}()
	waitBench(t, done, subDone)
	<-started
	r := mt.stop(n+1, nil)
	cancel()
	if err := <-subDone; err != nil {
		t.Errorf("subscribe: %v", err)
	}
	return r
}

// runRawConsume drains the same backlog with a raw kafka.Reader in a
// group, committing every benchBatch messages.
func runRawConsume(t testing.TB, e *benchEnv, size, n int) benchResult {
	topic := e.topic(t)
	e.fill(t, topic, n, size)
	r := e.reader(topic)
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var pending []kafkago.Message
	var mt meter
	for handled := 0; handled < n+2; {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("raw reader: %v", err)
		}
		if handled++; handled == 1 { // the group has joined: measure from here
			mt = meter{allocs: mallocs(), cpu: processCPU(), start: time.Now()}
		}
		pending = append(pending, m)
		if len(pending) == benchBatch || handled == n+2 {
			if err := r.CommitMessages(ctx, pending...); err != nil {
				t.Fatalf("raw commit: %v", err)
			}
			pending = pending[:0]
		}
	}
	return mt.stop(n+1, nil)
}

// BenchmarkPublish measures publish throughput, every message acked by
// all in-sync replicas.
func BenchmarkPublish(b *testing.B) { benchPairs(b, runPolyPublish, runRawPublish) }

// BenchmarkEndToEnd publishes b.N messages while one subscriber handles
// them, and reports throughput and publish-to-handle latency.
func BenchmarkEndToEnd(b *testing.B) { benchPairs(b, runPolyEndToEnd, runRawEndToEnd) }

// BenchmarkConsume drains a backlog of b.N messages written before, from
// the group's first generation to the last message handled.
func BenchmarkConsume(b *testing.B) { benchPairs(b, runPolyConsume, runRawConsume) }

// benchPairs runs, on one benchEnv, for each message size the sub-benchmark
// "SIZEB/polybus" (poly) and then "SIZEB/raw" (raw), each with b.N messages
// of that size, reporting bytes and allocations.
func benchPairs(b *testing.B, poly, raw func(testing.TB, *benchEnv, int, int) benchResult) {
	e := newBenchEnv(b)
	sides := []struct {
		name string
		run  func(testing.TB, *benchEnv, int, int) benchResult
	}{{"polybus", poly}, {"raw", raw}}
	for _, size := range benchSizes {
		for _, side := range sides {
			b.Run(fmt.Sprintf("%dB/%s", size, side.name), func(b *testing.B) {
				b.SetBytes(int64(size))
				b.ReportAllocs()
				side.run(b, e, size, b.N).report(b)
			})
		}
	}
}
