package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/middleware/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backend is one database the tests run against: db, and a second,
// independent handle on the same data (another process, or the same one
// after a restart).
type backend struct {
	name    string
	dialect Dialect
	db, db2 *sql.DB
}

// backends returns SQLite (a file in a temporary directory) and PostgreSQL
// (from POLYBUS_POSTGRES_URL; see internal/brokertest: skipped locally when
// unset, failed under CI).
func backends(t *testing.T) []backend {
	t.Helper()
	file := filepath.Join(t.TempDir(), "polybus.db")
	dsn := "file:" + file + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate"
	bs := []backend{{name: "sqlite", dialect: SQLite, db: open(t, "sqlite", dsn), db2: open(t, "sqlite", dsn)}}
	// A subtest, so that a missing PostgreSQL skips only itself.
	var pg string
	t.Run("postgres-available", func(t *testing.T) { pg = brokertest.URL(t, "postgres") })
	if pg != "" {
		bs = append(bs, backend{name: "postgres", dialect: Postgres, db: open(t, "pgx", pg), db2: open(t, "pgx", pg)})
	}
	return bs
}

func open(t *testing.T, driver, dsn string) *sql.DB {
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

// freshTable returns a table name no test has used, dropped at the end.
func freshTable(t *testing.T, b backend) string {
	t.Helper()
	name := fmt.Sprintf("polybus_test_%x", rand.Uint64())
	t.Cleanup(func() { _, _ = b.db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+name) })
	return name
}

// must returns v, failing the test on err: must(NewX(...))(t).
func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestStoreSuites(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Run("Dedupe", func(t *testing.T) {
				var table string
				storetest.Dedupe(t, storetest.DedupeStores{
					Fresh: func(t *testing.T) middleware.DedupeStore {
						table = freshTable(t, b)
						s := must(NewDedupeStore(b.db, Config{Dialect: b.dialect, Table: table}))(t)
						if err := s.Migrate(context.Background()); err != nil {
							t.Fatal(err)
						}
						return s
					},
					Reopen: func(t *testing.T) middleware.DedupeStore {
						return must(NewDedupeStore(b.db2, Config{Dialect: b.dialect, Table: table}))(t)
					},
				})
			})
			t.Run("Ordering", func(t *testing.T) {
				var table string
				storetest.Ordering(t, storetest.OrderingStores{
					Fresh: func(t *testing.T) middleware.OrderingStore {
						table = freshTable(t, b)
						s := must(NewOrderingStore(b.db, Config{Dialect: b.dialect, Table: table}))(t)
						if err := s.Migrate(context.Background()); err != nil {
							t.Fatal(err)
						}
						return s
					},
					Reopen: func(t *testing.T) middleware.OrderingStore {
						return must(NewOrderingStore(b.db2, Config{Dialect: b.dialect, Table: table}))(t)
					},
				})
			})
			t.Run("Counter", func(t *testing.T) {
				var table string
				storetest.Counter(t, storetest.CounterStores{
					Fresh: func(t *testing.T) middleware.SequenceCounter {
						table = freshTable(t, b)
						c := must(NewSequenceCounter(b.db, Config{Dialect: b.dialect, Table: table}))(t)
						if err := c.Migrate(context.Background()); err != nil {
							t.Fatal(err)
						}
						return c
					},
					Reopen: func(t *testing.T) middleware.SequenceCounter {
						return must(NewSequenceCounter(b.db2, Config{Dialect: b.dialect, Table: table}))(t)
					},
				})
			})
		})
	}
}

func TestConfigValidation(t *testing.T) {
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, cfg := range []Config{
		{},
		{Dialect: 3},
		{Dialect: SQLite, Table: "bad name"},
		{Dialect: SQLite, Table: `x"; DROP TABLE y; --`},
		{Dialect: SQLite, Table: "1abc"},
		{Dialect: SQLite, Table: "a.b.c"},
		{Dialect: SQLite, Table: ".b"},
		{Dialect: SQLite, Table: "a_very_long_table_name_that_is_well_over_the_limit_of_55_chars"},
	} {
		if _, err := NewDedupeStore(db, cfg); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("%+v: err = %v, want InvalidArgument", cfg, err)
		}
		if _, err := NewOrderingStore(db, cfg); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("%+v: err = %v, want InvalidArgument", cfg, err)
		}
		if _, err := NewSequenceCounter(db, cfg); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("%+v: err = %v, want InvalidArgument", cfg, err)
		}
	}
	if _, err := NewDedupeStore(nil, Config{Dialect: SQLite}); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("nil db: err = %v", err)
	}
	for want, s := range map[string]interface{ Table() string }{
		`"polybus_dedupe"`:    must(NewDedupeStore(db, Config{Dialect: SQLite}))(t),
		`"polybus_ordering"`:  must(NewOrderingStore(db, Config{Dialect: Postgres}))(t),
		`"polybus_sequences"`: must(NewSequenceCounter(db, Config{Dialect: SQLite}))(t),
		`"app"."Marks_2"`:     must(NewDedupeStore(db, Config{Dialect: Postgres, Table: "app.Marks_2"}))(t),
		`"_x"`:                must(NewOrderingStore(db, Config{Dialect: SQLite, Table: "_x"}))(t),
	} {
		if got := s.Table(); got != want {
			t.Errorf("Table() = %s, want %s", got, want)
		}
	}
	if _, err := TxDedupe(nil, TxConfig{}, func(context.Context, *sql.Tx, *message.Message) error { return nil }); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("nil store: err = %v", err)
	}
	s := must(NewDedupeStore(db, Config{Dialect: SQLite}))(t)
	if _, err := TxDedupe(s, TxConfig{}, nil); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("nil work: err = %v", err)
	}
	if _, err := TxDedupe(s, TxConfig{TTL: -1}, func(context.Context, *sql.Tx, *message.Message) error { return nil }); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("negative TTL: err = %v", err)
	}
	c := must(NewSequenceCounter(db, Config{Dialect: SQLite}))(t)
	if _, err := c.Reserve(context.Background(), "k", 1<<63); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("reserve over int64: err = %v", err)
	}
	o := must(NewOrderingStore(db, Config{Dialect: SQLite}))(t)
	if err := o.Advance(context.Background(), "k", 1<<63); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("advance over int64: err = %v", err)
	}
	for d, want := range map[Dialect]string{Postgres: "postgres", SQLite: "sqlite", 0: "Dialect(0)"} {
		if d.String() != want {
			t.Errorf("%d.String() = %q", int(d), d.String())
		}
	}
}
