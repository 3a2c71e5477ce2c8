package middleware

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/polybus/polybus/message"
)

// DefaultMemoryDedupeSize is the number of done marks a MemoryDedupeStore
// keeps when its size is 0.
const DefaultMemoryDedupeSize = 100_000

// MemoryDedupeStore is a [DedupeStore] in process memory, bounded in size:
// at most size done marks, the least recently completed evicted first, each
// forgotten when its TTL passes. It sees only the deliveries of its own
// process and forgets everything on restart.
//
// Size it above the number of messages handled within one TTL, since a
// mark evicted early lets a late duplicate run again; Evicted counts such
// evictions. Claims in progress are kept apart from the marks and are never
// evicted: there are at most as many as handler calls running.
//
// It starts no goroutine: expired marks are dropped as claims pass by.
// It is safe for concurrent use.
type MemoryDedupeStore struct {
	mu       sync.Mutex
	now      func() time.Time
	done     *simplelru.LRU[string, time.Time] // key → expiry, oldest first
	inflight map[string]memLease
	tokens   int64
	evicted  int64
}

type memLease struct {
	token   int64
	expires time.Time
}

// NewMemoryDedupeStore returns a store that keeps at most size done marks
// (DefaultMemoryDedupeSize when size is 0).
func NewMemoryDedupeStore(size int) (*MemoryDedupeStore, error) {
	if size < 0 {
		return nil, message.Errorf(message.InvalidArgument, "dedupe: memory store", "negative size %d", size)
	}
	if size == 0 {
		size = DefaultMemoryDedupeSize
	}
	s := &MemoryDedupeStore{now: time.Now, inflight: map[string]memLease{}}
	lru, err := simplelru.NewLRU[string, time.Time](size, func(string, time.Time) {
		// Called with s.mu held, for capacity evictions and for the
		// expiry sweep alike; the sweep takes the count back.
		s.evicted++
	})
	if err != nil {
		return nil, message.Wrap(message.InvalidArgument, "dedupe: memory store", err)
	}
	s.done = lru
	return s, nil
}

func (s *MemoryDedupeStore) ignoresContext() {}

// Claim implements [DedupeStore].
func (s *MemoryDedupeStore) Claim(_ context.Context, key string, lease time.Duration) (ClaimState, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.sweep(now)
	if l, ok := s.inflight[key]; ok {
		if now.Before(l.expires) {
			return InProgress, 0, nil
		}
		delete(s.inflight, key)
	}
	// Peek, not Get: the list stays in completion order, which with one
	// TTL is expiry order, so the sweep only looks at the oldest.
	if exp, ok := s.done.Peek(key); ok {
		if now.Before(exp) {
			return AlreadyDone, 0, nil
		}
		s.done.Remove(key)
		s.evicted--
	}
	s.tokens++
	s.inflight[key] = memLease{token: s.tokens, expires: now.Add(lease)}
	return Claimed, s.tokens, nil
}

// Complete implements [DedupeStore].
func (s *MemoryDedupeStore) Complete(_ context.Context, key string, _ int64, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Done wins over any claim, even one that took over after this
	// claim's lease expired: the work is done.
	delete(s.inflight, key)
	// Remove first so that the key moves to the newest end even when a
	// mark is there already (a lease taken over after expiry).
	if s.done.Remove(key) {
		s.evicted--
	}
	s.done.Add(key, s.now().Add(ttl))
	return nil
}

// Release implements [DedupeStore].
func (s *MemoryDedupeStore) Release(_ context.Context, key string, token int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.inflight[key]; ok && l.token == token {
		delete(s.inflight, key)
	}
	return nil
}

// Len returns the number of done marks held, expired ones included until
// they are swept.
func (s *MemoryDedupeStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done.Len()
}

// Evicted returns how many done marks were evicted for room before their
// TTL passed.
func (s *MemoryDedupeStore) Evicted() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.evicted
}

// sweep drops expired marks from the oldest end. Each mark is dropped once,
// so the cost is constant per claim on average.
func (s *MemoryDedupeStore) sweep(now time.Time) {
	for {
		_, exp, ok := s.done.GetOldest()
		if !ok || now.Before(exp) {
			return
		}
		s.done.RemoveOldest()
		s.evicted--
	}
}
