// Package sqlstore is the event store's driver for SQL databases through
// database/sql: SQLite (the zero-set-up default, modernc.org/sqlite) and
// PostgreSQL (github.com/jackc/pgx/v5/stdlib). It imports no database
// driver: open the *sql.DB with the driver of your choice.
//
//	db, _ := sql.Open("sqlite", "file:events.db?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
//	d, _ := sqlstore.New(db, sqlstore.Config{Dialect: sqlstore.SQLite})
//	_ = d.Migrate(ctx)
//	store, _ := eventstore.New(d, eventstore.Options{})
//
// # Semantics
//
// Three tables, created by Migrate: events (one row per event, unique by
// event ID and by stream and version), streams (one row per stream, its
// version: the row an append locks) and snapshots. An append runs in one
// transaction: it locks the stream's row (SELECT ... FOR UPDATE on
// PostgreSQL; on SQLite the transaction's write lock, which serialises all
// writers), checks idempotency and the expected version, inserts the events
// and moves the stream's version. So of concurrent appenders expecting the
// same version exactly one wins; the others get *eventstore.ConflictError.
//
// The global log is ordered by (commit, seq). On SQLite, commit is 0 and
// seq the AUTOINCREMENT row ID: writers are serialised by the database
// lock, so a row ID is assigned only after every smaller one has committed
// or rolled back, and a reader never sees a higher one before a lower one.
// On PostgreSQL a sequence is not enough (transactions take numbers and
// commit in another order), so each event records its transaction's ID
// (pg_current_xact_id) as commit, and a reader reads only events whose
// transaction ID is below the xmin of its snapshot
// (pg_snapshot_xmin(pg_current_snapshot())): every transaction below xmin
// has ended, so nothing can commit later below it. Events of one
// transaction share its ID and are ordered by seq. A transaction left open
// holds every reader of the global log back (never makes one skip): keep
// transactions that append short.
//
// For SQLite open the database with a busy timeout, WAL journaling and
// _txlock=immediate, as above, so that appenders queue on the write lock
// rather than fail with SQLITE_BUSY.
//
// # Errors
//
// A bad configuration is message.ErrInvalidArgument; database failures
// are message.ErrUnavailable with the driver's error reachable by
// errors.As; context errors are returned as they are.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/message"
)

// Dialect is the SQL dialect of a database.
type Dialect int

const (
	// Postgres is PostgreSQL 13 or later (for pg_current_xact_id).
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

// Config says where the driver keeps its tables.
type Config struct {
	// Dialect of the database. Required.
	Dialect Dialect
	// Prefix of the table names: Prefix+"events", Prefix+"streams",
	// Prefix+"snapshots". A letter or underscore, then letters, digits and
	// underscores, at most 40. Default "polybus_".
	Prefix string
}

var prefixRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,39}$`)

// Driver is the SQL event store driver. It implements
// eventstore.TxDriver.
type Driver struct {
	db      *sql.DB
	d       Dialect
	events  string
	streams string
	snaps   string
	prefix  string
}

var _ eventstore.TxDriver = (*Driver)(nil)

// New returns a driver on db. It does not touch the database: call
// Migrate to create the tables.
func New(db *sql.DB, cfg Config) (*Driver, error) {
	const op = "eventstore/sqlstore: new"
	if db == nil {
		return nil, message.Errorf(message.InvalidArgument, op, "nil database")
	}
	if cfg.Dialect != Postgres && cfg.Dialect != SQLite {
		return nil, message.Errorf(message.InvalidArgument, op, "unknown dialect %d", cfg.Dialect)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "polybus_"
	}
	if !prefixRE.MatchString(cfg.Prefix) {
		return nil, message.Errorf(message.InvalidArgument, op, "table prefix %q: a letter or underscore, then letters, digits or underscores, at most 40", cfg.Prefix)
	}
	p := cfg.Prefix
	return &Driver{db: db, d: cfg.Dialect, prefix: p,
		events: `"` + p + `events"`, streams: `"` + p + `streams"`, snaps: `"` + p + `snapshots"`}, nil
}

// DB returns the driver's database.
func (d *Driver) DB() *sql.DB { return d.db }

// Dialect returns the driver's dialect.
func (d *Driver) Dialect() Dialect { return d.d }

// Tables returns the names of the events, streams and snapshots tables,
// unquoted.
func (d *Driver) Tables() (events, streams, snapshots string) {
	return d.prefix + "events", d.prefix + "streams", d.prefix + "snapshots"
}

// MigrateStatements returns the statements Migrate runs.
func (d *Driver) MigrateStatements() []string {
	seq, blob, tx := "BIGSERIAL PRIMARY KEY", "BYTEA", "BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)"
	if d.d == SQLite {
		seq, blob, tx = "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB", "INTEGER NOT NULL DEFAULT 0"
	}
	return []string{
		"CREATE TABLE IF NOT EXISTS " + d.events + " (seq " + seq + ", tx " + tx +
			", event_id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL, version BIGINT NOT NULL, type TEXT NOT NULL" +
			", data " + blob + " NOT NULL, metadata TEXT NOT NULL, time_ms BIGINT NOT NULL, UNIQUE (stream, version))",
		`CREATE INDEX IF NOT EXISTS "` + d.prefix + `events_global" ON ` + d.events + " (tx, seq)",
		"CREATE TABLE IF NOT EXISTS " + d.streams + " (stream TEXT PRIMARY KEY, version BIGINT NOT NULL)",
		"CREATE TABLE IF NOT EXISTS " + d.snaps + " (stream TEXT NOT NULL, version BIGINT NOT NULL, type TEXT NOT NULL" +
			", data " + blob + " NOT NULL, time_ms BIGINT NOT NULL, PRIMARY KEY (stream, version))",
	}
}

// Migrate creates the tables and indexes when they do not exist.
func (d *Driver) Migrate(ctx context.Context) error {
	for _, s := range d.MigrateStatements() {
		if _, err := d.db.ExecContext(ctx, s); err != nil {
			return wrap("eventstore/sqlstore: migrate", err)
		}
	}
	return nil
}

func wrap(op string, err error) error {
	var ce *eventstore.ConflictError
	var me *message.Error
	if errors.As(err, &ce) || errors.As(err, &me) {
		return err
	}
	return message.Wrap(message.Unavailable, op, err)
}

// Append appends recs in a transaction of its own.
func (d *Driver) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, recs []eventstore.Record) (res eventstore.AppendResult, err error) {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return res, wrap("eventstore/sqlstore: append", err)
	}
	res, err = d.AppendTx(ctx, tx, stream, expected, recs)
	if err != nil {
		_ = tx.Rollback()
		return res, err
	}
	if err := tx.Commit(); err != nil {
		return eventstore.AppendResult{}, wrap("eventstore/sqlstore: commit", err)
	}
	return res, nil
}

// AppendTx appends recs inside tx; the caller commits it.
func (d *Driver) AppendTx(ctx context.Context, tx *sql.Tx, stream string, expected eventstore.ExpectedVersion, recs []eventstore.Record) (res eventstore.AppendResult, err error) {
	const op = "eventstore/sqlstore: append"
	defer func() { err = wrap(op, err) }()
	if _, err := tx.ExecContext(ctx, "INSERT INTO "+d.streams+" (stream, version) VALUES ($1, 0) ON CONFLICT (stream) DO NOTHING", stream); err != nil {
		return res, err
	}
	lock := ""
	if d.d == Postgres {
		lock = " FOR UPDATE"
	}
	var version int64
	if err := tx.QueryRowContext(ctx, "SELECT version FROM "+d.streams+" WHERE stream = $1"+lock, stream).Scan(&version); err != nil {
		return res, err
	}
	if dup, ok, err := d.duplicate(ctx, tx, stream, recs); err != nil || ok {
		return dup, err
	}
	if !expected.Holds(version) {
		return res, &eventstore.ConflictError{Stream: stream, Expected: expected, Actual: version}
	}
	// Multi-row inserts, in chunks under both databases' parameter
	// limits. Rows of one statement take their seq in VALUES order, so a
	// stream's events are in version order in the global log too.
	const chunk = 500
	for start := 0; start < len(recs); start += chunk {
		part := recs[start:min(start+chunk, len(recs))]
		var sb strings.Builder
		sb.WriteString("INSERT INTO " + d.events + " (event_id, stream, version, type, data, metadata, time_ms) VALUES ")
		args := make([]any, 0, 7*len(part))
		for i, r := range part {
			md, err := encodeMD(r.Metadata)
			if err != nil {
				return res, err
			}
			data := r.Data
			if data == nil {
				data = []byte{}
			}
			if i > 0 {
				sb.WriteString(", ")
			}
			n := len(args)
			sb.WriteString("(")
			for k := 1; k <= 7; k++ {
				if k > 1 {
					sb.WriteString(", ")
				}
				sb.WriteString("$" + strconv.Itoa(n+k))
			}
			sb.WriteString(")")
			args = append(args, r.ID, stream, version+int64(start+i)+1, r.Type, data, md, r.Time.UnixMilli())
		}
		sb.WriteString(" RETURNING seq, tx")
		rows, err := tx.QueryContext(ctx, sb.String(), args...)
		if err != nil {
			return res, err
		}
		for rows.Next() {
			var seq, txid int64
			if err := rows.Scan(&seq, &txid); err != nil {
				rows.Close()
				return res, err
			}
			if p := (eventstore.Position{Commit: uint64(txid), Seq: seq}); res.Position.Less(p) {
				res.Position = p
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return res, err
		}
	}
	res.Version = version + int64(len(recs))
	if _, err := tx.ExecContext(ctx, "UPDATE "+d.streams+" SET version = $1 WHERE stream = $2", res.Version, stream); err != nil {
		return res, err
	}
	return res, nil
}

// duplicate reports whether recs are all in stream already, in order.
func (d *Driver) duplicate(ctx context.Context, tx *sql.Tx, stream string, recs []eventstore.Record) (eventstore.AppendResult, bool, error) {
	var res eventstore.AppendResult
	args := make([]any, len(recs))
	ph := make([]string, len(recs))
	for i, r := range recs {
		args[i] = r.ID
		ph[i] = "$" + strconv.Itoa(i+1)
	}
	rows, err := tx.QueryContext(ctx, "SELECT event_id, stream, version, seq, tx FROM "+d.events+
		" WHERE event_id IN ("+strings.Join(ph, ", ")+")", args...)
	if err != nil {
		return res, false, err
	}
	defer rows.Close()
	type found struct {
		stream    string
		version   int64
		seq, txid int64
	}
	got := map[string]found{}
	for rows.Next() {
		var id string
		var f found
		if err := rows.Scan(&id, &f.stream, &f.version, &f.seq, &f.txid); err != nil {
			return res, false, err
		}
		got[id] = f
	}
	if err := rows.Err(); err != nil {
		return res, false, err
	}
	if len(got) == 0 {
		return res, false, nil
	}
	first, ok := got[recs[0].ID]
	for i, r := range recs {
		f, in := got[r.ID]
		if !ok || !in || f.stream != stream || f.version != first.version+int64(i) {
			return res, false, message.Errorf(message.InvalidArgument, "eventstore/sqlstore: append",
				"event %s is already in stream %q at version %d: a retried append must carry the same events in the same order", r.ID, f.stream, f.version)
		}
		res.Version = f.version
		res.Position = eventstore.Position{Commit: uint64(f.txid), Seq: f.seq}
	}
	res.Duplicate = true
	return res, true, nil
}

func encodeMD(md message.Metadata) (string, error) {
	if len(md) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(md)
	return string(b), err
}

const cols = "event_id, stream, version, seq, tx, type, data, metadata, time_ms"

func scanRecords(rows *sql.Rows) ([]eventstore.Record, error) {
	defer rows.Close()
	var out []eventstore.Record
	for rows.Next() {
		var r eventstore.Record
		var seq, txid, ms int64
		var md string
		if err := rows.Scan(&r.ID, &r.Stream, &r.Version, &seq, &txid, &r.Type, &r.Data, &md, &ms); err != nil {
			return nil, err
		}
		r.Position = eventstore.Position{Commit: uint64(txid), Seq: seq}
		r.Time = time.UnixMilli(ms).UTC()
		if md != "{}" && md != "" {
			if err := json.Unmarshal([]byte(md), &r.Metadata); err != nil {
				return nil, err
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ReadStream reads the events of one stream.
func (d *Driver) ReadStream(ctx context.Context, q eventstore.StreamQuery) ([]eventstore.Record, error) {
	const op = "eventstore/sqlstore: read stream"
	where := []string{"stream = $1"}
	args := []any{q.Stream}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, cond+" $"+strconv.Itoa(len(args)))
	}
	if q.From > 0 {
		if q.Backward {
			add("version <=", q.From)
		} else {
			add("version >=", q.From)
		}
	}
	if q.MaxVersion > 0 {
		add("version <=", q.MaxVersion)
	}
	if !q.Until.IsZero() {
		add("time_ms <=", q.Until.UnixMilli())
	}
	order := " ORDER BY version"
	if q.Backward {
		order += " DESC"
	}
	s := "SELECT " + cols + " FROM " + d.events + " WHERE " + strings.Join(where, " AND ") + order
	if q.Limit > 0 {
		s += " LIMIT " + strconv.Itoa(q.Limit)
	}
	rows, err := d.db.QueryContext(ctx, s, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	recs, err := scanRecords(rows)
	return recs, wrap(op, err)
}

// ReadAll reads the global log after a position, gap-safe (see the
// package documentation).
func (d *Driver) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	const op = "eventstore/sqlstore: read all"
	var s string
	if d.d == Postgres {
		s = "SELECT " + cols + " FROM " + d.events + " WHERE (tx, seq) > ($1, $2)" +
			" AND tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint ORDER BY tx, seq LIMIT $3"
	} else {
		s = "SELECT " + cols + " FROM " + d.events + " WHERE (tx, seq) > ($1, $2) ORDER BY tx, seq LIMIT $3"
	}
	rows, err := d.db.QueryContext(ctx, s, int64(after.Commit), after.Seq, limit)
	if err != nil {
		return nil, wrap(op, err)
	}
	recs, err := scanRecords(rows)
	return recs, wrap(op, err)
}

// SaveSnapshot stores a snapshot (replacing one at the same version).
func (d *Driver) SaveSnapshot(ctx context.Context, s eventstore.SnapshotRecord) error {
	_, err := d.db.ExecContext(ctx, "INSERT INTO "+d.snaps+" (stream, version, type, data, time_ms) VALUES ($1, $2, $3, $4, $5)"+
		" ON CONFLICT (stream, version) DO UPDATE SET type = excluded.type, data = excluded.data, time_ms = excluded.time_ms",
		s.Stream, s.Version, s.Type, s.Data, s.Time.UnixMilli())
	return wrap("eventstore/sqlstore: save snapshot", err)
}

// LoadSnapshot returns the latest snapshot fitting maxVersion and until.
func (d *Driver) LoadSnapshot(ctx context.Context, stream string, maxVersion int64, until time.Time) (eventstore.SnapshotRecord, bool, error) {
	s := eventstore.SnapshotRecord{Stream: stream}
	q := "SELECT version, type, data, time_ms FROM " + d.snaps + " WHERE stream = $1"
	args := []any{stream}
	if maxVersion > 0 {
		args = append(args, maxVersion)
		q += " AND version <= $" + strconv.Itoa(len(args))
	}
	if !until.IsZero() {
		args = append(args, until.UnixMilli())
		q += " AND time_ms <= $" + strconv.Itoa(len(args))
	}
	var ms int64
	err := d.db.QueryRowContext(ctx, q+" ORDER BY version DESC LIMIT 1", args...).Scan(&s.Version, &s.Type, &s.Data, &ms)
	if errors.Is(err, sql.ErrNoRows) {
		return s, false, nil
	}
	if err != nil {
		return s, false, wrap("eventstore/sqlstore: load snapshot", err)
	}
	s.Time = time.UnixMilli(ms).UTC()
	return s, true, nil
}
