package middleware

import (
	"context"
	"strconv"
	"testing"

	"github.com/polybus/polybus/message"
)

// Benchmarks of the ordering buffer's fast path (messages arriving in
// order) over the memory store, against the bare handler. Run:
//
//	go test -run '^$' -bench 'Ordering|Sequencer' -benchmem ./middleware

func BenchmarkOrderingBareHandler(b *testing.B) {
	m := seqMsg("k", 1)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_ = benchHandler(ctx, m)
	}
}

// seqStrings returns the decimal numbers 1..n.
func seqStrings(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = strconv.Itoa(i + 1)
	}
	return out
}

// BenchmarkOrderingInOrderOneKey: every message is its key's next one.
func BenchmarkOrderingInOrderOneKey(b *testing.B) {
	mw, err := Ordering(OrderingConfig{})
	if err != nil {
		b.Fatal(err)
	}
	run := mw(benchHandler)
	seqs := seqStrings(b.N)
	m := seqMsg("k", 1)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m.Metadata[message.KeySequence] = seqs[i]
		if err := run(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOrderingInOrderManyKeys spreads in-order messages over 1000 keys,
// all of which stay in memory.
func BenchmarkOrderingInOrderManyKeys(b *testing.B) {
	const keys = 1000
	mw, err := Ordering(OrderingConfig{})
	if err != nil {
		b.Fatal(err)
	}
	run := mw(benchHandler)
	seqs := seqStrings(b.N/keys + 1)
	msgs := make([]*message.Message, keys)
	for k := range msgs {
		msgs[k] = seqMsg("key-"+strconv.Itoa(k), 1)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m := msgs[i%keys]
		m.Metadata[message.KeySequence] = seqs[i/keys]
		if err := run(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOrderingDuplicate: every message is below its key's position.
func BenchmarkOrderingDuplicate(b *testing.B) {
	mw, err := Ordering(OrderingConfig{})
	if err != nil {
		b.Fatal(err)
	}
	run := mw(benchHandler)
	m := seqMsg("k", 1)
	ctx := context.Background()
	if err := run(ctx, m); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := run(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSequencerStamp stamps one message of one key per call.
func BenchmarkSequencerStamp(b *testing.B) {
	s := NewSequencer(nil)
	ctx := context.Background()
	m := &message.Message{Key: "k", Metadata: message.Metadata{}}
	b.ReportAllocs()
	for b.Loop() {
		delete(m.Metadata, message.KeySequence)
		if err := s.Stamp(ctx, "t", m); err != nil {
			b.Fatal(err)
		}
	}
}
