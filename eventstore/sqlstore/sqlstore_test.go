package sqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/eventstore/sqlstore"
	"github.com/polybus/polybus/eventstore/storetest"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/message"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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

// SQLiteDSN is how the tests (and the docs) open SQLite.
func sqliteDSN(file string) string {
	return "file:" + file + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate"
}

func migrated(t testing.TB, db *sql.DB, d sqlstore.Dialect) *sqlstore.Driver {
	t.Helper()
	prefix := fmt.Sprintf("t%x_", rand.Uint64())
	drv, err := sqlstore.New(db, sqlstore.Config{Dialect: d, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ev, st, sn := drv.Tables()
		for _, tb := range []string{ev, st, sn} {
			_, _ = db.ExecContext(context.Background(), `DROP TABLE IF EXISTS "`+tb+`"`)
		}
	})
	return drv
}

func dbOf(d eventstore.Driver) *sql.DB { return d.(*sqlstore.Driver).DB() }

func TestSQLiteSuite(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) eventstore.Driver {
			db := open(t, "sqlite", sqliteDSN(filepath.Join(t.TempDir(), "events.db")))
			return migrated(t, db, sqlstore.SQLite)
		},
		DB:         dbOf,
		Serialised: true,
	})
}

func TestPostgresSuite(t *testing.T) {
	url := brokertest.URL(t, "postgres")
	db := open(t, "pgx", url)
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) eventstore.Driver { return migrated(t, db, sqlstore.Postgres) },
		DB:  dbOf,
	})
}

func TestConfigErrors(t *testing.T) {
	db := open(t, "sqlite", sqliteDSN(filepath.Join(t.TempDir(), "x.db")))
	for _, cfg := range []sqlstore.Config{{}, {Dialect: 9}, {Dialect: sqlstore.SQLite, Prefix: "bad-name"}, {Dialect: sqlstore.SQLite, Prefix: "1x"}} {
		if _, err := sqlstore.New(db, cfg); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("New(%+v) = %v, want invalid argument", cfg, err)
		}
	}
	if _, err := sqlstore.New(nil, sqlstore.Config{Dialect: sqlstore.SQLite}); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("nil db: %v", err)
	}
}

func TestUnreachablePostgresIsUnavailable(t *testing.T) {
	db, err := sql.Open("pgx", "postgres://nobody@127.0.0.1:1/x?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	drv, err := sqlstore.New(db, sqlstore.Config{Dialect: sqlstore.Postgres})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := eventstore.New(drv, eventstore.Options{})
	start := time.Now()
	_, err = s.Append(context.Background(), "s", eventstore.Any, &eventstore.Event{Type: "x", Raw: []byte("{}")})
	if !errors.Is(err, message.ErrUnavailable) || time.Since(start) > 10*time.Second {
		t.Fatalf("append to an unreachable database: %v after %s, want unavailable", err, time.Since(start))
	}
	if _, err := s.ReadAll(context.Background(), eventstore.Position{}, 0); !errors.Is(err, message.ErrUnavailable) {
		t.Fatalf("read: %v", err)
	}
}
