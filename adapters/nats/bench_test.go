package nats_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// The benchmarks compare the polybus adapter with raw nats.go jetstream on
// one embedded server (in-process connections for both), with the same
// settings: the same stream config (file storage, 2-minute duplicates
// window), async publishes awaited in batches of benchBatch, a durable pull
// consumer with MaxAckPending and a Consume pull size of benchPrefetch, and
// an ack per message. The polybus side carries its envelope (Nats-Msg-Id
// and Polybus-Time headers); the raw side sets Nats-Msg-Id only. Both arm
// nats.go's per-message PubAck timeout (the adapter's publish_timeout
// default, 30s), which costs raw about 7% of its publish throughput on a
// 2-core machine when left out. Latency is
// from building a message to its handler, percentiles exact from the sorted
// sample. Run (the machine is noisy: compare polybus and raw run after run):
//
//	go test -c -o /tmp/nats.test ./adapters/nats/ && cd adapters/nats &&
//	for i in 1 2 3 4 5 6; do for v in polybus raw; do
//	  /tmp/nats.test -test.run '^$' -test.bench "(Publish|EndToEnd)/$v\$" -test.benchtime 60000x
//	done; done
const (
	benchBatch    = 100
	benchPrefetch = 256
	benchPayload  = 128
)

// benchEnv is one embedded server with a polybus client and a raw
// connection on it.
type benchEnv struct {
	c  *polybus.Client
	nc *natsgo.Conn
	js jetstream.JetStream
}

// newBenchEnv opens embedded:// in a fresh directory; POLYBUS_BENCH_QUERY
// is appended to its URL (for example "?partitions=1").
func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	c := open(b, "embedded://"+b.TempDir()+os.Getenv("POLYBUS_BENCH_QUERY"))
	var srv *server.Server
	if !c.Publisher().As(&srv) {
		b.Fatal("no embedded server")
	}
	nc, err := natsgo.Connect("", natsgo.InProcessServer(srv))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<16),
		// The adapter's default PubAck timeout: the same settings on both sides.
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{c: c, nc: nc, js: js}
}

// rawStream creates the stream that polybus would create for subject.
func (e *benchEnv) rawStream(b *testing.B, subject string) {
	b.Helper()
	_, err := e.js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "RAW_" + fmt.Sprint(nameSeq.Add(1)), Subjects: []string{subject},
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		Storage: jetstream.FileStorage, Replicas: 1, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}
}

// payload returns a benchPayload-byte payload that starts with now.
func payload() []byte {
	p := make([]byte, benchPayload)
	binary.LittleEndian.PutUint64(p, uint64(time.Now().UnixNano()))
	return p
}

// polyPublish publishes n messages in calls of benchBatch.
func (e *benchEnv) polyPublish(b *testing.B, topic string, n int) {
	ctx := context.Background()
	batch := make([]*message.Message, 0, benchBatch)
	for sent := 0; sent < n; sent += len(batch) {
		batch = batch[:0]
		for i := 0; i < benchBatch && sent+i < n; i++ {
			batch = append(batch, message.New(payload()))
		}
		if err := e.c.Publisher().Publish(ctx, topic, batch...); err != nil {
			b.Fatal(err)
		}
	}
}

// rawPublish publishes n messages with PublishMsgAsync, waiting for the
// PubAcks of every benchBatch, with a message ID header as polybus sets.
func (e *benchEnv) rawPublish(b *testing.B, subject string, n int) {
	futures := make([]jetstream.PubAckFuture, 0, benchBatch)
	for sent := 0; sent < n; sent += len(futures) {
		futures = futures[:0]
		for i := 0; i < benchBatch && sent+i < n; i++ {
			m := natsgo.NewMsg(subject)
			m.Header.Set(jetstream.MsgIDHeader, message.NewID())
			m.Data = payload()
			f, err := e.js.PublishMsgAsync(m)
			if err != nil {
				b.Fatal(err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkPublish measures publish throughput: every PubAck awaited.
func BenchmarkPublish(b *testing.B) {
	e := newBenchEnv(b)
	b.Run("polybus", func(b *testing.B) {
		topic := unique("bench.pub")
		e.polyPublish(b, topic, 1) // creates the stream
		b.ResetTimer()
		e.polyPublish(b, topic, b.N)
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("raw", func(b *testing.B) {
		subject := unique("bench.raw")
		e.rawStream(b, subject)
		b.ResetTimer()
		e.rawPublish(b, subject, b.N)
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
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

// report adds msgs/s and the p50 and p99 latencies (exact, from the sorted
// sample) to b.
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
// them (a no-op handler, acked), and reports throughput and
// publish-to-handle latency.
func BenchmarkEndToEnd(b *testing.B) {
	e := newBenchEnv(b)
	b.Run("polybus", func(b *testing.B) {
		topic := unique("bench.e2e")
		var lat latencies
		var handled atomic.Int64
		done := make(chan struct{})
		n := int64(b.N)
		// Warm-up messages over warmKeys keys reach every partition, so
		// that the timer starts once the subscriber holds them all: what
		// is measured is the steady state, not partition acquisition.
		const warmKeys = 256
		var warmed atomic.Int64
		ready := make(chan struct{})
		stop := subscribe(b, e.c, topic, func(_ context.Context, m *message.Message) error {
			if len(m.Payload) == 1 { // a warm-up message
				if warmed.Add(1) == warmKeys {
					close(ready)
				}
				return nil
			}
			lat.add(m.Payload)
			if handled.Add(1) == n {
				close(done)
			}
			return nil
		}, subscriber.Prefetch(benchPrefetch), subscriber.Unordered())
		warm := make([]*message.Message, warmKeys)
		for i := range warm {
			warm[i] = message.New([]byte{0})
			warm[i].Key = "warm-" + strconv.Itoa(i)
		}
		if err := e.c.Publisher().Publish(context.Background(), topic, warm...); err != nil {
			b.Fatal(err)
		}
		<-ready
		b.ResetTimer()
		e.polyPublish(b, topic, b.N)
		<-done
		b.StopTimer()
		lat.report(b, b.N)
		stop()
	})
	b.Run("raw", func(b *testing.B) {
		subject := unique("bench.rawe2e")
		e.rawStream(b, subject)
		stream, err := e.js.StreamNameBySubject(context.Background(), subject)
		if err != nil {
			b.Fatal(err)
		}
		cons, err := e.js.CreateConsumer(context.Background(), stream, jetstream.ConsumerConfig{
			Durable: "g", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
			AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: benchPrefetch, FilterSubject: subject,
		})
		if err != nil {
			b.Fatal(err)
		}
		var lat latencies
		var handled atomic.Int64
		done := make(chan struct{})
		n := int64(b.N)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			lat.add(m.Data())
			_ = m.Ack()
			if handled.Add(1) == n {
				close(done)
			}
		}, jetstream.PullMaxMessages(benchPrefetch))
		if err != nil {
			b.Fatal(err)
		}
		defer func() { cc.Stop(); <-cc.Closed() }()
		b.ResetTimer()
		e.rawPublish(b, subject, b.N)
		<-done
		b.StopTimer()
		lat.report(b, b.N)
	})
}

// BenchmarkGroupScaling measures one consumer group on embedded:// with 1
// and with 3 subscribers, each on its own client (concurrency 8), handling
// b.N messages over 64 keys in per-key order; each call simulates 1ms of
// I/O. The messages are published before the subscribers start; the time
// is from the start of the first subscriber to the last message handled.
// Run:
//
//	go test -run '^$' -bench 'GroupScaling' -benchtime 20000x ./adapters/nats/
func BenchmarkGroupScaling(b *testing.B) {
	for _, subs := range []int{1, 3} {
		b.Run(fmt.Sprint(subs), func(b *testing.B) {
			u := "embedded://" + b.TempDir()
			pub := open(b, u)
			topic, group := unique("bench.scale"), unique("g")
			batch := make([]*message.Message, 0, benchBatch)
			for sent := 0; sent < b.N; sent += len(batch) {
				batch = batch[:0]
				for i := 0; i < benchBatch && sent+i < b.N; i++ {
					m := message.New(payload())
					m.Key = fmt.Sprintf("key-%d", (sent+i)%64)
					batch = append(batch, m)
				}
				if err := pub.Publisher().Publish(context.Background(), topic, batch...); err != nil {
					b.Fatal(err)
				}
			}
			var handled atomic.Int64
			done := make(chan struct{})
			n := int64(b.N)
			h := func(context.Context, *message.Message) error {
				time.Sleep(time.Millisecond)
				if handled.Add(1) == n {
					close(done)
				}
				return nil
			}
			b.ResetTimer()
			for range subs {
				c := open(b, u)
				subscribe(b, c, topic, h, subscriber.Group(group), subscriber.Concurrency(8))
			}
			<-done
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
