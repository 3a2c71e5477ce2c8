package pbtest

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// EndToEnd is the body of the end-to-end benchmarks (adapters/memory's,
// telemetry's): one Subscribe call of topic on c with opts runs a handler
// that only counts, while b.N messages of payload, keyed round-robin by
// keys, are published in calls of 100; it returns when the last one has
// been handled and the Subscribe call has returned. An op is one message
// published, delivered, handled and acked.
func EndToEnd(b *testing.B, c *polybus.Client, topic string, keys []string, payload []byte, opts ...subscriber.Option) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var handled atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	subDone := make(chan error, 1)
	go func() {
		subDone <- c.Subscriber().Subscribe(ctx, topic, func(ctx context.Context, m *message.Message) error {
			if handled.Add(1) == target {
				close(done)
			}
			return nil
		}, opts...)
	}()
	b.ReportAllocs()
	b.ResetTimer()
	batch := make([]*message.Message, 0, 100)
	for i := 0; i < b.N; i++ {
		batch = append(batch, &message.Message{Key: keys[i%len(keys)], Payload: payload})
		if len(batch) == cap(batch) || i == b.N-1 {
			if err := c.Publisher().Publish(context.Background(), topic, batch...); err != nil {
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
