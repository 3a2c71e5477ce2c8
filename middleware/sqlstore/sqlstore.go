// Package sqlstore keeps the state of the dedupe and ordering middlewares in
// a SQL database, PostgreSQL or SQLite, through database/sql: the dedupe
// store, the ordering store, the publisher's sequence counter, and
// TxDedupe, which commits a handler's database work and its processed-mark
// in one transaction.
//
// The package imports no database driver: open the *sql.DB with the driver
// of your choice and say which dialect it speaks. Tested with
// github.com/jackc/pgx/v5/stdlib (driver "pgx") and modernc.org/sqlite
// (driver "sqlite", pure Go).
//
//	db, _ := sql.Open("pgx", "postgres://app@db/app")
//	store, _ := sqlstore.NewDedupeStore(db, sqlstore.Config{Dialect: sqlstore.Postgres})
//	_ = store.Migrate(ctx)
//	dedupe, _ := middleware.Dedupe(middleware.DedupeConfig{Store: store})
//
// # Semantics
//
// Each store keeps one table, created by its Migrate method (CREATE TABLE IF
// NOT EXISTS: run it at startup, or create the table yourself from the
// statements Migrate runs). Every write is a single atomic statement
// (INSERT ... ON CONFLICT), so stores are safe for concurrent use by many
// goroutines and processes. Times are the application's clock in Unix
// milliseconds; keep the clocks of processes sharing a table in step to
// well within a lease.
//
// Expired rows of the dedupe table are ignored by every query and deleted by
// DedupeStore.Purge: call it now and then (hourly, say). Sequence numbers in
// SQL are signed 64-bit: numbers above math.MaxInt64 are refused.
//
// For SQLite, open the database with a busy timeout, so that concurrent
// writers wait for each other instead of failing with SQLITE_BUSY, and WAL
// journaling: "file:app.db?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)".
// With TxDedupe add "&_txlock=immediate", so that each transaction takes
// the write lock when it begins.
//
// # Errors
//
// A bad configuration (unknown dialect, invalid table name, nil database)
// is message.ErrInvalidArgument. Database failures are returned as they
// are; the middlewares treat them as transient (message.ErrUnavailable).
package sqlstore

import (
	"context"
	"database/sql"
	"regexp"
	"strconv"
	"strings"

	"github.com/polybus/polybus/message"
)

// Dialect is the SQL dialect of a database.
type Dialect int

const (
	// Postgres is PostgreSQL 9.5 or later (for ON CONFLICT).
	Postgres Dialect = iota + 1
	// SQLite is SQLite 3.35 or later (for RETURNING).
	SQLite
)

// String returns "postgres" or "sqlite".
func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case SQLite:
		return "sqlite"
	}
	return "Dialect(" + strconv.Itoa(int(d)) + ")"
}

// Config says where a store keeps its table.
type Config struct {
	// Dialect of the database. Required.
	Dialect Dialect
	// Table is the table's name: a letter or underscore, then letters,
	// digits and underscores, at most 55 characters, optionally qualified
	// by a schema ("polybus.dedupe"). It is quoted, so its case is kept.
	// Default: each store's own (polybus_dedupe, polybus_ordering,
	// polybus_sequences).
	Table string
}

// identPart is one part of a table name. The length limit leaves room for
// an index name derived from it within PostgreSQL's 63 bytes.
var identPart = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,54}$`)

// table is a validated, quoted table name.
type table struct {
	d Dialect
	// schema and name are quoted identifiers; schema may be "".
	schema, name string
	bare         string // unquoted name, for index names
}

func newTable(db *sql.DB, cfg Config, def, op string) (table, error) {
	if db == nil {
		return table{}, message.Errorf(message.InvalidArgument, op, "nil database")
	}
	if cfg.Dialect != Postgres && cfg.Dialect != SQLite {
		return table{}, message.Errorf(message.InvalidArgument, op, "unknown dialect %d", cfg.Dialect)
	}
	name := cfg.Table
	if name == "" {
		name = def
	}
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return table{}, message.Errorf(message.InvalidArgument, op, "table name %q has more than one dot", name)
	}
	for _, p := range parts {
		if !identPart.MatchString(p) {
			return table{}, message.Errorf(message.InvalidArgument, op,
				"table name %q: each part must be a letter or underscore followed by letters, digits or underscores, at most 55 in all", name)
		}
	}
	t := table{d: cfg.Dialect, name: `"` + parts[len(parts)-1] + `"`, bare: parts[len(parts)-1]}
	if len(parts) == 2 {
		t.schema = `"` + parts[0] + `"`
	}
	return t, nil
}

// String is the table's qualified, quoted name, for SQL text.
func (t table) String() string {
	if t.schema == "" {
		return t.name
	}
	return t.schema + "." + t.name
}

// index returns the statement that creates an index on the table. The two
// dialects put a schema in different places: PostgreSQL creates the index
// in its table's schema, SQLite wants the schema on the index's name.
func (t table) index(suffix, columns string) string {
	idx := `"` + t.bare + "_" + suffix + `"`
	if t.d == SQLite {
		if t.schema != "" {
			idx = t.schema + "." + idx
		}
		return "CREATE INDEX IF NOT EXISTS " + idx + " ON " + t.name + " (" + columns + ")"
	}
	return "CREATE INDEX IF NOT EXISTS " + idx + " ON " + t.String() + " (" + columns + ")"
}

// execAll runs statements in order.
func execAll(ctx context.Context, db *sql.DB, stmts ...string) error {
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// maxSeq is the largest sequence number a BIGINT column holds.
const maxSeq = 1<<63 - 1

func checkSeq(op string, n uint64) error {
	if n > maxSeq {
		return message.Errorf(message.InvalidArgument, op, "sequence number %d is over the SQL limit %d", n, uint64(maxSeq))
	}
	return nil
}
