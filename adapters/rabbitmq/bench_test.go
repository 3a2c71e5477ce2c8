package rabbitmq_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/rabbitmq"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// The benchmarks compare the polybus adapter with raw amqp091-go on the
// broker of POLYBUS_AMQP_URL, with the same topology and settings: a
// durable topic exchange and one durable quorum queue bound "#" (polybus's
// unordered layout, ordered=false), persistent messages, publisher
// confirms with benchBatch publishes outstanding and then awaited (polybus:
// one Publish call of benchBatch messages), a consumer with QoS prefetch
// benchPrefetch that acks every message. The polybus side carries its
// headers (key, time) and a message ID; the raw side sets the message ID.
// End-to-end latency is from building a message to its handler (the send
// time travels in the payload); percentiles are exact from the sorted
// sample. Run (the machine is noisy: compare polybus and raw run after
// run, interleaved):
//
//	go test -c -o /tmp/rabbitmq.test ./adapters/rabbitmq/ && cd adapters/rabbitmq &&
//	for i in 1 2 3 4; do for v in polybus raw; do
//	  /tmp/rabbitmq.test -test.run '^$' -test.bench "(Publish|EndToEnd)/$v\$" -test.benchtime 20000x
//	done; done
const (
	benchBatch    = 100
	benchPrefetch = 256
	benchPayload  = 128
)

type benchEnv struct {
	url  string
	c    *polybus.Client
	conn *amqp.Connection
	ch   *amqp.Channel
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	u := brokertest.URL(b, "rabbitmq")
	c := open(b, withQuery(u, "ordered=false"))
	conn, err := amqp.Dial(u)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{url: u, c: c, conn: conn, ch: ch}
}

// rawTopology declares what polybus declares for topic and group in the
// unordered layout, under the raw side's own names.
func (e *benchEnv) rawTopology(b *testing.B, topic, queue string) {
	b.Helper()
	must(b, e.ch.ExchangeDeclare(topic, amqp.ExchangeTopic, true, false, false, false, nil))
	_, err := e.ch.QueueDeclare(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	must(b, err)
	must(b, e.ch.QueueBind(queue, "#", topic, false, nil))
	b.Cleanup(func() { e.ch.QueueDelete(queue, false, false, false); e.ch.ExchangeDelete(topic, false, false) })
}

func (e *benchEnv) polybusTopology(b *testing.B, topic, group string) {
	b.Helper()
	declare(b, e.c, topic, group)
	b.Cleanup(func() {
		e.ch.QueueDelete(rabbitmq.QueueName(topic, group), false, false, false)
		e.ch.ExchangeDelete(topic, false, false)
	})
}

func must(b testing.TB, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

func stamp(p []byte) []byte {
	binary.BigEndian.PutUint64(p, uint64(time.Now().UnixNano()))
	return p
}

func benchMsgs(n int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.New(make([]byte, benchPayload))
		msgs[i].Key = "k" + itoa(i%32)
	}
	return msgs
}

func itoa(i int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
		if i == 0 {
			return string(b)
		}
	}
}

// polybusPublish publishes n messages in calls of benchBatch.
func polybusPublish(b *testing.B, c *polybus.Client, topic string, n int) {
	ctx := context.Background()
	for sent := 0; sent < n; {
		k := min(benchBatch, n-sent)
		msgs := benchMsgs(k)
		for _, m := range msgs {
			stamp(m.Payload)
		}
		if err := c.Publisher().Publish(ctx, topic, msgs...); err != nil {
			b.Fatal(err)
		}
		sent += k
	}
}

// rawPublish publishes n messages with benchBatch confirms outstanding.
func rawPublish(b *testing.B, ch *amqp.Channel, topic string, n int) {
	ctx := context.Background()
	dcs := make([]*amqp.DeferredConfirmation, 0, benchBatch)
	for sent := 0; sent < n; {
		k := min(benchBatch, n-sent)
		dcs = dcs[:0]
		for i := range k {
			p := amqp.Publishing{DeliveryMode: amqp.Persistent, MessageId: message.NewID(), Timestamp: time.Now(),
				Body: stamp(make([]byte, benchPayload))}
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, topic, rabbitmq.RoutingKey((sent+i)%rabbitmq.DefaultPartitions), true, false, p)
			if err != nil {
				b.Fatal(err)
			}
			dcs = append(dcs, dc)
		}
		for _, dc := range dcs {
			if ok, err := dc.WaitContext(ctx); err != nil || !ok {
				b.Fatalf("confirm: %v %v", ok, err)
			}
		}
		sent += k
	}
}

func BenchmarkPublish(b *testing.B) {
	e := newBenchEnv(b)
	b.Run("polybus", func(b *testing.B) {
		topic, group := unique("bench"), "g"
		e.polybusTopology(b, topic, group)
		b.ResetTimer()
		polybusPublish(b, e.c, topic, b.N)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("raw", func(b *testing.B) {
		topic := unique("bench-raw")
		e.rawTopology(b, topic, topic+"-q")
		ch, err := e.conn.Channel()
		must(b, err)
		defer ch.Close()
		must(b, ch.Confirm(false))
		b.ResetTimer()
		rawPublish(b, ch, topic, b.N)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// latencies collects end-to-end latencies.
type latencies struct {
	mu   sync.Mutex
	d    []time.Duration
	done chan struct{}
	want int
}

func newLatencies(n int) *latencies {
	return &latencies{d: make([]time.Duration, 0, n), done: make(chan struct{}), want: n}
}

func (l *latencies) add(p []byte) {
	if len(p) < 8 {
		return
	}
	d := time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(p))))
	l.mu.Lock()
	l.d = append(l.d, d)
	if len(l.d) == l.want {
		close(l.done)
	}
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B) {
	b.StopTimer()
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.Sort(l.d)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(l.d[len(l.d)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(l.d[len(l.d)*99/100].Microseconds()), "p99-µs")
}

func BenchmarkEndToEnd(b *testing.B) {
	e := newBenchEnv(b)
	b.Run("polybus", func(b *testing.B) {
		topic, group := unique("bench"), "g"
		e.polybusTopology(b, topic, group)
		lat := newLatencies(b.N)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- e.c.Subscriber().Subscribe(ctx, topic, func(_ context.Context, m *message.Message) error {
				lat.add(m.Payload)
				return nil
			}, subscriber.Group(group), subscriber.Prefetch(benchPrefetch), subscriber.Concurrency(16))
		}()
		b.ResetTimer()
		polybusPublish(b, e.c, topic, b.N)
		<-lat.done
		lat.report(b)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	})
	b.Run("raw", func(b *testing.B) {
		topic := unique("bench-raw")
		queue := topic + "-q"
		e.rawTopology(b, topic, queue)
		pch, err := e.conn.Channel()
		must(b, err)
		defer pch.Close()
		must(b, pch.Confirm(false))
		cch, err := e.conn.Channel()
		must(b, err)
		defer cch.Close()
		must(b, cch.Qos(benchPrefetch, 0, false))
		dels, err := cch.Consume(queue, "", false, false, false, false, nil)
		must(b, err)
		lat := newLatencies(b.N)
		go func() {
			for d := range dels {
				lat.add(d.Body)
				_ = d.Ack(false)
			}
		}()
		b.ResetTimer()
		rawPublish(b, pch, topic, b.N)
		<-lat.done
		lat.report(b)
	})
}
