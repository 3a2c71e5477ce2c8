// Package storetest is the test suite that every event store driver must
// pass: expected-version appends under concurrency, idempotency by event
// ID, stream reads both ways, a gap-safe global log, snapshots and as-of
// reads. The SQLite and PostgreSQL drivers of package eventstore/sqlstore
// run it; so can a driver of your own.
//
// # Semantics
//
// Run calls Harness.New for a fresh, empty driver in every subtest. Tests
// assert exact results: which events, in which order, at which versions.
// The overlapping-transactions test runs only for a driver that is an
// eventstore.TxDriver and a harness that gives its database; it is skipped,
// with the reason, otherwise.
package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
)

// Harness makes drivers for Run.
type Harness struct {
	// New returns a driver on fresh, empty tables.
	New func(t *testing.T) eventstore.Driver
	// DB returns the database of a driver New returned, for the tests that
	// hold transactions open with eventstore.TxDriver.AppendTx; nil skips
	// them.
	DB func(d eventstore.Driver) *sql.DB
	// Serialised says that the database runs one writing transaction at a
	// time (SQLite): two appending transactions cannot overlap, so the
	// out-of-order-commit test checks instead that an open transaction's
	// events are unseen until it commits.
	Serialised bool
}

// Deposited and Withdrawn are the suite's event types.
type Deposited struct{ Amount int }

// Withdrawn is an event of the suite's account aggregate.
type Withdrawn struct{ Amount int }

func newStore(t *testing.T, h Harness, opts eventstore.Options) *eventstore.Store {
	t.Helper()
	if opts.Registry == nil {
		opts.Registry = &eventstore.Registry{}
	}
	if err := eventstore.Register[Deposited](opts.Registry, "Deposited"); err != nil {
		t.Fatal(err)
	}
	if err := eventstore.Register[Withdrawn](opts.Registry, "Withdrawn"); err != nil {
		t.Fatal(err)
	}
	s, err := eventstore.New(h.New(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func dep(n int) *eventstore.Event { return &eventstore.Event{Data: Deposited{Amount: n}} }

func ids(evs []*eventstore.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func versions(evs []*eventstore.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Version
	}
	return out
}

func seq(from, to int64) []int64 {
	var out []int64
	for v := from; v <= to; v++ {
		out = append(out, v)
	}
	return out
}

// readAll reads the whole global log after p, page by page.
func readAll(t *testing.T, s *eventstore.Store, p eventstore.Position, page int) []*eventstore.Event {
	t.Helper()
	var out []*eventstore.Event
	for {
		evs, err := s.ReadAll(context.Background(), p, page)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if !p.Less(e.Position) {
				t.Fatalf("ReadAll after %s returned %s", p, e.Position)
			}
			p = e.Position
		}
		out = append(out, evs...)
		if len(evs) < page {
			return out
		}
	}
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	ctx := context.Background()

	t.Run("AppendAndReadStream", func(t *testing.T) {
		s := newStore(t, h, eventstore.Options{})
		md := message.Metadata{"tenant": "t1"}
		evs := []*eventstore.Event{dep(10), {Data: Withdrawn{Amount: 3}, Metadata: md}, dep(5), {Type: "Raw", Raw: []byte("opaque\x00bytes")}}
		res, err := s.Append(ctx, "acc-1", eventstore.NoStream, evs...)
		if err != nil {
			t.Fatal(err)
		}
		if res.Version != 4 || res.Duplicate {
			t.Fatalf("result %+v, want version 4", res)
		}
		if _, err := s.Append(ctx, "acc-2", eventstore.NoStream, dep(1)); err != nil {
			t.Fatal(err)
		}
		got, err := s.ReadStream(ctx, "acc-1", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(got), ids(evs)) || !slices.Equal(versions(got), seq(1, 4)) {
			t.Fatalf("read %v %v, want %v versions 1..4", ids(got), versions(got), ids(evs))
		}
		if got[0].Data != (Deposited{10}) || got[1].Data != (Withdrawn{3}) || got[1].Type != "Withdrawn" {
			t.Fatalf("decoded %#v %#v", got[0].Data, got[1].Data)
		}
		if got[1].Metadata.Get("tenant") != "t1" || got[3].Data != nil || string(got[3].Raw) != "opaque\x00bytes" {
			t.Fatalf("metadata %v, raw event %#v %q", got[1].Metadata, got[3].Data, got[3].Raw)
		}
		if got[0].Stream != "acc-1" || got[0].Time.IsZero() || !got[0].Time.Equal(evs[0].Time) {
			t.Fatalf("stream %q time %v, appended at %v", got[0].Stream, got[0].Time, evs[0].Time)
		}
		if got[3].Position != res.Position {
			t.Fatalf("last position %s, append said %s", got[3].Position, res.Position)
		}
		from2, _ := s.ReadStream(ctx, "acc-1", 2, 2)
		if !slices.Equal(versions(from2), []int64{2, 3}) {
			t.Fatalf("from 2 limit 2: %v", versions(from2))
		}
		back, _ := s.ReadStreamBackward(ctx, "acc-1", 0, 0)
		if !slices.Equal(versions(back), []int64{4, 3, 2, 1}) {
			t.Fatalf("backward: %v", versions(back))
		}
		back3, _ := s.ReadStreamBackward(ctx, "acc-1", 3, 2)
		if !slices.Equal(versions(back3), []int64{3, 2}) {
			t.Fatalf("backward from 3 limit 2: %v", versions(back3))
		}
		none, err := s.ReadStream(ctx, "nope", 0, 0)
		if err != nil || len(none) != 0 {
			t.Fatalf("missing stream: %v %v", none, err)
		}
		if v, err := s.Version(ctx, "acc-1"); err != nil || v != 4 {
			t.Fatalf("Version = %d, %v", v, err)
		}
	})

	t.Run("CorrelationFromContext", func(t *testing.T) {
		s := newStore(t, h, eventstore.Options{})
		cctx := middleware.ContextWithCorrelation(ctx, middleware.CorrelationInfo{CorrelationID: "flow-1", MessageID: "cmd-7"})
		if _, err := s.Append(cctx, "c", eventstore.Any, dep(1)); err != nil {
			t.Fatal(err)
		}
		got, _ := s.ReadStream(ctx, "c", 0, 0)
		if len(got) != 1 || got[0].CorrelationID() != "flow-1" || got[0].CausationID() != "cmd-7" {
			t.Fatalf("metadata %v", got[0].Metadata)
		}
	})

	t.Run("ExpectedVersion", func(t *testing.T) {
		s := newStore(t, h, eventstore.Options{})
		conflict := func(t *testing.T, err error, exp eventstore.ExpectedVersion, actual int64) {
			t.Helper()
			var ce *eventstore.ConflictError
			if !errors.As(err, &ce) || !errors.Is(err, eventstore.ErrConflict) || !errors.Is(err, message.ErrConflict) {
				t.Fatalf("got %v, want a conflict", err)
			}
			if ce.Expected != exp || ce.Actual != actual || ce.Stream != "s" {
				t.Fatalf("conflict %+v, want expected %v actual %d", ce, exp, actual)
			}
			if !strings.Contains(err.Error(), exp.String()) || !strings.Contains(err.Error(), fmt.Sprint(actual)) {
				t.Fatalf("%q does not name both versions", err)
			}
		}
		_, err := s.Append(ctx, "s", eventstore.StreamExists, dep(1))
		conflict(t, err, eventstore.StreamExists, 0)
		_, err = s.Append(ctx, "s", eventstore.Exactly(2), dep(1))
		conflict(t, err, eventstore.Exactly(2), 0)
		if _, err := s.Append(ctx, "s", eventstore.NoStream, dep(1), dep(2)); err != nil {
			t.Fatal(err)
		}
		_, err = s.Append(ctx, "s", eventstore.NoStream, dep(3))
		conflict(t, err, eventstore.NoStream, 2)
		_, err = s.Append(ctx, "s", eventstore.Exactly(1), dep(3))
		conflict(t, err, eventstore.Exactly(1), 2)
		if _, err := s.Append(ctx, "s", eventstore.Exactly(2), dep(3)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, "s", eventstore.StreamExists, dep(4)); err != nil {
			t.Fatal(err)
		}
		if res, err := s.Append(ctx, "s", eventstore.Any, dep(5)); err != nil || res.Version != 5 {
			t.Fatalf("any: %+v %v", res, err)
		}
		got, _ := s.ReadStream(ctx, "s", 0, 0)
		var amounts []int
		for _, e := range got {
			amounts = append(amounts, e.Data.(Deposited).Amount)
		}
		if !slices.Equal(amounts, []int{1, 2, 3, 4, 5}) {
			t.Fatalf("stream holds %v", amounts)
		}
		// Bad input is refused before the driver runs.
		for _, bad := range []func() error{
			func() error { _, err := s.Append(ctx, "", eventstore.Any, dep(1)); return err },
			func() error { _, err := s.Append(ctx, "s", eventstore.Any); return err },
			func() error { _, err := s.Append(ctx, "s", eventstore.ExpectedVersion(-3), dep(1)); return err },
			func() error { _, err := s.Append(ctx, "s", eventstore.Any, &eventstore.Event{Data: 42}); return err },
			func() error {
				_, err := s.Append(ctx, "s", eventstore.Any, &eventstore.Event{ID: "x", Data: Deposited{}}, &eventstore.Event{ID: "x", Data: Deposited{}})
				return err
			},
		} {
			if err := bad(); !errors.Is(err, message.ErrInvalidArgument) {
				t.Fatalf("bad append: %v, want invalid argument", err)
			}
		}
	})

	t.Run("ConcurrentAppendersOneWinsEachVersion", func(t *testing.T) {
		s := newStore(t, h, eventstore.Options{})
		const appenders, rounds = 16, 5
		var winners []string
		for v := int64(0); v < rounds; v++ {
			var wg sync.WaitGroup
			start := make(chan struct{})
			errs := make([]error, appenders)
			evs := make([]*eventstore.Event, appenders)
			for i := range appenders {
				evs[i] = &eventstore.Event{ID: fmt.Sprintf("r%d-a%d", v, i), Data: Deposited{Amount: i}}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, errs[i] = s.Append(ctx, "hot", eventstore.Exactly(v), evs[i])
				}()
			}
			close(start)
			wg.Wait()
			won := -1
			for i, err := range errs {
				var ce *eventstore.ConflictError
				switch {
				case err == nil:
					if won >= 0 {
						t.Fatalf("version %d: appenders %d and %d both won", v+1, won, i)
					}
					won = i
				case errors.As(err, &ce):
					if ce.Actual != v+1 || ce.Expected != eventstore.Exactly(v) {
						t.Fatalf("version %d: conflict %+v", v+1, ce)
					}
				default:
					t.Fatalf("version %d: appender %d: %v", v+1, i, err)
				}
			}
			if won < 0 {
				t.Fatalf("version %d: nobody won", v+1)
			}
			winners = append(winners, evs[won].ID)
		}
		got, _ := s.ReadStream(ctx, "hot", 0, 0)
		if !slices.Equal(ids(got), winners) || !slices.Equal(versions(got), seq(1, rounds)) {
			t.Fatalf("stream %v %v, winners %v", ids(got), versions(got), winners)
		}
	})

	t.Run("ConcurrentAnyAppendsAllLand", func(t *testing.T) {
		s := newStore(t, h, eventstore.Options{})
		const appenders, each = 16, 10
		var wg sync.WaitGroup
		want := map[string]bool{}
		for i := range appenders {
			for j := range each {
				want[fmt.Sprintf("a%d-%d", i, j)] = true
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range each {
					if _, err := s.Append(ctx, "any", eventstore.Any, &eventstore.Event{ID: fmt.Sprintf("a%d-%d", i, j), Data: Deposited{j}}); err != nil {
						t.Errorf("append: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		got, _ := s.ReadStream(ctx, "any", 0, 0)
		if !slices.Equal(versions(got), seq(1, appenders*each)) {
			t.Fatalf("versions %v", versions(got))
		}
		last := map[string]int{}
		for _, e := range got {
			if !want[e.ID] {
				t.Fatalf("unexpected or repeated %s", e.ID)
			}
			delete(want, e.ID)
			var a, j int
			fmt.Sscanf(e.ID, "a%d-%d", &a, &j)
			if p, ok := last[fmt.Sprint(a)]; ok && p >= j {
				t.Fatalf("appender %d's events out of order", a)
			}
			last[fmt.Sprint(a)] = j
		}
	})

	t.Run("IdempotentAppend", func(t *testing.T) {
		s := newStore(t, h, eventstore.Options{})
		a := func() []*eventstore.Event {
			return []*eventstore.Event{{ID: "e1", Data: Deposited{1}}, {ID: "e2", Data: Deposited{2}}}
		}
		first, err := s.Append(ctx, "i", eventstore.NoStream, a()...)
		if err != nil {
			t.Fatal(err)
		}
		// A retry, even with its now-stale expected version, is a no-op.
		for _, exp := range []eventstore.ExpectedVersion{eventstore.NoStream, eventstore.Any, eventstore.Exactly(2)} {
			again, err := s.Append(ctx, "i", exp, a()...)
			if err != nil {
				t.Fatalf("retry expecting %v: %v", exp, err)
			}
			if !again.Duplicate || again.Version != first.Version || again.Position != first.Position {
				t.Fatalf("retry = %+v, first %+v", again, first)
			}
		}
		if _, err := s.Append(ctx, "i", eventstore.Any, &eventstore.Event{ID: "e3", Data: Deposited{3}}); err != nil {
			t.Fatal(err)
		}
		for _, bad := range [][]string{{"e2", "e1"}, {"e1", "new"}, {"e1", "e3"}} {
			var evs []*eventstore.Event
			for _, id := range bad {
				evs = append(evs, &eventstore.Event{ID: id, Data: Deposited{}})
			}
			if _, err := s.Append(ctx, "i", eventstore.Any, evs...); !errors.Is(err, message.ErrInvalidArgument) {
				t.Fatalf("append %v: %v, want invalid argument", bad, err)
			}
		}
		// A retry of part of an append, at its place, is a duplicate too.
		if res, err := s.Append(ctx, "i", eventstore.Any, &eventstore.Event{ID: "e2", Data: Deposited{2}}); err != nil || !res.Duplicate || res.Version != 2 {
			t.Fatalf("retry of e2 alone: %+v %v", res, err)
		}
		// The same ID in another stream is refused.
		if _, err := s.Append(ctx, "other", eventstore.Any, &eventstore.Event{ID: "e1", Data: Deposited{}}); !errors.Is(err, message.ErrInvalidArgument) {
			t.Fatalf("e1 in another stream: %v", err)
		}
		got, _ := s.ReadStream(ctx, "i", 0, 0)
		if !slices.Equal(ids(got), []string{"e1", "e2", "e3"}) {
			t.Fatalf("stream %v", ids(got))
		}
		// A duplicate retried concurrently lands once.
		var wg sync.WaitGroup
		var mu sync.Mutex
		dups := 0
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := s.Append(ctx, "j", eventstore.Any, &eventstore.Event{ID: "j1", Data: Deposited{}})
				if err != nil {
					t.Errorf("append j1: %v", err)
					return
				}
				mu.Lock()
				if res.Duplicate {
					dups++
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		got, _ = s.ReadStream(ctx, "j", 0, 0)
		if len(got) != 1 || dups != 7 {
			t.Fatalf("stream j has %d events, %d duplicates reported", len(got), dups)
		}
		all := readAll(t, s, eventstore.Position{}, 100)
		if len(all) != 4 {
			t.Fatalf("global log has %d events, want 4", len(all))
		}
	})

	t.Run("ReadAllInGlobalOrder", func(t *testing.T) {
		s := newStore(t, h, eventstore.Options{})
		var want []string
		for i := range 30 {
			stream := fmt.Sprintf("g-%d", i%4)
			e := &eventstore.Event{Data: Deposited{i}}
			if _, err := s.Append(ctx, stream, eventstore.Any, e); err != nil {
				t.Fatal(err)
			}
			want = append(want, e.ID)
		}
		for _, page := range []int{1, 7, 1000} {
			if got := readAll(t, s, eventstore.Position{}, page); !slices.Equal(ids(got), want) {
				t.Fatalf("page %d: %v, want %v", page, ids(got), want)
			}
		}
		all := readAll(t, s, eventstore.Position{}, 100)
		tail := readAll(t, s, all[9].Position, 100)
		if !slices.Equal(ids(tail), want[10:]) {
			t.Fatalf("after the 10th: %v", ids(tail))
		}
		p, err := eventstore.ParsePosition(all[9].Position.String())
		if err != nil || p != all[9].Position {
			t.Fatalf("ParsePosition(%s) = %v, %v", all[9].Position, p, err)
		}
	})

	t.Run("GapSafeOverlappingTransactions", func(t *testing.T) {
		if h.DB == nil {
			t.Skip("harness gives no database: cannot hold a transaction open")
		}
		s := newStore(t, h, eventstore.Options{})
		db := h.DB(s.Driver())
		if h.Serialised {
			// One writer at a time: an open transaction's events are unseen
			// until it commits, and later writers wait for it.
			txA, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			a := dep(1)
			if _, err := s.AppendTx(ctx, txA, "a", eventstore.Any, a); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, s, eventstore.Position{}, 10); len(got) != 0 {
				t.Fatalf("read %v before commit", ids(got))
			}
			if err := txA.Commit(); err != nil {
				t.Fatal(err)
			}
			b := dep(2)
			if _, err := s.Append(ctx, "b", eventstore.Any, b); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, s, eventstore.Position{}, 10); !slices.Equal(ids(got), []string{a.ID, b.ID}) {
				t.Fatalf("read %v", ids(got))
			}
			return
		}
		before := dep(0)
		if _, err := s.Append(ctx, "z", eventstore.Any, before); err != nil {
			t.Fatal(err)
		}
		seen := readAll(t, s, eventstore.Position{}, 10)
		if !slices.Equal(ids(seen), []string{before.ID}) {
			t.Fatalf("read %v", ids(seen))
		}
		cp := seen[0].Position
		txA, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer txA.Rollback()
		a := dep(1)
		if _, err := s.AppendTx(ctx, txA, "a", eventstore.Any, a); err != nil {
			t.Fatal(err)
		}
		txB, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer txB.Rollback()
		b := dep(2)
		if _, err := s.AppendTx(ctx, txB, "b", eventstore.Any, b); err != nil {
			t.Fatal(err)
		}
		if err := txB.Commit(); err != nil {
			t.Fatal(err)
		}
		// B committed, A (which began first) has not: a reader must not
		// move past A's place by reading B.
		if got := readAll(t, s, cp, 10); len(got) != 0 {
			t.Fatalf("read %v while an earlier transaction is open", ids(got))
		}
		if err := txA.Commit(); err != nil {
			t.Fatal(err)
		}
		got := readAll(t, s, cp, 10)
		if !slices.Equal(ids(got), []string{a.ID, b.ID}) {
			t.Fatalf("after both commits read %v, want [A B] = [%s %s]", ids(got), a.ID, b.ID)
		}
	})

	t.Run("GapSafeTailUnderConcurrentWriters", func(t *testing.T) {
		if h.DB == nil {
			t.Skip("harness gives no database")
		}
		s := newStore(t, h, eventstore.Options{})
		db := h.DB(s.Driver())
		const writers, each = 8, 20
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						t.Error(err)
						return
					}
					if _, err := s.AppendTx(ctx, tx, fmt.Sprintf("w%d", w), eventstore.Any, dep(i)); err != nil {
						_ = tx.Rollback()
						t.Error(err)
						return
					}
					// Hold the transaction a little, so that commits
					// interleave out of order (work, not synchronisation).
					time.Sleep(time.Duration(rand.IntN(1500)) * time.Microsecond)
					if err := tx.Commit(); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		var tailed []*eventstore.Event
		var p eventstore.Position
		for finished := false; ; {
			select {
			case <-done:
				finished = true
			default:
			}
			evs, err := s.ReadAll(ctx, p, 7)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				p = e.Position
			}
			tailed = append(tailed, evs...)
			if finished && len(evs) == 0 {
				break
			}
		}
		full := readAll(t, s, eventstore.Position{}, 1000)
		if len(full) != writers*each || !slices.Equal(ids(tailed), ids(full)) {
			t.Fatalf("tailing read %d events, the full log holds %d (want %d); a tailing reader skipped or repeated events",
				len(tailed), len(full), writers*each)
		}
	})

	t.Run("SnapshotPlusTailEqualsReplay", func(t *testing.T) {
		s := newStore(t, h, eventstore.Options{SnapshotEvery: 10})
		acc := &Account{}
		var version int64
		for i := 1; i <= 35; i++ {
			e := dep(i)
			if i%4 == 0 {
				e = &eventstore.Event{Data: Withdrawn{Amount: 1}}
			}
			res, err := s.Save(ctx, "acc", acc, version, e)
			if err != nil {
				t.Fatal(err)
			}
			version = res.Version
		}
		full, fresh := &Account{}, &Account{}
		vf, err := s.Load(ctx, "acc", full, eventstore.LoadOptions{NoSnapshot: true})
		if err != nil {
			t.Fatal(err)
		}
		vs, err := s.Load(ctx, "acc", fresh, eventstore.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if vf != 35 || vs != 35 || full.Balance != fresh.Balance || full.Balance != acc.Balance || full.Applied != 35 {
			t.Fatalf("replay v%d %+v, snapshot v%d %+v, live %+v", vf, full, vs, fresh, acc)
		}
		if fresh.RestoredAt != 30 || fresh.Applied != 35 {
			t.Fatalf("snapshot load restored at %d and applied up to %d, want the snapshot at 30 and 5 events", fresh.RestoredAt, fresh.Applied)
		}
		// An on-demand snapshot at the head: nothing left to replay.
		if err := s.Snapshot(ctx, "acc", 35, fresh); err != nil {
			t.Fatal(err)
		}
		head := &Account{}
		if _, err := s.Load(ctx, "acc", head, eventstore.LoadOptions{}); err != nil || head.RestoredAt != 35 || head.Balance != full.Balance {
			t.Fatalf("head load %+v %v", head, err)
		}
	})

	t.Run("AsOfVersionAndTime", func(t *testing.T) {
		clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		s := newStore(t, h, eventstore.Options{Now: func() time.Time { return clock }})
		acc := &Account{}
		var version int64
		balances := map[int64]int{}
		days := map[int64]time.Time{}
		for i := 1; i <= 30; i++ {
			clock = clock.Add(24 * time.Hour) // day i of March (+1)
			res, err := s.Save(ctx, "acc", acc, version, dep(i))
			if err != nil {
				t.Fatal(err)
			}
			version = res.Version
			balances[version] = acc.Balance
			days[version] = clock
			if i == 20 {
				if err := s.Snapshot(ctx, "acc", version, acc); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, v := range []int64{1, 14, 20, 25} {
			a := &Account{}
			got, err := s.Load(ctx, "acc", a, eventstore.LoadOptions{MaxVersion: v})
			if err != nil || got != v || a.Balance != balances[v] {
				t.Fatalf("as of version %d: v%d balance %d (%v), want %d", v, got, a.Balance, err, balances[v])
			}
			if v < 20 && a.RestoredAt != 0 || v >= 20 && a.RestoredAt != 20 {
				t.Fatalf("as of version %d restored from snapshot %d", v, a.RestoredAt)
			}
			// By time: the end of that event's day, and just before it.
			b := &Account{}
			got, err = s.Load(ctx, "acc", b, eventstore.LoadOptions{Until: days[v].Add(time.Hour)})
			if err != nil || got != v || b.Balance != balances[v] {
				t.Fatalf("as of %s: v%d balance %d (%v), want v%d %d", days[v], got, b.Balance, err, v, balances[v])
			}
			evs, err := s.ReadStreamAsOf(ctx, "acc", 0, days[v].Add(-time.Millisecond))
			if err != nil || int64(len(evs)) != v-1 {
				t.Fatalf("events before %s: %d (%v), want %d", days[v], len(evs), err, v-1)
			}
			evs, _ = s.ReadStreamAsOf(ctx, "acc", v, time.Time{})
			if !slices.Equal(versions(evs), seq(1, v)) {
				t.Fatalf("as of version %d: %v", v, versions(evs))
			}
		}
		before := &Account{}
		if got, err := s.Load(ctx, "acc", before, eventstore.LoadOptions{Until: days[1].Add(-time.Hour)}); err != nil || got != 0 || before.Balance != 0 {
			t.Fatalf("before the first event: v%d %+v %v", got, before, err)
		}
	})
}

// Account is the suite's aggregate: a balance, with snapshots.
type Account struct {
	Balance int
	// Applied is the version of the last event applied; RestoredAt the
	// version of the snapshot it was restored from (0: none).
	Applied, RestoredAt int64
}

// Apply applies Deposited and Withdrawn.
func (a *Account) Apply(e *eventstore.Event) error {
	switch d := e.Data.(type) {
	case Deposited:
		a.Balance += d.Amount
	case Withdrawn:
		a.Balance -= d.Amount
	default:
		return fmt.Errorf("account: unexpected event %s", e.Type)
	}
	if e.Version != a.Applied+1 {
		return fmt.Errorf("account: event version %d after %d", e.Version, a.Applied)
	}
	a.Applied = e.Version
	return nil
}

type accountState struct{ Balance, Version int64 }

// SnapshotState returns the balance and version.
func (a *Account) SnapshotState() any { return accountState{int64(a.Balance), a.Applied} }

// RestoreSnapshot restores SnapshotState's value.
func (a *Account) RestoreSnapshot(c eventstore.Codec, data []byte) error {
	var st accountState
	if err := c.Unmarshal(data, &st); err != nil {
		return err
	}
	*a = Account{Balance: int(st.Balance), Applied: st.Version, RestoredAt: st.Version}
	return nil
}
