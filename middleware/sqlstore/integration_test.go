package sqlstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
)

func seqMsg(key string, seq uint64) *message.Message {
	m := &message.Message{ID: fmt.Sprint(key, "#", seq), Key: key, Metadata: message.Metadata{message.KeySequence: strconv.FormatUint(seq, 10)}}
	return message.Received(m, message.Delivery{Topic: "t", Group: "g", Attempt: 1}, nil)
}

// TestOrderingRestartWithSQLStore handles 1..3 with one Ordering middleware,
// then "restarts": a new middleware over a new database handle continues
// at 4, takes 3 for a duplicate and runs 5 only after 4.
func TestOrderingRestartWithSQLStore(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			table := freshTable(t, b)
			s1 := must(NewOrderingStore(b.db, Config{Dialect: b.dialect, Table: table}))(t)
			if err := s1.Migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var calls []uint64
			h := func(_ context.Context, m *message.Message) error {
				n, _ := strconv.ParseUint(m.Metadata[message.KeySequence], 10, 64)
				mu.Lock()
				calls = append(calls, n)
				mu.Unlock()
				return nil
			}
			before := must(middleware.Ordering(middleware.OrderingConfig{Store: s1}))(t)(h)
			for _, n := range []uint64{1, 2, 3} {
				if err := before(context.Background(), seqMsg("acct", n)); err != nil {
					t.Fatal(err)
				}
			}
			s2 := must(NewOrderingStore(b.db2, Config{Dialect: b.dialect, Table: table}))(t)
			after := must(middleware.Ordering(middleware.OrderingConfig{Store: s2, GapTimeout: time.Minute}))(t)(h)
			held := make(chan error, 1)
			go func() { held <- after(context.Background(), seqMsg("acct", 5)) }()
			for _, n := range []uint64{3, 4} {
				if err := after(context.Background(), seqMsg("acct", n)); err != nil {
					t.Fatal(err)
				}
			}
			if err := <-held; err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if want := []uint64{1, 2, 3, 4, 5}; !slices.Equal(calls, want) {
				t.Fatalf("handler calls %v, want %v", calls, want)
			}
			if n, _ := s1.Last(context.Background(), "g/t/acct"); n != 5 {
				t.Fatalf("stored position %d, want 5", n)
			}
		})
	}
}

// TestSequencersShareACounter stamps one key from two publishers (two
// database handles) at once: the numbers are 1..n, each once.
func TestSequencersShareACounter(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			table := freshTable(t, b)
			c1 := must(NewSequenceCounter(b.db, Config{Dialect: b.dialect, Table: table}))(t)
			if err := c1.Migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
			c2 := must(NewSequenceCounter(b.db2, Config{Dialect: b.dialect, Table: table}))(t)
			var mu sync.Mutex
			seen := map[string]int{}
			var wg sync.WaitGroup
			for _, c := range []*SequenceCounter{c1, c2} {
				s := middleware.NewSequencer(c)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 10; i++ {
						msgs := make([]*message.Message, 1+rand.IntN(3))
						for j := range msgs {
							msgs[j] = &message.Message{Key: "acct"}
						}
						if err := s.Stamp(context.Background(), "payments", msgs...); err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						for _, m := range msgs {
							seen[m.Metadata[message.KeySequence]]++
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			total := 0
			for _, n := range seen {
				total += n
			}
			for i := 1; i <= total; i++ {
				if seen[strconv.Itoa(i)] != 1 {
					t.Fatalf("number %d stamped %d times (of %d)", i, seen[strconv.Itoa(i)], total)
				}
			}
		})
	}
}

// TestSchemaQualifiedTable keeps a store in a named schema.
func TestSchemaQualifiedTable(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			schema := "main"
			if b.dialect == Postgres {
				schema = fmt.Sprintf("polybus_test_%x", rand.Uint32())
				if _, err := b.db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _, _ = b.db.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE") })
			}
			table := fmt.Sprintf("marks_%x", rand.Uint32())
			s := must(NewDedupeStore(b.db, Config{Dialect: b.dialect, Table: schema + "." + table}))(t)
			t.Cleanup(func() { _, _ = b.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+s.Table()) })
			for i := 0; i < 2; i++ { // Migrate is idempotent
				if err := s.Migrate(ctx); err != nil {
					t.Fatal(err)
				}
			}
			_, tok, err := s.Claim(ctx, "k", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Complete(ctx, "k", tok, time.Hour); err != nil {
				t.Fatal(err)
			}
			if st, _, err := s.Claim(ctx, "k", time.Minute); err != nil || st != middleware.AlreadyDone {
				t.Fatalf("claim = %v, %v; want already-done", st, err)
			}
			if _, err := s.Purge(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
