package middleware

import (
	"context"
	"sync"

	"github.com/polybus/polybus/message"
)

// OrderingStore keeps, for [Ordering], the last sequence number handled per
// ordering key, so that a restarted consumer, or another consumer of the
// group sharing the store, continues where the sequence stands.
// Implementations: [MemoryOrderingStore], and package middleware/sqlstore
// for PostgreSQL and SQLite.
type OrderingStore interface {
	// Last returns the last number handled for key, 0 when none.
	Last(ctx context.Context, key string) (uint64, error)
	// Advance records seq as handled for key. The number never goes
	// back: a seq at or below the stored one changes nothing, so that
	// consumers racing on one key cannot undo each other.
	Advance(ctx context.Context, key string, seq uint64) error
}

// SequenceCounter hands out per-key sequence numbers for a [Sequencer].
// Implementations: [MemorySequenceCounter], and package
// middleware/sqlstore, whose counter several publishers can share.
type SequenceCounter interface {
	// Reserve reserves n (>= 1) consecutive numbers for key and returns
	// the first. A key's first number is 1. Concurrent reservations of
	// one key get disjoint ranges.
	Reserve(ctx context.Context, key string, n uint64) (uint64, error)
}

// MemoryOrderingStore is an [OrderingStore] in process memory. It keeps one
// entry per key it has seen and forgets everything on restart. It is safe
// for concurrent use, so the Ordering middlewares of several subscribers
// in one process can share it.
type MemoryOrderingStore struct {
	mu   sync.Mutex
	last map[string]uint64
}

// NewMemoryOrderingStore returns an empty store.
func NewMemoryOrderingStore() *MemoryOrderingStore {
	return &MemoryOrderingStore{last: map[string]uint64{}}
}

func (s *MemoryOrderingStore) ignoresContext() {}

// Last implements [OrderingStore].
func (s *MemoryOrderingStore) Last(_ context.Context, key string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[key], nil
}

// Advance implements [OrderingStore].
func (s *MemoryOrderingStore) Advance(_ context.Context, key string, seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq > s.last[key] {
		s.last[key] = seq
	}
	return nil
}

// MemorySequenceCounter is a [SequenceCounter] in process memory: one
// publisher process, numbers restarting at 1 when it restarts, which
// consumers that remember the old numbers take for duplicates. Use a
// persistent counter (package middleware/sqlstore) for publishers that
// restart while consumers keep their positions.
type MemorySequenceCounter struct {
	mu   sync.Mutex
	next map[string]uint64
}

// NewMemorySequenceCounter returns a counter with every key at 1.
func NewMemorySequenceCounter() *MemorySequenceCounter {
	return &MemorySequenceCounter{next: map[string]uint64{}}
}

// Reserve implements [SequenceCounter].
func (c *MemorySequenceCounter) Reserve(_ context.Context, key string, n uint64) (uint64, error) {
	if n == 0 {
		return 0, message.Errorf(message.InvalidArgument, "sequencer: reserve", "reserve of 0 numbers")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	first := c.next[key] + 1
	c.next[key] += n
	return first, nil
}
