package bus_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/eventstore/sqlstore"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/message"
)

// TestSQLRegistry: the first service to register a command type holds
// it; another is Conflict; an unregistered type is NotFound; on SQLite
// and, when POLYBUS_POSTGRES_URL is set, PostgreSQL.
func TestSQLRegistry(t *testing.T) {
	for _, d := range []sqlstore.Dialect{sqlstore.SQLite, sqlstore.Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			ctx := context.Background()
			driver, dsn := "sqlite", "file:"+filepath.Join(t.TempDir(), "reg.db")+"?_pragma=busy_timeout(10000)"
			if d == sqlstore.Postgres {
				driver, dsn = "pgx", brokertest.URL(t, "postgres")
			}
			db, err := sql.Open(driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			table := fmt.Sprintf("reg_%x", rand.Uint64())
			r, err := bus.NewSQLRegistry(ctx, db, d, table)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Exec(`DROP TABLE "` + table + `"`)
			if _, err := r.Lookup(ctx, "ShipOrder"); !errors.Is(err, message.ErrNotFound) {
				t.Errorf("Lookup before Register: %v, want NotFound", err)
			}
			for range 2 {
				if err := r.Register(ctx, "ShipOrder", "shipping"); err != nil {
					t.Fatalf("Register (again): %v", err)
				}
			}
			if err := r.Register(ctx, "ShipOrder", "warehouse"); !errors.Is(err, message.ErrConflict) {
				t.Errorf("second service: %v, want Conflict", err)
			}
			if s, err := r.Lookup(ctx, "ShipOrder"); err != nil || s != "shipping" {
				t.Errorf("Lookup = %q, %v", s, err)
			}

			// A Bus on it refuses a command nobody registered.
			b := newBus(t, open(t, "mem://"), bus.Options{Prefix: prefix(), Registry: r})
			type Unregistered struct{}
			if err := bus.Send(ctx, b, Unregistered{}); !errors.Is(err, message.ErrNotFound) {
				t.Errorf("Send: %v, want NotFound", err)
			}
		})
	}
	if _, err := bus.NewSQLRegistry(context.Background(), nil, sqlstore.SQLite, ""); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("nil db: %v", err)
	}
}
