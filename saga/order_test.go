package saga_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/polybus/polybus"
	_ "github.com/polybus/polybus/adapters/kafka"
	_ "github.com/polybus/polybus/adapters/memory"
	_ "github.com/polybus/polybus/adapters/nats"
	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/saga"
)

// ledger records the effects that the services apply, in a SQLite table
// (so that a process killed mid-saga and its successor share it), once
// per idempotency key (the command's ID): a service applies an action
// once however often its command is delivered.
type ledger struct {
	db         *sql.DB
	deliveries atomic.Int64
	mu         sync.Mutex
	flows      map[string]string // command ID → its correlation ID and causation chain length
}

func newLedger(ctx context.Context, db *sql.DB) (*ledger, error) {
	_, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS effects (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, effect TEXT NOT NULL)")
	return &ledger{db: db}, err
}

// apply records effect under the key of the command being handled.
func (l *ledger) apply(ctx context.Context, effect string) error {
	l.deliveries.Add(1)
	m, _ := bus.MessageFrom(ctx)
	l.mu.Lock()
	if l.flows == nil {
		l.flows = map[string]string{}
	}
	l.flows[m.ID] = fmt.Sprintf("%s/%d", bus.CorrelationID(ctx), len(bus.CausationChain(m)))
	l.mu.Unlock()
	_, err := l.db.ExecContext(ctx, "INSERT INTO effects (key, effect) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", m.ID, effect)
	return err
}

// flow returns the correlation ID and causation chain length of the
// command with ID id.
func (l *ledger) flow(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flows[id]
}

// effects returns the effects applied, in order.
func (l *ledger) effects(ctx context.Context) ([]string, error) {
	rows, err := l.db.QueryContext(ctx, "SELECT effect FROM effects ORDER BY seq")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// sqliteDSN is the DSN of a SQLite file opened as package sqlstore
// advises.
func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate"
}

// world is one test's broker, store, services and orchestrator.
type world struct {
	t      testing.TB
	c      *polybus.Client
	db     *sql.DB
	store  *saga.Store
	ledger *ledger
	orch   *bus.Bus
	prefix string
}

// brokers runs f on mem://, embedded:// and, when their URLs are set,
// NATS and Kafka.
func brokers(t *testing.T, f func(t *testing.T, url string)) {
	for _, b := range []string{"mem", "embedded", "nats", "kafka"} {
		t.Run(b, func(t *testing.T) {
			switch b {
			case "mem":
				f(t, "mem://")
			case "embedded":
				f(t, "embedded://"+filepath.Join(t.TempDir(), "bus"))
			default:
				f(t, brokertest.URL(t, b))
			}
		})
	}
}

// newWorld opens url and a SQLite store (or the one at dsn) and starts
// the services; prefix "" picks a fresh one.
func newWorld(t testing.TB, url, driver, dsn, prefix string) *world {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if prefix == "" {
		prefix = fmt.Sprintf("t%x.", rand.Uint64())
	}
	if driver == "" {
		driver, dsn = "sqlite", sqliteDSN(filepath.Join(t.TempDir(), "saga.db"))
	}
	c, err := polybus.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, c: c, prefix: prefix}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	if w.db, err = sql.Open(driver, dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.db.Close() })
	dialect, table := saga.SQLite, "polybus_sagas"
	if driver == "pgx" {
		dialect, table = saga.Postgres, "sagas_"+strings.TrimSuffix(prefix, ".")
	}
	if w.store, err = saga.NewStore(w.db, saga.StoreConfig{Dialect: dialect, Table: table}); err != nil {
		t.Fatal(err)
	}
	if err := w.store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if driver == "sqlite" {
		if w.ledger, err = newLedger(ctx, w.db); err != nil {
			t.Fatal(err)
		}
	}
	w.orch = w.newBus(bus.Options{Prefix: prefix})
	return w
}

func (w *world) newBus(opts bus.Options) *bus.Bus {
	b, err := bus.New(w.c, opts)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { closeBus(w.t, b) })
	return b
}

func closeBus(t testing.TB, b *bus.Bus) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("bus Close: %v", err)
	}
}

// startServices starts the OrderSaga's services.
func (w *world) startServices() {
	w.t.Helper()
	bs, err := services(w.c, w.prefix, w.ledger.apply)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, b := range bs {
		w.t.Cleanup(func() { closeBus(w.t, b) })
		if err := b.Start(context.Background()); err != nil {
			w.t.Fatal(err)
		}
	}
}

// run starts s.Run in the background until the test ends.
func run[D any](t testing.TB, s *saga.Saga[D]) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// final waits until saga id is in a final status and returns it.
func (w *world) final(id string) *saga.State {
	w.t.Helper()
	var st *saga.State
	pbtest.WaitFor(w.t, "saga "+id+" to end", func() bool {
		var err error
		st, err = w.store.Load(context.Background(), id)
		return err == nil && st.Status.Final()
	})
	return st
}

// outcomes summarises a state: each step's action and compensation.
func outcomes(st *saga.State) string {
	var parts []string
	for _, s := range st.Steps {
		parts = append(parts, fmt.Sprintf("%s:%s/%s", s.Name, s.Action.Outcome, s.Compensation.Outcome))
	}
	return string(st.Status) + " " + strings.Join(parts, " ")
}

func (w *world) effects() []string {
	w.t.Helper()
	e, err := w.ledger.effects(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	return e
}

// middlewareRetry is a retry policy for tests: 3 attempts, 1ms apart.
func middlewareRetry() middleware.RetryConfig {
	return middleware.RetryConfig{MaxAttempts: 3, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond}
}
