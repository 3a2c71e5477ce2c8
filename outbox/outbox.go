// Package outbox is the transactional outbox: messages recorded in the
// application's own database transaction, with its other writes (an event
// store append, a row of its own), and a relay that publishes them to any
// polybus broker afterwards, at least once, in order per key, with their
// IDs kept so that consumers can dedupe.
//
//	ob, _ := outbox.New(db, outbox.Config{Dialect: outbox.SQLite})
//	_ = ob.Migrate(ctx)
//	tx, _ := db.BeginTx(ctx, nil)
//	// ... the application's own writes in tx ...
//	_ = ob.Add(ctx, tx, "orders", message.New(payload))
//	_ = tx.Commit()
//	relay, _ := ob.Relay(outbox.RelayConfig{Publisher: client.Publisher()})
//	go relay.Run(ctx)
//
// # Semantics
//
// One table, created by Migrate. Add inserts a row per message in the
// caller's transaction: the message exists for the relay exactly when the
// transaction commits. Add stamps an empty ID (UUIDv7) and Time.
//
// A relay loops: claim a batch, publish it, mark it published. Claiming
// takes, among the oldest 10×BatchSize unpublished rows, those that are
// the oldest unpublished row of their key (its head) and carry no other
// relay's live lease, and leases the key's
// unpublished rows in order (up to BatchSize rows in all). On PostgreSQL
// the heads are locked FOR UPDATE SKIP LOCKED, so concurrent relays claim
// different keys without waiting on each other; on SQLite the claiming
// transaction holds the database's write lock (open it with
// _txlock=immediate), which serialises claims. A key is held by one relay
// at a time, and its rows are published in the order they were added, one
// Publish call per run of rows for one topic, each call waited for before
// the next; so messages of a key reach the broker in order. Messages with
// no Key are each their own key.
//
// Published rows are marked with the time and deleted by Prune (the relay
// prunes rows older than Retention every PruneEvery). A relay that dies
// mid-batch leaves its lease to expire (Lease): the next relay publishes
// the batch again, from the head of each key: nothing is lost, and the
// repeats carry the same IDs. A relay that outlives its lease (a publish
// slower than Lease) may also be repeated by another; keep Lease well
// above the broker's publish time.
//
// # Errors
//
// Bad configuration and arguments are message.ErrInvalidArgument; database
// failures are message.ErrUnavailable; a failed Publish is returned as the
// publisher returned it, and its rows are retried on the next claim.
package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"regexp"
	"strconv"
	"time"

	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/message"
)

// Dialect is the SQL dialect of a database.
type Dialect int

const (
	// Postgres is PostgreSQL 9.5 or later (for SKIP LOCKED).
	Postgres Dialect = iota + 1
	// SQLite is SQLite 3.35 or later.
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

// Config says where the outbox keeps its table.
type Config struct {
	// Dialect of the database. Required.
	Dialect Dialect
	// Table is the table's name: a letter or underscore, then letters,
	// digits and underscores, at most 50. Default "polybus_outbox".
	Table string
	// Now is the clock of Add, the relay's leases and Prune. Default
	// time.Now.
	Now func() time.Time
}

var tableRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,49}$`)

// Outbox is a table of messages waiting to be published.
type Outbox struct {
	db    *sql.DB
	d     Dialect
	bare  string
	table string
	now   func() time.Time
}

// New returns an outbox on db. It does not touch the database: call
// Migrate to create the table.
func New(db *sql.DB, cfg Config) (*Outbox, error) {
	const op = "outbox: new"
	if db == nil {
		return nil, message.Errorf(message.InvalidArgument, op, "nil database")
	}
	if cfg.Dialect != Postgres && cfg.Dialect != SQLite {
		return nil, message.Errorf(message.InvalidArgument, op, "unknown dialect %d", cfg.Dialect)
	}
	if cfg.Table == "" {
		cfg.Table = "polybus_outbox"
	}
	if !tableRE.MatchString(cfg.Table) {
		return nil, message.Errorf(message.InvalidArgument, op, "table name %q: a letter or underscore, then letters, digits or underscores, at most 50", cfg.Table)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Outbox{db: db, d: cfg.Dialect, bare: cfg.Table, table: `"` + cfg.Table + `"`, now: cfg.Now}, nil
}

// DB returns the outbox's database.
func (o *Outbox) DB() *sql.DB { return o.db }

// Table returns the table's name, unquoted.
func (o *Outbox) Table() string { return o.bare }

// MigrateStatements returns the statements Migrate runs.
func (o *Outbox) MigrateStatements() []string {
	id, blob := "BIGSERIAL PRIMARY KEY", "BYTEA"
	if o.d == SQLite {
		id, blob = "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"
	}
	return []string{
		"CREATE TABLE IF NOT EXISTS " + o.table + " (id " + id + ", msg_id TEXT NOT NULL, topic TEXT NOT NULL" +
			", msg_key TEXT NOT NULL, order_key TEXT NOT NULL, payload " + blob + " NOT NULL, metadata TEXT NOT NULL" +
			", msg_time BIGINT NOT NULL, lease_owner TEXT, lease_until BIGINT, published_ms BIGINT)",
		`CREATE INDEX IF NOT EXISTS "` + o.bare + `_pending" ON ` + o.table + " (order_key, id) WHERE published_ms IS NULL",
		`CREATE INDEX IF NOT EXISTS "` + o.bare + `_pending_id" ON ` + o.table + " (id) WHERE published_ms IS NULL",
		`CREATE INDEX IF NOT EXISTS "` + o.bare + `_published" ON ` + o.table + " (published_ms) WHERE published_ms IS NOT NULL",
	}
}

// Migrate creates the table and its indexes when they do not exist.
func (o *Outbox) Migrate(ctx context.Context) error {
	for _, s := range o.MigrateStatements() {
		if _, err := o.db.ExecContext(ctx, s); err != nil {
			return message.Wrap(message.Unavailable, "outbox: migrate", err)
		}
	}
	return nil
}

// noKeyPrefix makes each keyless message its own ordering key.
const noKeyPrefix = "polybus-nokey:"

// Add records msgs for topic in tx, the caller's transaction: they are
// published once tx commits, and never if it rolls back. Empty IDs and
// times are stamped in place.
func (o *Outbox) Add(ctx context.Context, tx *sql.Tx, topic string, msgs ...*message.Message) error {
	const op = "outbox: add"
	if tx == nil {
		return message.Errorf(message.InvalidArgument, op, "nil transaction")
	}
	if topic == "" {
		return message.Errorf(message.InvalidArgument, op, "empty topic")
	}
	for i, m := range msgs {
		if m == nil {
			return message.Errorf(message.InvalidArgument, op, "nil message at %d", i)
		}
		for k := range m.Metadata {
			if k == "" {
				return message.Errorf(message.InvalidArgument, op, "message %d: empty metadata key", i)
			}
		}
	}
	stmt, err := tx.PrepareContext(ctx, "INSERT INTO "+o.table+
		" (msg_id, topic, msg_key, order_key, payload, metadata, msg_time) VALUES ($1, $2, $3, $4, $5, $6, $7)")
	if err != nil {
		return message.Wrap(message.Unavailable, op, err)
	}
	defer stmt.Close()
	for _, m := range msgs {
		if m.ID == "" {
			m.ID = message.NewID()
		}
		if m.Time.IsZero() {
			m.Time = o.now()
		}
		md := "{}"
		if len(m.Metadata) > 0 {
			b, err := json.Marshal(m.Metadata)
			if err != nil {
				return message.Errorf(message.InvalidArgument, op, "metadata: %w", err)
			}
			md = string(b)
		}
		ok := m.Key
		if ok == "" {
			ok = noKeyPrefix + m.ID
		}
		payload := m.Payload
		if payload == nil {
			payload = []byte{}
		}
		if _, err := stmt.ExecContext(ctx, m.ID, topic, m.Key, ok, payload, md, m.Time.UnixNano()); err != nil {
			return message.Wrap(message.Unavailable, op, err)
		}
	}
	return nil
}

// AppendEvents appends events to stream with store.AppendTx and records a
// message per event for topic (eventstore.ToMessage: ID = event ID, Key =
// stream), all in tx: the events and their messages commit together. The
// store's driver must be an eventstore.TxDriver on tx's database.
func (o *Outbox) AppendEvents(ctx context.Context, tx *sql.Tx, store *eventstore.Store, stream string,
	expected eventstore.ExpectedVersion, topic string, events ...*eventstore.Event) (eventstore.AppendResult, error) {
	if store == nil {
		return eventstore.AppendResult{}, message.Errorf(message.InvalidArgument, "outbox: append events", "nil store")
	}
	res, err := store.AppendTx(ctx, tx, stream, expected, events...)
	if err != nil || res.Duplicate {
		return res, err
	}
	msgs := make([]*message.Message, len(events))
	for i, e := range events {
		msgs[i] = eventstore.ToMessage(e)
	}
	return res, o.Add(ctx, tx, topic, msgs...)
}

// Prune deletes the rows published before olderThan ago and returns how
// many it deleted.
func (o *Outbox) Prune(ctx context.Context, olderThan time.Duration) (int64, error) {
	res, err := o.db.ExecContext(ctx, "DELETE FROM "+o.table+" WHERE published_ms IS NOT NULL AND published_ms < $1",
		o.now().Add(-olderThan).UnixMilli())
	if err != nil {
		return 0, message.Wrap(message.Unavailable, "outbox: prune", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// Stats counts the outbox's rows.
type Stats struct {
	// Pending rows are not yet published; Published are, and not yet
	// pruned.
	Pending, Published int64
	// OldestPending is when the oldest pending message was added (its
	// Time), zero when none is pending.
	OldestPending time.Time
}

// Stats returns the outbox's row counts.
func (o *Outbox) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	var oldest sql.NullInt64
	err := o.db.QueryRowContext(ctx, "SELECT COALESCE(SUM(CASE WHEN published_ms IS NULL THEN 1 ELSE 0 END), 0)"+
		", COALESCE(SUM(CASE WHEN published_ms IS NULL THEN 0 ELSE 1 END), 0)"+
		", MIN(CASE WHEN published_ms IS NULL THEN msg_time END) FROM "+o.table).Scan(&s.Pending, &s.Published, &oldest)
	if err != nil {
		return s, message.Wrap(message.Unavailable, "outbox: stats", err)
	}
	if oldest.Valid {
		s.OldestPending = time.Unix(0, oldest.Int64)
	}
	return s, nil
}
