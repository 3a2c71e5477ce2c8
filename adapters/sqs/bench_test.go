package sqs_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/polybus/polybus"
	polysqs "github.com/polybus/polybus/adapters/sqs"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// The benchmarks compare the polybus adapter with the raw SDK on the
// ElasticMQ of scripts/brokers, in one run, with the same shape: messages
// go in rounds of benchRound (100), a round's calls all in flight at once,
// and a round ends when SQS has accepted every message.
//
//   - polybus: one Publish of 100 messages (the adapter sends 10
//     SendMessageBatch calls of 10 at once).
//   - raw-batch: 10 SendMessageBatch calls of 10, at once.
//   - raw-single: 100 SendMessage calls, 16 at a time (the adapter's bound
//     on calls in flight).
//
// Each message has a 128-byte text payload and two attributes, an ID and a
// time (polybus's envelope: polybus-id, polybus-time; the raw side sends
// the same kind under its own names). The raw clients use the
// same SDK client as the adapter (the same HTTP transport, no SDK
// retries). End to end, the consumer is a polybus subscriber (Prefetch
// 64, unordered) or, for the raw sides, 2 raw receivers long-polling 10 at
// a time and deleting each batch with DeleteMessageBatch; latency is from
// building a message to its handler. Publish latency is per round.
// Percentiles are exact, from the sorted sample. Run:
//
//	. ~/.cache/polybus/brokers.env && go test -c -o /tmp/sqs.test ./adapters/sqs/ &&
//	cd adapters/sqs && /tmp/sqs.test -test.run '^$' -test.bench . -test.benchtime 3000x -test.count 3
const (
	benchRound   = 100
	benchPayload = 128
	benchSends   = 16
)

type benchEnv struct {
	c   *polybus.Client
	api *sqs.Client
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	c := open(b, sqsURL(b, "wait_time=1s"))
	e := &benchEnv{c: c}
	c.Publisher().As(&e.api)
	return e
}

// queue creates a queue named name and deletes it when the benchmark ends.
func (e *benchEnv) queue(b *testing.B, name string) string {
	b.Helper()
	out, err := e.api.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String(name)})
	if err != nil {
		b.Fatal(err)
	}
	url := aws.ToString(out.QueueUrl)
	b.Cleanup(func() {
		_, _ = e.api.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: aws.String(url)})
	})
	return url
}

// payload returns benchPayload bytes of text that start with now.
func payload() []byte {
	p := make([]byte, benchPayload)
	s := strconv.AppendInt(p[:0], time.Now().UnixNano(), 10)
	for i := len(s); i < len(p); i++ {
		p[i] = 'x'
	}
	p[len(s)] = ' '
	return p
}

func sentAt(p []byte) time.Time {
	for i, c := range p {
		if c == ' ' {
			ns, _ := strconv.ParseInt(string(p[:i]), 10, 64)
			return time.Unix(0, ns)
		}
	}
	return time.Time{}
}

// sample collects latencies.
type sample struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sample) add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

// report adds msgs/s for n messages and the p50 and p99 of the sample.
func (s *sample) report(b *testing.B, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.d) == 0 {
		return
	}
	slices.Sort(s.d)
	pct := func(p float64) float64 { return float64(s.d[int(p*float64(len(s.d)-1))].Microseconds()) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// publisher publishes n messages in rounds, timing each round.
type publisher func(b *testing.B, n int, lat *sample)

func (e *benchEnv) polybus(topic string) publisher {
	return func(b *testing.B, n int, lat *sample) {
		ctx := context.Background()
		for sent := 0; sent < n; sent += benchRound {
			msgs := make([]*message.Message, min(benchRound, n-sent))
			for i := range msgs {
				msgs[i] = message.New(payload())
			}
			start := time.Now()
			if err := e.c.Publisher().Publish(ctx, topic, msgs...); err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(start))
		}
	}
}

// idAttr returns the attributes of a raw message: an ID and a time, as
// polybus's envelope carries (polybus-id, polybus-time).
func idAttr() map[string]types.MessageAttributeValue {
	return map[string]types.MessageAttributeValue{
		"id":   {DataType: aws.String("String"), StringValue: aws.String(message.NewID())},
		"time": {DataType: aws.String("Number"), StringValue: aws.String(strconv.FormatInt(time.Now().UnixNano(), 10))},
	}
}

func (e *benchEnv) rawBatch(url string) publisher {
	return func(b *testing.B, n int, lat *sample) {
		ctx := context.Background()
		for sent := 0; sent < n; sent += benchRound {
			round := min(benchRound, n-sent)
			start := time.Now()
			var wg sync.WaitGroup
			var failed atomic.Int64
			for off := 0; off < round; off += 10 {
				entries := make([]types.SendMessageBatchRequestEntry, min(10, round-off))
				for i := range entries {
					entries[i] = types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(string(payload())), MessageAttributes: idAttr()}
				}
				wg.Go(func() {
					out, err := e.api.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(url), Entries: entries})
					if err != nil || len(out.Failed) > 0 {
						failed.Add(1)
					}
				})
			}
			wg.Wait()
			if failed.Load() > 0 {
				b.Fatal("SendMessageBatch failed")
			}
			lat.add(time.Since(start))
		}
	}
}

func (e *benchEnv) rawSingle(url string) publisher {
	return func(b *testing.B, n int, lat *sample) {
		ctx := context.Background()
		sem := make(chan struct{}, benchSends)
		for sent := 0; sent < n; sent += benchRound {
			round := min(benchRound, n-sent)
			start := time.Now()
			var wg sync.WaitGroup
			var failed atomic.Int64
			for range round {
				body := string(payload())
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					if _, err := e.api.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(body), MessageAttributes: idAttr()}); err != nil {
						failed.Add(1)
					}
				})
			}
			wg.Wait()
			if failed.Load() > 0 {
				b.Fatal("SendMessage failed")
			}
			lat.add(time.Since(start))
		}
	}
}

// polybusTopic returns a fresh topic with one group queue, created raw so
// that nothing consumes it.
func (e *benchEnv) polybusTopic(b *testing.B) string {
	topic := unique("bench")
	e.queue(b, polysqs.QueueName(runPrefix, false, topic, "bench"))
	return topic
}

// BenchmarkPublish measures publish throughput and per-round latency.
func BenchmarkPublish(b *testing.B) {
	e := newBenchEnv(b)
	run := func(name string, pub func(b *testing.B) publisher) {
		b.Run(name, func(b *testing.B) {
			p := pub(b)
			p(b, benchRound, &sample{}) // warm up: connections, group list
			var lat sample
			b.ResetTimer()
			p(b, b.N, &lat)
			b.StopTimer()
			lat.report(b, b.N)
		})
	}
	run("polybus", func(b *testing.B) publisher { return e.polybus(e.polybusTopic(b)) })
	run("raw-batch", func(b *testing.B) publisher { return e.rawBatch(e.queue(b, unique("raw-batch"))) })
	run("raw-single", func(b *testing.B) publisher { return e.rawSingle(e.queue(b, unique("raw-single"))) })
}

// rawConsume runs 2 raw receivers on url until stop, handing each message
// to h and deleting each received batch.
func (e *benchEnv) rawConsume(url string, h func(body string)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				out, err := e.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), MaxNumberOfMessages: 10,
					WaitTimeSeconds: 1, VisibilityTimeout: 30, MessageAttributeNames: []string{"All"}})
				if err != nil || len(out.Messages) == 0 {
					continue
				}
				entries := make([]types.DeleteMessageBatchRequestEntry, len(out.Messages))
				for i, m := range out.Messages {
					h(aws.ToString(m.Body))
					entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle}
				}
				_, _ = e.api.DeleteMessageBatch(context.Background(), &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: entries})
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// BenchmarkEndToEnd publishes b.N messages while one consumer handles
// them, and reports throughput and publish-to-handler latency.
func BenchmarkEndToEnd(b *testing.B) {
	e := newBenchEnv(b)
	b.Run("polybus", func(b *testing.B) {
		// The group's queue first, so that the warm-up publishes find it
		// (and create no default group that would get copies).
		topic := e.polybusTopic(b)
		var lat sample
		var handled atomic.Int64
		done := make(chan struct{})
		n := int64(b.N)
		ready := make(chan struct{}, 1)
		ctx, cancel := context.WithCancel(context.Background())
		subDone := make(chan error, 1)
		go func() {
			subDone <- e.c.Subscriber().Subscribe(ctx, topic, func(_ context.Context, m *message.Message) error {
				if m.Metadata.Get("warm") != "" {
					select {
					case ready <- struct{}{}:
					default:
					}
					return nil
				}
				lat.add(time.Since(sentAt(m.Payload)))
				if handled.Add(1) == n {
					close(done)
				}
				return nil
			}, subscriber.Group("bench"), subscriber.Prefetch(64), subscriber.Unordered())
		}()
		defer func() { cancel(); <-subDone }()
		warm(b, e.c, topic, ready)
		b.ResetTimer()
		e.polybus(topic)(b, b.N, &sample{})
		<-done
		b.StopTimer()
		lat.report(b, b.N)
	})
	for _, v := range []struct {
		name string
		pub  func(string) publisher
	}{{"raw-batch", e.rawBatch}, {"raw-single", e.rawSingle}} {
		b.Run(v.name, func(b *testing.B) {
			url := e.queue(b, unique(v.name))
			var lat sample
			var handled atomic.Int64
			done := make(chan struct{})
			n := int64(b.N)
			stop := e.rawConsume(url, func(body string) {
				lat.add(time.Since(sentAt([]byte(body))))
				if handled.Add(1) == n {
					close(done)
				}
			})
			defer stop()
			b.ResetTimer()
			v.pub(url)(b, b.N, &sample{})
			<-done
			b.StopTimer()
			lat.report(b, b.N)
		})
	}
}

// warm publishes a warm-up message every 100ms until the subscriber has
// seen one.
func warm(b *testing.B, c *polybus.Client, topic string, ready <-chan struct{}) {
	for i := 0; ; i++ {
		m := message.New(payload())
		m.Metadata = message.Metadata{"warm": fmt.Sprint(i)}
		if err := c.Publisher().Publish(context.Background(), topic, m); err != nil {
			b.Fatal(err)
		}
		select {
		case <-ready:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
