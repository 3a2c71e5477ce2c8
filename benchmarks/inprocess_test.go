package benchmarks

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmessage "github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/polybus/polybus"
	_ "github.com/polybus/polybus/adapters/memory" // mem://
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
)

const (
	payloadSize = 256
	callSize    = 100 // messages per publish call
	keys        = 64
)

var payload = make([]byte, payloadSize)

var keyNames = func() []string {
	k := make([]string, keys)
	for i := range k {
		k[i] = "key-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	return k
}()

// BenchmarkInProcess: see the package documentation.
func BenchmarkInProcess(b *testing.B) {
	b.Run("channel", benchChannel)
	for _, v := range []struct {
		name             string
		unordered, chain bool
	}{
		{"polybus-ordered", false, false},
		{"polybus-ordered-chain", false, true},
		{"polybus-unordered", true, false},
		{"polybus-unordered-chain", true, true},
	} {
		b.Run(v.name, func(b *testing.B) { benchPolybus(b, v.unordered, v.chain) })
	}
	b.Run("watermill-gochannel", benchWatermill)
}

// counter closes done when the n-th message is handled.
type counter struct {
	n, handled atomic.Int64
	done       chan struct{}
}

func newCounter(n int) *counter {
	c := &counter{done: make(chan struct{})}
	c.n.Store(int64(n))
	return c
}

func (c *counter) add() {
	if c.handled.Add(1) == c.n.Load() {
		close(c.done)
	}
}

// wait waits for every message, failing the benchmark after a minute.
func (c *counter) wait(b *testing.B) {
	select {
	case <-c.done:
	case <-time.After(time.Minute):
		b.Fatalf("handled %d of %d messages in a minute", c.handled.Load(), c.n.Load())
	}
}

func benchChannel(b *testing.B) {
	ch := make(chan *message.Message, 256)
	cnt := newCounter(b.N)
	go func() {
		for range ch {
			cnt.add()
		}
	}()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ch <- &message.Message{Key: keyNames[i%keys], Payload: payload}
	}
	close(ch)
	cnt.wait(b)
}

func benchPolybus(b *testing.B, unordered, chain bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := polybus.Open(ctx, "mem://?max_messages=1000000&max_bytes=1073741824")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(context.Background())
	opts := []subscriber.Option{subscriber.Concurrency(8), subscriber.Prefetch(256)}
	if unordered {
		opts = append(opts, subscriber.Unordered())
	}
	if chain {
		mw, err := middleware.DefaultChain(middleware.ChainConfig{
			Logging: &middleware.LoggingConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SuccessLevel: slog.LevelDebug},
			DLQ:     &middleware.DLQConfig{Publisher: c.Publisher()},
			Retry:   &middleware.RetryConfig{Mode: middleware.Redelivery},
			Timeout: &middleware.TimeoutConfig{Timeout: time.Minute},
		})
		if err != nil {
			b.Fatal(err)
		}
		opts = append(opts, subscriber.Use(mw))
	}
	cnt := newCounter(b.N)
	subDone := make(chan error, 1)
	go func() {
		subDone <- c.Subscriber().Subscribe(ctx, "bench", func(context.Context, *message.Message) error {
			cnt.add()
			return nil
		}, opts...)
	}()
	b.ReportAllocs()
	b.ResetTimer()
	call := make([]*message.Message, 0, callSize)
	for i := 0; i < b.N; i++ {
		call = append(call, &message.Message{Key: keyNames[i%keys], Payload: payload})
		if len(call) == callSize || i == b.N-1 {
			if err := c.Publisher().Publish(ctx, "bench", call...); err != nil {
				b.Fatal(err)
			}
			call = call[:0]
		}
	}
	cnt.wait(b)
	b.StopTimer()
	cancel()
	if err := <-subDone; err != nil {
		b.Fatal(err)
	}
}

// benchWatermill runs GoChannel with its defaults but an output buffer of
// 256 (polybus's Prefetch), one subscriber that acks each message, and
// Watermill's own UUIDs as message IDs (polybus makes UUIDv7s).
func benchWatermill(b *testing.B) {
	pubsub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 256}, watermill.NopLogger{})
	defer pubsub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, err := pubsub.Subscribe(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	cnt := newCounter(b.N)
	go func() {
		for m := range msgs {
			m.Ack()
			cnt.add()
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	call := make([]*wmessage.Message, 0, callSize)
	for i := 0; i < b.N; i++ {
		m := wmessage.NewMessage(watermill.NewUUID(), payload)
		m.Metadata.Set("key", keyNames[i%keys])
		call = append(call, m)
		if len(call) == callSize || i == b.N-1 {
			if err := pubsub.Publish("bench", call...); err != nil {
				b.Fatal(err)
			}
			call = call[:0]
		}
	}
	cnt.wait(b)
	b.StopTimer()
}
