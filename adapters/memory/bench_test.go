package memory_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
)

// The benchmarks of the portable hot path on mem:// (issue 14). Run them
// in one go, so the bare channel and the broker share the machine's state,
// and compare runs with benchstat:
//
//	go test -run '^$' -bench 'EndToEnd|Publish' -benchmem -count 6 ./adapters/memory/ | tee new.txt
//	go run golang.org/x/perf/cmd/benchstat@latest old.txt new.txt

var payload = make([]byte, 256)

// benchKeys are the 64 keys that the end-to-end benchmarks publish under.
var benchKeys = func() []string {
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = string(rune('A'+i%26)) + string(rune('a'+i/26))
	}
	return keys
}()

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

// BenchmarkEndToEnd publishes b.N 256-byte messages over 64 keys in
// batches of 100 while one subscriber (concurrency 8, prefetch 256)
// handles them; an op is one message published, delivered, handled and
// acked. The sub-benchmarks:
//
//	channel          a bare buffered Go channel to one goroutine: the ceiling
//	ordered          per-key order on, no middleware
//	ordered-chain    per-key order on, middleware.DefaultChain
//	unordered        subscriber.Unordered, no middleware
//	unordered-chain  subscriber.Unordered, middleware.DefaultChain
//
// The chain is the one of middleware's BenchmarkMiddleware/chain-default:
// Correlation, Logging (success lines disabled), DLQ, Retry (Redelivery),
// Timeout (1 minute) and Recoverer.
func BenchmarkEndToEnd(b *testing.B) {
	b.Run("channel", benchChannel)
	for _, c := range []struct {
		name      string
		unordered bool
		chain     bool
	}{
		{"ordered", false, false},
		{"ordered-chain", false, true},
		{"unordered", true, false},
		{"unordered-chain", true, true},
	} {
		b.Run(c.name, func(b *testing.B) { benchEndToEnd(b, c.unordered, c.chain) })
	}
}

func benchEndToEnd(b *testing.B, unordered, chain bool) {
	c := benchClient(b)
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
	pbtest.EndToEnd(b, c, "e2e", benchKeys, payload, opts...)
}

// benchChannel moves b.N messages through a bare buffered Go channel to one
// consumer goroutine: the ceiling for any in-process broker.
func benchChannel(b *testing.B) {
	ch := make(chan *message.Message, 256)
	done := make(chan struct{})
	go func() {
		for range ch {
		}
		close(done)
	}()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ch <- &message.Message{Key: benchKeys[i%64], Payload: payload}
	}
	close(ch)
	<-done
}
