package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/polybus/polybus"
	_ "github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/eventstore/sqlstore"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/outbox"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(relayChild())
	}
	goleak.VerifyTestMain(m)
}

type backend struct {
	name    string
	dialect outbox.Dialect
	db      *sql.DB
}

func sqliteDSN(file string) string {
	return "file:" + file + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate"
}

func open(t testing.TB, driver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.PingContext(context.Background()); err != nil {
		t.Fatalf("%s: %v", driver, err)
	}
	return db
}

// eachBackend runs f on SQLite and, when POLYBUS_POSTGRES_URL is set (see
// internal/brokertest), on PostgreSQL.
func eachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	t.Run("sqlite", func(t *testing.T) {
		f(t, backend{"sqlite", outbox.SQLite, open(t, "sqlite", sqliteDSN(filepath.Join(t.TempDir(), "app.db")))})
	})
	t.Run("postgres", func(t *testing.T) {
		f(t, backend{"postgres", outbox.Postgres, open(t, "pgx", brokertest.URL(t, "postgres"))})
	})
}

func newOutbox(t testing.TB, b backend, now func() time.Time) *outbox.Outbox {
	t.Helper()
	name := fmt.Sprintf("outbox_test_%x", rand.Uint64())
	o, err := outbox.New(b.db, outbox.Config{Dialect: b.dialect, Table: name, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = b.db.ExecContext(context.Background(), `DROP TABLE IF EXISTS "`+name+`"`) })
	return o
}

func broker(t *testing.T) *polybus.Client {
	t.Helper()
	c, err := polybus.Open(context.Background(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// collector records what a subscription received, in order.
type collector struct {
	mu  sync.Mutex
	got []*message.Message
}

func (c *collector) handle(_ context.Context, m *message.Message) error {
	c.mu.Lock()
	c.got = append(c.got, m)
	c.mu.Unlock()
	return nil
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func (c *collector) all() []*message.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func add(t *testing.T, o *outbox.Outbox, topic string, commit bool, msgs ...*message.Message) {
	t.Helper()
	ctx := context.Background()
	tx, err := o.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Add(ctx, tx, topic, msgs...); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	if commit {
		err = tx.Commit()
	} else {
		err = tx.Rollback()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestCommittedRowsArePublishedWithTheirIDs(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		o := newOutbox(t, b, nil)
		c := broker(t)
		var col collector
		pbtest.Consume(t, c, "orders", col.handle)
		sent := []*message.Message{
			{ID: "m1", Key: "ord-1", Payload: []byte("placed"), Metadata: message.Metadata{"h": "v"}},
			{ID: "m2", Key: "ord-2", Payload: []byte{0, 1, 2}},
			{ID: "m3", Key: "ord-1", Payload: []byte("shipped")},
			{Payload: []byte("no key, no id")},
		}
		add(t, o, "orders", true, sent...)
		add(t, o, "orders", false, &message.Message{ID: "rolled-back", Key: "ord-1"})
		relay, err := o.Relay(outbox.RelayConfig{Publisher: c.Publisher()})
		if err != nil {
			t.Fatal(err)
		}
		n, err := relay.Once(ctx)
		if err != nil || n != 4 {
			t.Fatalf("Once = %d, %v; want 4", n, err)
		}
		if n, err := relay.Once(ctx); err != nil || n != 0 {
			t.Fatalf("second Once = %d, %v; want 0", n, err)
		}
		pbtest.WaitFor(t, "4 messages", func() bool { return col.len() >= 4 })
		got := map[string]*message.Message{}
		for _, m := range col.all() {
			got[m.ID] = m
		}
		if len(got) != 4 || got["rolled-back"] != nil {
			t.Fatalf("received %v", got)
		}
		for _, s := range sent {
			g := got[s.ID]
			if g == nil || g.Key != s.Key || string(g.Payload) != string(s.Payload) || g.Metadata.Get("h") != s.Metadata.Get("h") ||
				!g.Time.Equal(s.Time) {
				t.Fatalf("sent %+v, received %+v", s, g)
			}
		}
		st, err := o.Stats(ctx)
		if err != nil || st.Pending != 0 || st.Published != 4 {
			t.Fatalf("stats %+v %v", st, err)
		}
	})
}

func TestSeveralRelaysKeepPerKeyOrder(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		o := newOutbox(t, b, nil)
		c := broker(t)
		var col collector
		pbtest.Consume(t, c, "ev", col.handle)
		const keys, per, relays = 20, 30, 4
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var errs atomic.Int64
		for range relays {
			r, err := o.Relay(outbox.RelayConfig{Publisher: c.Publisher(), BatchSize: 16, Interval: 5 * time.Millisecond,
				OnError: func(err error) { errs.Add(1); t.Errorf("relay: %v", err) }})
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() { defer wg.Done(); _ = r.Run(ctx) }()
		}
		// Rows arrive while the relays run, in transactions of mixed keys.
		for i := 0; i < per; i++ {
			var msgs []*message.Message
			for k := range keys {
				msgs = append(msgs, &message.Message{ID: fmt.Sprintf("k%d-%d", k, i), Key: fmt.Sprintf("k%d", k)})
			}
			add(t, o, "ev", true, msgs...)
		}
		pbtest.WaitFor(t, "every message", func() bool { return col.len() >= keys*per })
		pbtest.WaitFor(t, "every row marked", func() bool {
			st, err := o.Stats(context.Background())
			return err == nil && st.Pending == 0
		})
		cancel()
		wg.Wait()
		seen := map[string]bool{}
		next := map[string]int{}
		for _, m := range col.all() {
			if seen[m.ID] {
				t.Fatalf("%s received twice", m.ID)
			}
			seen[m.ID] = true
			var k, i int
			fmt.Sscanf(m.ID, "k%d-%d", &k, &i)
			if next[m.Key] != i {
				t.Fatalf("key %s: received %d, want %d next", m.Key, i, next[m.Key])
			}
			next[m.Key]++
		}
		if len(seen) != keys*per {
			t.Fatalf("received %d distinct, want %d", len(seen), keys*per)
		}
		st, _ := o.Stats(context.Background())
		if st.Pending != 0 || st.Published != keys*per {
			t.Fatalf("stats %+v", st)
		}
	})
}

// A relay that dies after claiming (here: panics out of Once, leaving its
// lease) delays its keys until the lease expires; the next relay then
// publishes the batch: nothing lost, in order.
func TestDeadRelaysLeaseIsTakenOver(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		var clock atomic.Int64
		clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
		now := func() time.Time { return time.Unix(0, clock.Load()) }
		o := newOutbox(t, b, now)
		c := broker(t)
		var col collector
		pbtest.Consume(t, c, "t", col.handle)
		for i := range 5 {
			add(t, o, "t", true, &message.Message{ID: fmt.Sprint(i), Key: "k"})
		}
		dying, _ := o.Relay(outbox.RelayConfig{Publisher: c.Publisher(), Lease: time.Minute, BatchSize: 3,
			AfterClaim: func(int) { panic("killed") }})
		func() {
			defer func() { _ = recover() }()
			_, _ = dying.Once(ctx)
		}()
		next, _ := o.Relay(outbox.RelayConfig{Publisher: c.Publisher(), Lease: time.Minute})
		if n, err := next.Once(ctx); err != nil || n != 0 {
			t.Fatalf("while the lease holds: published %d, %v", n, err)
		}
		clock.Add(int64(time.Minute + time.Millisecond))
		if n, err := next.Once(ctx); err != nil || n != 5 {
			t.Fatalf("after the lease: published %d, %v", n, err)
		}
		pbtest.WaitFor(t, "5 messages", func() bool { return col.len() >= 5 })
		var order []string
		for _, m := range col.all() {
			order = append(order, m.ID)
		}
		if !slices.Equal(order, []string{"0", "1", "2", "3", "4"}) {
			t.Fatalf("received %v", order)
		}
	})
}

type flaky struct {
	p     outbox.Publisher
	fails atomic.Int64
}

func (f *flaky) Publish(ctx context.Context, topic string, msgs ...*message.Message) error {
	if f.fails.Add(-1) >= 0 {
		return message.Errorf(message.Unavailable, "test", "broker down")
	}
	return f.p.Publish(ctx, topic, msgs...)
}

func TestFailedPublishIsRetried(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		o := newOutbox(t, b, nil)
		c := broker(t)
		var col collector
		pbtest.Consume(t, c, "t", col.handle)
		add(t, o, "t", true, &message.Message{ID: "a", Key: "k"}, &message.Message{ID: "b", Key: "k"})
		f := &flaky{p: c.Publisher()}
		f.fails.Store(1)
		r, _ := o.Relay(outbox.RelayConfig{Publisher: f})
		if _, err := r.Once(ctx); !errors.Is(err, message.ErrUnavailable) {
			t.Fatalf("Once with the broker down: %v", err)
		}
		if n, err := r.Once(ctx); err != nil || n != 2 {
			t.Fatalf("retry published %d, %v", n, err)
		}
		pbtest.WaitFor(t, "2 messages", func() bool { return col.len() >= 2 })
		if got := col.all(); got[0].ID != "a" || got[1].ID != "b" || len(got) != 2 {
			t.Fatalf("received %v", got)
		}
	})
}

func TestPruneAfterRetention(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		var clock atomic.Int64
		clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
		now := func() time.Time { return time.Unix(0, clock.Load()) }
		o := newOutbox(t, b, now)
		c := broker(t)
		add(t, o, "t", true, &message.Message{Key: "a"}, &message.Message{Key: "b"})
		r, _ := o.Relay(outbox.RelayConfig{Publisher: c.Publisher()})
		if n, err := r.Once(ctx); err != nil || n != 2 {
			t.Fatal(n, err)
		}
		add(t, o, "t", true, &message.Message{Key: "c"})
		clock.Add(int64(time.Hour))
		if n, err := o.Prune(ctx, 2*time.Hour); err != nil || n != 0 {
			t.Fatalf("prune inside retention deleted %d, %v", n, err)
		}
		clock.Add(int64(2 * time.Hour))
		if n, err := o.Prune(ctx, 2*time.Hour); err != nil || n != 2 {
			t.Fatalf("prune after retention deleted %d, %v; want 2", n, err)
		}
		st, _ := o.Stats(ctx)
		if st.Pending != 1 || st.Published != 0 {
			t.Fatalf("stats %+v: the pending row must stay", st)
		}
	})
}

type Placed struct{ Order string }

func TestAppendEventsCommitsEventsAndMessagesTogether(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		o := newOutbox(t, b, nil)
		dialect := sqlstore.SQLite
		if b.dialect == outbox.Postgres {
			dialect = sqlstore.Postgres
		}
		drv, err := sqlstore.New(b.db, sqlstore.Config{Dialect: dialect, Prefix: fmt.Sprintf("ob%x_", rand.Uint64())})
		if err != nil {
			t.Fatal(err)
		}
		if err := drv.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			e, s, n := drv.Tables()
			for _, tb := range []string{e, s, n} {
				_, _ = b.db.ExecContext(ctx, `DROP TABLE "`+tb+`"`)
			}
		})
		store, _ := eventstore.New(drv, eventstore.Options{})
		_ = eventstore.Register[Placed](store.Registry(), "Placed")
		do := func(exp eventstore.ExpectedVersion, e *eventstore.Event) error {
			tx, err := b.db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := o.AppendEvents(ctx, tx, store, "order-1", exp, "orders", e); err != nil {
				_ = tx.Rollback()
				return err
			}
			return tx.Commit()
		}
		e1 := &eventstore.Event{Data: Placed{"order-1"}}
		if err := do(eventstore.NoStream, e1); err != nil {
			t.Fatal(err)
		}
		if err := do(eventstore.NoStream, &eventstore.Event{Data: Placed{"again"}}); !errors.Is(err, eventstore.ErrConflict) {
			t.Fatalf("conflicting append: %v", err)
		}
		st, _ := o.Stats(ctx)
		if st.Pending != 1 {
			t.Fatalf("%d rows pending, want 1 (the conflicting append's row must roll back)", st.Pending)
		}
		c := broker(t)
		var col collector
		pbtest.Consume(t, c, "orders", col.handle)
		r, _ := o.Relay(outbox.RelayConfig{Publisher: c.Publisher()})
		if n, err := r.Once(ctx); n != 1 || err != nil {
			t.Fatal(n, err)
		}
		pbtest.WaitFor(t, "the event", func() bool { return col.len() >= 1 })
		m := col.all()[0]
		ev, err := store.FromMessage(m)
		if err != nil || m.ID != e1.ID || m.Key != "order-1" || ev.Data != (Placed{"order-1"}) || ev.Version != 1 || ev.Stream != "order-1" {
			t.Fatalf("message %+v event %+v %v", m, ev, err)
		}
	})
}

func TestBadConfig(t *testing.T) {
	db := open(t, "sqlite", sqliteDSN(filepath.Join(t.TempDir(), "x.db")))
	for _, cfg := range []outbox.Config{{}, {Dialect: 7}, {Dialect: outbox.SQLite, Table: "a-b"}} {
		if _, err := outbox.New(db, cfg); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("New(%+v): %v", cfg, err)
		}
	}
	o, _ := outbox.New(db, outbox.Config{Dialect: outbox.SQLite})
	if _, err := o.Relay(outbox.RelayConfig{}); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("relay without publisher: %v", err)
	}
	if err := o.Add(context.Background(), nil, "t", message.New(nil)); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("nil tx: %v", err)
	}
}

func TestUnreachableDatabaseIsUnavailable(t *testing.T) {
	db, err := sql.Open("pgx", "postgres://nobody@127.0.0.1:1/x?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	o, _ := outbox.New(db, outbox.Config{Dialect: outbox.Postgres})
	r, _ := o.Relay(outbox.RelayConfig{Publisher: broker(t).Publisher()})
	start := time.Now()
	if _, err := r.Once(context.Background()); !errors.Is(err, message.ErrUnavailable) || time.Since(start) > 10*time.Second {
		t.Fatalf("relay on an unreachable database: %v after %s", err, time.Since(start))
	}
	if _, err := o.Stats(context.Background()); !errors.Is(err, message.ErrUnavailable) {
		t.Fatalf("stats: %v", err)
	}
}
