// Package storetest is the test suite that every store of package
// middleware must pass: the dedupe store's lease protocol, the ordering
// store's positions and the sequence counter's numbers. The memory stores
// and the SQL stores of package middleware/sqlstore run it; so can a store
// of your own.
//
// # Semantics
//
// Each function runs subtests against stores made by the given constructor,
// which must return a new, empty store on every call (a fresh table, say)
// and may be called several times in one subtest to open a second handle
// on the same data: the suite passes a name to say which. Expiry is tested
// with short leases in real time: the suite waits for conditions with
// deadlines, and asserts that nothing expires early.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
)

// DedupeStores makes dedupe stores: fresh returns a new empty store;
// reopen, when not nil, returns another handle on the data of the store
// that fresh returned last (as after a restart).
type DedupeStores struct {
	Fresh  func(t *testing.T) middleware.DedupeStore
	Reopen func(t *testing.T) middleware.DedupeStore
}

// Dedupe tests a DedupeStore.
func Dedupe(t *testing.T, mk DedupeStores) {
	ctx := context.Background()
	claim := func(t *testing.T, s middleware.DedupeStore, key string, lease time.Duration) (middleware.ClaimState, int64) {
		t.Helper()
		st, tok, err := s.Claim(ctx, key, lease)
		if err != nil {
			t.Fatalf("Claim(%q): %v", key, err)
		}
		return st, tok
	}
	want := func(t *testing.T, s middleware.DedupeStore, key string, want middleware.ClaimState) int64 {
		t.Helper()
		got, tok := claim(t, s, key, time.Minute)
		if got != want {
			t.Fatalf("Claim(%q) = %v, want %v", key, got, want)
		}
		return tok
	}

	t.Run("ClaimCompleteDuplicate", func(t *testing.T) {
		s := mk.Fresh(t)
		tok := want(t, s, "a", middleware.Claimed)
		want(t, s, "a", middleware.InProgress)
		want(t, s, "b", middleware.Claimed)
		if err := s.Complete(ctx, "a", tok, time.Hour); err != nil {
			t.Fatal(err)
		}
		want(t, s, "a", middleware.AlreadyDone)
		want(t, s, "a", middleware.AlreadyDone)
		want(t, s, "b", middleware.InProgress)
	})

	t.Run("ReleaseLetsTheNextClaimRun", func(t *testing.T) {
		s := mk.Fresh(t)
		tok := want(t, s, "a", middleware.Claimed)
		if err := s.Release(ctx, "a", tok); err != nil {
			t.Fatal(err)
		}
		tok2 := want(t, s, "a", middleware.Claimed)
		if tok2 == tok {
			t.Fatalf("second claim has the first claim's token %d", tok)
		}
		// The first claim's token no longer holds the key.
		if err := s.Release(ctx, "a", tok); err != nil {
			t.Fatal(err)
		}
		want(t, s, "a", middleware.InProgress)
		if err := s.Release(ctx, "a", tok2); err != nil {
			t.Fatal(err)
		}
		want(t, s, "a", middleware.Claimed)
	})

	t.Run("ReleaseOfDoneKeepsTheMark", func(t *testing.T) {
		s := mk.Fresh(t)
		tok := want(t, s, "a", middleware.Claimed)
		if err := s.Complete(ctx, "a", tok, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := s.Release(ctx, "a", tok); err != nil {
			t.Fatal(err)
		}
		want(t, s, "a", middleware.AlreadyDone)
	})

	t.Run("ExpiredLeaseIsTakenOver", func(t *testing.T) {
		s := mk.Fresh(t)
		const lease = 150 * time.Millisecond
		start := time.Now()
		st, old := claim(t, s, "a", lease)
		if st != middleware.Claimed {
			t.Fatalf("first claim = %v", st)
		}
		waitFor(t, "the lease to expire", func() bool {
			st, _ = claim(t, s, "a", time.Minute)
			return st == middleware.Claimed
		})
		if el := time.Since(start); el < lease {
			t.Fatalf("lease of %s taken over after %s", lease, el)
		}
		// The old holder's Release must not drop the new claim...
		if err := s.Release(ctx, "a", old); err != nil {
			t.Fatal(err)
		}
		want(t, s, "a", middleware.InProgress)
		// ...but its Complete marks the work done: it was done.
		if err := s.Complete(ctx, "a", old, time.Hour); err != nil {
			t.Fatal(err)
		}
		want(t, s, "a", middleware.AlreadyDone)
	})

	t.Run("ExpiredMarkIsForgotten", func(t *testing.T) {
		s := mk.Fresh(t)
		const ttl = 150 * time.Millisecond
		tok := want(t, s, "a", middleware.Claimed)
		done := time.Now()
		if err := s.Complete(ctx, "a", tok, ttl); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the mark to expire", func() bool {
			st, _ := claim(t, s, "a", time.Minute)
			if st == middleware.InProgress {
				t.Fatalf("expired mark claimed as in progress")
			}
			return st == middleware.Claimed
		})
		if el := time.Since(done); el < ttl {
			t.Fatalf("mark with TTL %s forgotten after %s", ttl, el)
		}
	})

	t.Run("ConcurrentClaimsOneWinner", func(t *testing.T) {
		s := mk.Fresh(t)
		const keys, racers = 8, 8
		var mu sync.Mutex
		wins := map[string]int{}
		var wg sync.WaitGroup
		for r := 0; r < racers; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; k < keys; k++ {
					key := fmt.Sprintf("key-%d", k)
					st, _, err := s.Claim(ctx, key, time.Minute)
					if err != nil {
						t.Errorf("Claim: %v", err)
						return
					}
					if st == middleware.Claimed {
						mu.Lock()
						wins[key]++
						mu.Unlock()
					} else if st != middleware.InProgress {
						t.Errorf("Claim(%s) = %v", key, st)
					}
				}
			}()
		}
		wg.Wait()
		for k := 0; k < keys; k++ {
			if n := wins[fmt.Sprintf("key-%d", k)]; n != 1 {
				t.Errorf("key-%d claimed %d times, want once", k, n)
			}
		}
	})

	t.Run("AwkwardKeys", func(t *testing.T) {
		s := mk.Fresh(t)
		keys := []string{"", "'; DROP TABLE x; --", "g/t/id with spaces", "ünï/cødé/✓", strings.Repeat("long/", 60)}
		for _, k := range keys {
			tok := want(t, s, k, middleware.Claimed)
			if err := s.Complete(ctx, k, tok, time.Hour); err != nil {
				t.Fatalf("Complete(%q): %v", k, err)
			}
		}
		for _, k := range keys {
			want(t, s, k, middleware.AlreadyDone)
		}
	})

	if mk.Reopen != nil {
		t.Run("SurvivesReopen", func(t *testing.T) {
			s := mk.Fresh(t)
			tok := want(t, s, "done", middleware.Claimed)
			if err := s.Complete(ctx, "done", tok, time.Hour); err != nil {
				t.Fatal(err)
			}
			want(t, s, "busy", middleware.Claimed)
			s2 := mk.Reopen(t)
			want(t, s2, "done", middleware.AlreadyDone)
			want(t, s2, "busy", middleware.InProgress)
			want(t, s2, "new", middleware.Claimed)
		})
	}
}

// OrderingStores makes ordering stores, as DedupeStores does.
type OrderingStores struct {
	Fresh  func(t *testing.T) middleware.OrderingStore
	Reopen func(t *testing.T) middleware.OrderingStore
}

// Ordering tests an OrderingStore.
func Ordering(t *testing.T, mk OrderingStores) {
	ctx := context.Background()
	last := func(t *testing.T, s middleware.OrderingStore, key string) uint64 {
		t.Helper()
		n, err := s.Last(ctx, key)
		if err != nil {
			t.Fatalf("Last(%q): %v", key, err)
		}
		return n
	}
	advance := func(t *testing.T, s middleware.OrderingStore, key string, seq uint64) {
		t.Helper()
		if err := s.Advance(ctx, key, seq); err != nil {
			t.Fatalf("Advance(%q, %d): %v", key, seq, err)
		}
	}

	t.Run("AdvancesAndNeverGoesBack", func(t *testing.T) {
		s := mk.Fresh(t)
		if n := last(t, s, "a"); n != 0 {
			t.Fatalf("Last of a new key = %d, want 0", n)
		}
		advance(t, s, "a", 1)
		advance(t, s, "a", 2)
		advance(t, s, "a", 7)
		advance(t, s, "a", 5)
		advance(t, s, "b", 3)
		if n := last(t, s, "a"); n != 7 {
			t.Fatalf("Last(a) = %d, want 7", n)
		}
		if n := last(t, s, "b"); n != 3 {
			t.Fatalf("Last(b) = %d, want 3", n)
		}
		// Large numbers: SQL stores hold up to math.MaxInt64.
		advance(t, s, "big", 1<<62+5)
		if n := last(t, s, "big"); n != 1<<62+5 {
			t.Fatalf("Last(big) = %d, want %d", n, uint64(1<<62+5))
		}
	})

	t.Run("ConcurrentAdvancesKeepTheMaximum", func(t *testing.T) {
		s := mk.Fresh(t)
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := uint64(1); i <= 25; i++ {
					if err := s.Advance(ctx, "k", i*8-uint64(g)); err != nil {
						t.Errorf("Advance: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if n := last(t, s, "k"); n != 200 {
			t.Fatalf("Last = %d, want 200", n)
		}
	})

	if mk.Reopen != nil {
		t.Run("SurvivesReopen", func(t *testing.T) {
			s := mk.Fresh(t)
			advance(t, s, "a", 41)
			if n := last(t, mk.Reopen(t), "a"); n != 41 {
				t.Fatalf("Last after reopen = %d, want 41", n)
			}
		})
	}
}

// CounterStores makes sequence counters, as DedupeStores does.
type CounterStores struct {
	Fresh  func(t *testing.T) middleware.SequenceCounter
	Reopen func(t *testing.T) middleware.SequenceCounter
}

// Counter tests a SequenceCounter.
func Counter(t *testing.T, mk CounterStores) {
	ctx := context.Background()
	reserve := func(t *testing.T, c middleware.SequenceCounter, key string, n uint64) uint64 {
		t.Helper()
		first, err := c.Reserve(ctx, key, n)
		if err != nil {
			t.Fatalf("Reserve(%q, %d): %v", key, n, err)
		}
		return first
	}

	t.Run("NumbersFromOne", func(t *testing.T) {
		c := mk.Fresh(t)
		for i, tc := range []struct {
			key   string
			n     uint64
			first uint64
		}{{"a", 1, 1}, {"a", 1, 2}, {"a", 5, 3}, {"b", 2, 1}, {"a", 1, 8}, {"b", 1, 3}} {
			if got := reserve(t, c, tc.key, tc.n); got != tc.first {
				t.Fatalf("step %d: Reserve(%s, %d) = %d, want %d", i, tc.key, tc.n, got, tc.first)
			}
		}
		if _, err := c.Reserve(ctx, "a", 0); !errors.Is(err, message.ErrInvalidArgument) {
			t.Fatalf("Reserve of 0 numbers: err = %v, want InvalidArgument", err)
		}
		if got := reserve(t, c, "a", 1); got != 9 {
			t.Fatalf("Reserve after a refused one = %d, want 9", got)
		}
	})

	t.Run("ConcurrentReservationsAreDisjoint", func(t *testing.T) {
		c := mk.Fresh(t)
		const workers, each = 8, 20
		var mu sync.Mutex
		taken := map[uint64]bool{}
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					n := uint64(1 + i%3)
					first, err := c.Reserve(ctx, "k", n)
					if err != nil {
						t.Errorf("Reserve: %v", err)
						return
					}
					mu.Lock()
					for x := first; x < first+n; x++ {
						if taken[x] {
							t.Errorf("number %d handed out twice", x)
						}
						taken[x] = true
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		// 8 workers x (1+2+3 repeated) numbers, contiguous from 1.
		total := uint64(0)
		for i := 0; i < each; i++ {
			total += uint64(1 + i%3)
		}
		total *= workers
		for x := uint64(1); x <= total; x++ {
			if !taken[x] {
				t.Fatalf("number %d never handed out (of %d)", x, total)
			}
		}
		if len(taken) != int(total) {
			t.Fatalf("%d numbers handed out, want %d", len(taken), total)
		}
	})

	if mk.Reopen != nil {
		t.Run("SurvivesReopen", func(t *testing.T) {
			c := mk.Fresh(t)
			reserve(t, c, "a", 3)
			if got := reserve(t, mk.Reopen(t), "a", 1); got != 4 {
				t.Fatalf("Reserve after reopen = %d, want 4", got)
			}
		})
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
