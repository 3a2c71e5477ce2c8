package middleware

import (
	"context"
	"strconv"
	"testing"

	"github.com/polybus/polybus/message"
)

// Benchmarks of the dedupe middleware over the memory store, against the
// bare handler. Run:
//
//	go test -run '^$' -bench 'Dedupe' -benchmem ./middleware

func benchHandler(context.Context, *message.Message) error { return nil }

func BenchmarkDedupeBareHandler(b *testing.B) {
	m := idMsg("m", "g")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_ = benchHandler(ctx, m)
	}
}

// BenchmarkDedupeMemoryNew handles a new message each time: claim, handler,
// complete (an LRU insert, and an eviction once the store is full).
func BenchmarkDedupeMemoryNew(b *testing.B) {
	keys := make([]string, b.N)
	for i := range keys {
		keys[i] = "g/t/" + strconv.Itoa(i)
	}
	i := 0
	h, err := Dedupe(DedupeConfig{Key: func(*message.Message) string { k := keys[i]; i++; return k }})
	if err != nil {
		b.Fatal(err)
	}
	run := h(benchHandler)
	m := idMsg("m", "g")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := run(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDedupeMemoryDuplicate handles the same message again and again:
// every call after the first is a duplicate, acked without the handler.
func BenchmarkDedupeMemoryDuplicate(b *testing.B) {
	h, err := Dedupe(DedupeConfig{})
	if err != nil {
		b.Fatal(err)
	}
	run := h(benchHandler)
	m := idMsg("m", "g")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := run(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDedupeMemoryNewParallel is BenchmarkDedupeMemoryNew from
// GOMAXPROCS goroutines, with the default key (group/topic/ID, built per
// call).
func BenchmarkDedupeMemoryNewParallel(b *testing.B) {
	h, err := Dedupe(DedupeConfig{})
	if err != nil {
		b.Fatal(err)
	}
	run := h(benchHandler)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var msgs [1024]*message.Message
		for j := range msgs {
			msgs[j] = idMsg(message.NewID(), "g")
		}
		j := 0
		for pb.Next() {
			// Past 1024 these repeat: duplicates, a cheaper path; the
			// IDs are fresh per goroutine so most calls are new.
			if err := run(ctx, msgs[j%len(msgs)]); err != nil {
				b.Fatal(err)
			}
			j++
		}
	})
}
