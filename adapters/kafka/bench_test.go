package kafka_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/internal/pbtest"
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
// synchronously every benchBatch messages, as polybus commits per ack
// batch); polybus runs an unordered subscriber with Prefetch benchPrefetch
// and a no-op handler. The polybus side carries its envelope (the ID and
// time headers); the raw side sends the same ID as a header. Latency is
// from building a message to its handler; percentiles exact from the
// sorted sample. Run (the machine is shared: compare polybus and raw run
// after run, in interleaved rounds):
//
//	go test -c -o /tmp/kafka.test ./adapters/kafka/ && cd adapters/kafka &&
//	for i in 1 2 3; do for v in polybus raw; do
//	  /tmp/kafka.test -test.run '^$' -test.bench "(Publish|EndToEnd)/.*/$v\$" -test.benchtime 100000x
//	done; done
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

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	u := kafkaURL(b, "")
	c := open(b, u)
	var kc *kafkago.Client
	if !c.Publisher().As(&kc) {
		b.Fatal("no kafka client")
	}
	host := strings.TrimPrefix(strings.SplitN(u, "?", 2)[0], "kafka://")
	return &benchEnv{url: u, bootstrap: strings.Split(host, ","), c: c, client: kc}
}

// topic returns a fresh topic, created by polybus (one partition).
func (e *benchEnv) topic(b *testing.B) string {
	b.Helper()
	t := unique("bench")
	if err := e.c.Publisher().Publish(context.Background(), t, message.New([]byte{0})); err != nil {
		b.Fatal(err)
	}
	return t
}

// payload returns a size-byte payload that starts with now.
func payload(size int) []byte {
	p := make([]byte, size)
	binary.LittleEndian.PutUint64(p, uint64(time.Now().UnixNano()))
	return p
}

func (e *benchEnv) polyPublish(b *testing.B, topic string, n, size int) {
	ctx := context.Background()
	batch := make([]*message.Message, 0, benchBatch)
	for sent := 0; sent < n; sent += len(batch) {
		batch = batch[:0]
		for i := 0; i < benchBatch && sent+i < n; i++ {
			m := message.New(payload(size))
			m.Key = benchKey(sent + i)
			batch = append(batch, m)
		}
		if err := e.c.Publisher().Publish(ctx, topic, batch...); err != nil {
			b.Fatal(err)
		}
	}
}

func benchKey(i int) string { return fmt.Sprintf("key-%d", i%benchKeys) }

// writer returns the raw side's writer, on a transport of its own whose
// goroutines end with the benchmark.
func (e *benchEnv) writer(b *testing.B, topic string) *kafkago.Writer {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &kafkago.Transport{Context: ctx}
	b.Cleanup(func() { cancel(); tr.CloseIdleConnections() })
	return &kafkago.Writer{
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
}

func rawPublish(b *testing.B, w *kafkago.Writer, n, size int) {
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
			b.Fatal(err)
		}
	}
}

// warmUp writes one message with w, again until the writer's transport
// knows the topic (its metadata cache refreshes every few seconds).
func warmUp(b *testing.B, w *kafkago.Writer) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := w.WriteMessages(context.Background(), kafkago.Message{Value: []byte{0}})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkPublish measures publish throughput, every message acked by
// all in-sync replicas.
func BenchmarkPublish(b *testing.B) {
	e := newBenchEnv(b)
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB/polybus", size), func(b *testing.B) {
			topic := e.topic(b)
			b.SetBytes(int64(size))
			b.ResetTimer()
			e.polyPublish(b, topic, b.N, size)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		b.Run(fmt.Sprintf("%dB/raw", size), func(b *testing.B) {
			topic := e.topic(b)
			w := e.writer(b, topic)
			defer w.Close()
			warmUp(b, w)
			b.SetBytes(int64(size))
			b.ResetTimer()
			rawPublish(b, w, b.N, size)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// latencies collects publish-to-handle latencies.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(p []byte) {
	d := time.Duration(time.Now().UnixNano() - int64(binary.LittleEndian.Uint64(p)))
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// report adds msgs/s and the p50 and p99 latencies to b.
func (l *latencies) report(b *testing.B, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.Sort(l.d)
	if len(l.d) == 0 {
		return
	}
	pct := func(p float64) float64 { return float64(l.d[int(p*float64(len(l.d)-1))].Microseconds()) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkEndToEnd publishes b.N messages while one subscriber handles
// them, and reports throughput and publish-to-handle latency.
func BenchmarkEndToEnd(b *testing.B) {
	e := newBenchEnv(b)
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB/polybus", size), func(b *testing.B) {
			topic := e.topic(b)
			sub := open(b, e.url)
			var lat latencies
			var handled atomic.Int64
			done := make(chan struct{})
			ready := make(chan struct{}, 1)
			n := int64(b.N)
			stop := pbtest.Consume(b, sub, topic, func(_ context.Context, m *message.Message) error {
				if len(m.Payload) == 1 { // the topic's first message
					ready <- struct{}{}
					return nil
				}
				lat.add(m.Payload)
				if handled.Add(1) == n {
					close(done)
				}
				return nil
			}, subscriber.Group(unique("g")), subscriber.Prefetch(benchPrefetch), subscriber.Unordered())
			<-ready
			b.SetBytes(int64(size))
			b.ResetTimer()
			e.polyPublish(b, topic, b.N, size)
			<-done
			b.StopTimer()
			lat.report(b, b.N)
			stop()
		})
		b.Run(fmt.Sprintf("%dB/raw", size), func(b *testing.B) {
			topic := e.topic(b)
			w := e.writer(b, topic)
			defer w.Close()
			warmUp(b, w)
			r := kafkago.NewReader(kafkago.ReaderConfig{
				Brokers: e.bootstrap, GroupID: unique("raw"), Topic: topic,
				MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 500 * time.Millisecond,
				QueueCapacity: benchPrefetch, StartOffset: kafkago.FirstOffset,
				HeartbeatInterval: time.Second, SessionTimeout: 10 * time.Second,
			})
			var lat latencies
			n := b.N
			done := make(chan struct{})
			ready := make(chan struct{}, 1)
			go func() {
				defer close(done)
				var pending []kafkago.Message
				handled := 0
				for handled < n {
					m, err := r.FetchMessage(context.Background())
					if err != nil {
						b.Error(err)
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
							b.Error(err)
							return
						}
						pending = pending[:0]
					}
				}
			}()
			<-ready
			b.SetBytes(int64(size))
			b.ResetTimer()
			rawPublish(b, w, b.N, size)
			<-done
			b.StopTimer()
			lat.report(b, b.N)
			r.Close()
		})
	}
}
