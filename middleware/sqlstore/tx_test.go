package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
)

// ledger is the effect that TxDedupe's work writes: one row per message
// handled, so a double effect is a second row.
type ledger struct {
	b     backend
	table string
}

func newLedger(t *testing.T, b backend) ledger {
	t.Helper()
	l := ledger{b: b, table: freshTable(t, b)}
	if _, err := b.db.ExecContext(context.Background(), "CREATE TABLE "+l.table+" (msg_id TEXT NOT NULL, amount INTEGER NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return l
}

// credit is the work: it books the message's amount in tx.
func (l ledger) credit(ctx context.Context, tx *sql.Tx, m *message.Message) error {
	_, err := tx.ExecContext(ctx, "INSERT INTO "+l.table+" (msg_id, amount) VALUES ($1, 10)", m.ID)
	return err
}

// rows returns how many ledger rows message id has.
func (l ledger) rows(t *testing.T, id string) int {
	t.Helper()
	var n int
	if err := l.b.db.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM "+l.table+" WHERE msg_id = $1", id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// marks returns how many rows of the dedupe table have key.
func marks(t *testing.T, s *DedupeStore, key string) int {
	t.Helper()
	var n int
	if err := s.db.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM "+s.Table()+" WHERE msg_key = $1", key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func dedupeStore(t *testing.T, b backend) *DedupeStore {
	t.Helper()
	s := must(NewDedupeStore(b.db, Config{Dialect: b.dialect, Table: freshTable(t, b)}))(t)
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func order(id string) *message.Message {
	return message.Received(&message.Message{ID: id, Key: "acct-1"}, message.Delivery{Topic: "payments", Group: "ledger", Attempt: 1}, nil)
}

// TestTxDedupeCrashBetweenWorkAndMark fails the delivery after the work
// wrote its effect and before the commit, in every way a delivery can fail
// there, and checks that each leaves neither the effect nor the mark, and
// that the redelivery then does the work exactly once.
func TestTxDedupeCrashBetweenWorkAndMark(t *testing.T) {
	errAfterWork := errors.New("failed after the work")
	crashes := map[string]func(ctx context.Context, cancel context.CancelFunc) error{
		"error":     func(context.Context, context.CancelFunc) error { return errAfterWork },
		"panic":     func(context.Context, context.CancelFunc) error { panic("crash after the work") },
		"cancelled": func(_ context.Context, cancel context.CancelFunc) error { cancel(); return nil },
	}
	for _, b := range backends(t) {
		for name, crash := range crashes {
			t.Run(b.name+"/"+name, func(t *testing.T) {
				store := dedupeStore(t, b)
				l := newLedger(t, b)
				var crashNow atomic.Bool
				crashNow.Store(true)
				var dups atomic.Int32
				h := must(TxDedupe(store, TxConfig{OnDuplicate: func(context.Context, *message.Message) { dups.Add(1) }},
					func(ctx context.Context, tx *sql.Tx, m *message.Message) error {
						if err := l.credit(ctx, tx, m); err != nil {
							return err
						}
						if crashNow.Load() {
							return crash(ctx, cancelFrom(ctx))
						}
						return nil
					}))(t)
				m := order("pay-1")
				key := middleware.DedupeKey(m)

				err := deliverRecovering(h, m)
				if err == nil {
					t.Fatal("the crashed delivery returned nil: it would be acked")
				}
				if n, k := l.rows(t, m.ID), marks(t, store, key); n != 0 || k != 0 {
					t.Fatalf("after the crash: %d ledger rows, %d marks; want neither", n, k)
				}
				crashNow.Store(false)
				for i := 0; i < 3; i++ {
					if err := deliverRecovering(h, order("pay-1")); err != nil {
						t.Fatalf("redelivery %d: %v", i+1, err)
					}
				}
				if n, k := l.rows(t, m.ID), marks(t, store, key); n != 1 || k != 1 {
					t.Fatalf("after redeliveries: %d ledger rows, %d marks; want one each", n, k)
				}
				if dups.Load() != 2 {
					t.Fatalf("%d duplicates, want 2", dups.Load())
				}
			})
		}
	}
}

type cancelKey struct{}

// cancelFrom returns the cancel function that deliverRecovering put in ctx.
func cancelFrom(ctx context.Context) context.CancelFunc {
	c, _ := ctx.Value(cancelKey{}).(context.CancelFunc)
	return c
}

// deliverRecovering calls h as a subscriber would, turning a panic into an
// error, with a context the work can cancel.
func deliverRecovering(h subscriber.Handler, m *message.Message) (err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = context.WithValue(ctx, cancelKey{}, context.CancelFunc(cancel))
	defer func() {
		if v := recover(); v != nil {
			err = errors.New("panicked")
		}
	}()
	return h(ctx, m)
}

// TestTxDedupeKilledConnection kills the PostgreSQL backend of the
// transaction after the work and before the commit, as a crashed consumer
// process would leave it.
func TestTxDedupeKilledConnection(t *testing.T) {
	for _, b := range backends(t) {
		if b.dialect != Postgres {
			continue
		}
		store := dedupeStore(t, b)
		l := newLedger(t, b)
		var kill atomic.Bool
		kill.Store(true)
		h := must(TxDedupe(store, TxConfig{}, func(ctx context.Context, tx *sql.Tx, m *message.Message) error {
			if err := l.credit(ctx, tx, m); err != nil {
				return err
			}
			if !kill.Load() {
				return nil
			}
			var pid int
			if err := tx.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return err
			}
			var ok bool
			if err := b.db2.QueryRowContext(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
				t.Errorf("terminate backend %d: %v, %v", pid, ok, err)
			}
			return nil
		}))(t)
		m := order("pay-kill")
		if err := h(context.Background(), m); err == nil {
			t.Fatal("delivery whose connection was killed returned nil")
		}
		if n, k := l.rows(t, m.ID), marks(t, store, middleware.DedupeKey(m)); n != 0 || k != 0 {
			t.Fatalf("after the kill: %d ledger rows, %d marks; want neither", n, k)
		}
		kill.Store(false)
		for i := 0; i < 2; i++ {
			if err := h(context.Background(), order("pay-kill")); err != nil {
				t.Fatalf("redelivery: %v", err)
			}
		}
		if n := l.rows(t, m.ID); n != 1 {
			t.Fatalf("%d ledger rows, want 1", n)
		}
	}
}

// TestTxDedupeConcurrentDuplicates delivers one message from eight
// goroutines at once: the work runs once, every delivery is acked.
func TestTxDedupeConcurrentDuplicates(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			store := dedupeStore(t, b)
			l := newLedger(t, b)
			var works, dups atomic.Int32
			h := must(TxDedupe(store, TxConfig{OnDuplicate: func(context.Context, *message.Message) { dups.Add(1) }},
				func(ctx context.Context, tx *sql.Tx, m *message.Message) error {
					works.Add(1)
					time.Sleep(20 * time.Millisecond) // keep the transaction open while the others arrive
					return l.credit(ctx, tx, m)
				}))(t)
			var wg sync.WaitGroup
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := h(context.Background(), order("pay-2")); err != nil {
						t.Errorf("delivery: %v", err)
					}
				}()
			}
			wg.Wait()
			if n := l.rows(t, "pay-2"); n != 1 || works.Load() != 1 || dups.Load() != 7 {
				t.Fatalf("%d ledger rows, work ran %d times, %d duplicates; want 1, 1, 7", n, works.Load(), dups.Load())
			}
		})
	}
}

// TestTxDedupeSharesTheTableWithDedupe: a key claimed by the lease-based
// middleware is in progress for TxDedupe (nacked), and a mark from either
// is a duplicate for the other.
func TestTxDedupeSharesTheTableWithDedupe(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			store := dedupeStore(t, b)
			l := newLedger(t, b)
			h := must(TxDedupe(store, TxConfig{InFlightDelay: 3 * time.Second}, l.credit))(t)
			m := order("pay-3")
			key := middleware.DedupeKey(m)
			st, tok, err := store.Claim(context.Background(), key, time.Minute)
			if err != nil || st != middleware.Claimed {
				t.Fatalf("claim: %v %v", st, err)
			}
			err = h(context.Background(), m)
			if d, ok := message.RetryDelay(err); !ok || d != 3*time.Second || !errors.Is(err, middleware.ErrInFlight) || !middleware.IsDeferred(err) {
				t.Fatalf("err = %v, want Defer(ErrInFlight, 3s)", err)
			}
			if err := store.Complete(context.Background(), key, tok, time.Hour); err != nil {
				t.Fatal(err)
			}
			if err := h(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			if n := l.rows(t, m.ID); n != 0 {
				t.Fatalf("work ran on a message marked by Dedupe: %d rows", n)
			}
			// And the other way round.
			m2 := order("pay-4")
			if err := h(context.Background(), m2); err != nil {
				t.Fatal(err)
			}
			if st, _, _ := store.Claim(context.Background(), middleware.DedupeKey(m2), time.Minute); st != middleware.AlreadyDone {
				t.Fatalf("Dedupe claim of a TxDedupe mark = %v, want already-done", st)
			}
		})
	}
}

func TestTxDedupeExpiredMarkAndPurge(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			store := dedupeStore(t, b)
			l := newLedger(t, b)
			h := must(TxDedupe(store, TxConfig{TTL: 100 * time.Millisecond}, l.credit))(t)
			if err := h(context.Background(), order("pay-5")); err != nil {
				t.Fatal(err)
			}
			if err := h(context.Background(), order("pay-5")); err != nil || l.rows(t, "pay-5") != 1 {
				t.Fatalf("duplicate within the TTL: err %v, %d rows", err, l.rows(t, "pay-5"))
			}
			// Past the TTL the mark is forgotten: the message runs again.
			waitFor(t, "the mark to expire", func() bool {
				if err := h(context.Background(), order("pay-5")); err != nil {
					t.Fatal(err)
				}
				return l.rows(t, "pay-5") == 2
			})
			// Purge deletes expired rows only.
			ctx := context.Background()
			for key, ttl := range map[string]time.Duration{"short": time.Millisecond, "long": time.Hour} {
				_, tok, err := store.Claim(ctx, key, time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				if err := store.Complete(ctx, key, tok, ttl); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "expired rows purged", func() bool {
				n, err := store.Purge(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return n > 0 && marks(t, store, "short") == 0
			})
			if marks(t, store, "long") != 1 {
				t.Fatal("Purge deleted a live mark")
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
