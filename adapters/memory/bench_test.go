package memory_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

var payload = make([]byte, 256)

func benchClient(b *testing.B) *polybus.Client {
	c, err := polybus.Open(context.Background(), "mem://?max_messages=1000000&max_bytes=1073741824")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// BenchmarkPublish is one synchronous Publish of one 256-byte message per op.
func BenchmarkPublish(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Publisher().Publish(ctx, "bench", &message.Message{Key: "k", Payload: payload}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublishParallel publishes from GOMAXPROCS x 16 goroutines, so
// concurrent calls are batched.
func BenchmarkPublishParallel(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.Publisher().Publish(ctx, "bench", &message.Message{Key: "k", Payload: payload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkEndToEnd publishes b.N messages over 64 keys in batches of 100
// while a subscriber (concurrency 8, per-key order) handles them; an op is
// one message published, delivered, handled and acked.
func BenchmarkEndToEnd(b *testing.B) {
	c := benchClient(b)
	ctx, cancel := context.WithCancel(context.Background())
	var handled atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	subDone := make(chan error, 1)
	go func() {
		subDone <- c.Subscriber().Subscribe(ctx, "e2e", func(ctx context.Context, m *message.Message) error {
			if handled.Add(1) == target {
				close(done)
			}
			return nil
		}, subscriber.Concurrency(8), subscriber.Prefetch(256))
	}()
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = string(rune('A'+i%26)) + string(rune('a'+i/26))
	}
	b.ReportAllocs()
	b.ResetTimer()
	batch := make([]*message.Message, 0, 100)
	for i := 0; i < b.N; i++ {
		batch = append(batch, &message.Message{Key: keys[i%64], Payload: payload})
		if len(batch) == cap(batch) || i == b.N-1 {
			if err := c.Publisher().Publish(context.Background(), "e2e", batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	<-done
	b.StopTimer()
	cancel()
	if err := <-subDone; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkChannelCeiling moves b.N messages through a bare buffered Go
// channel to one consumer goroutine: the ceiling for any in-process broker.
func BenchmarkChannelCeiling(b *testing.B) {
	ch := make(chan *message.Message, 256)
	done := make(chan struct{})
	go func() {
		for range ch {
		}
		close(done)
	}()
	b.ReportAllocs()
	for b.Loop() {
		ch <- &message.Message{Key: "k", Payload: payload}
	}
	close(ch)
	<-done
}
