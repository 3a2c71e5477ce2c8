package sqlstore

import (
	"context"
	"database/sql"
	"errors"

	"github.com/polybus/polybus/message"
)

// OrderingStore is a middleware.OrderingStore in a SQL table: the last
// sequence number handled per ordering key, shared by the processes of a
// consumer group and kept across restarts. Its rows are
//
//	ord_key   TEXT PRIMARY KEY
//	last_seq  BIGINT            the last number handled
type OrderingStore struct {
	db *sql.DB
	t  table

	lastSQL, advanceSQL string
}

// NewOrderingStore returns a store over db; cfg.Table defaults to
// "polybus_ordering". It does not touch the database: call Migrate.
func NewOrderingStore(db *sql.DB, cfg Config) (*OrderingStore, error) {
	t, err := newTable(db, cfg, "polybus_ordering", "sqlstore: ordering store")
	if err != nil {
		return nil, err
	}
	return &OrderingStore{
		db: db, t: t,
		lastSQL: "SELECT last_seq FROM " + t.String() + " WHERE ord_key = $1",
		// The WHERE keeps the number from going back when consumers race.
		advanceSQL: "INSERT INTO " + t.String() + " (ord_key, last_seq) VALUES ($1, $2)" +
			" ON CONFLICT (ord_key) DO UPDATE SET last_seq = excluded.last_seq WHERE " + t.name + ".last_seq < excluded.last_seq",
	}, nil
}

// Table returns the table's quoted, qualified name.
func (s *OrderingStore) Table() string { return s.t.String() }

// Migrate creates the table if it does not exist.
func (s *OrderingStore) Migrate(ctx context.Context) error {
	return execAll(ctx, s.db, "CREATE TABLE IF NOT EXISTS "+s.t.String()+" (ord_key TEXT PRIMARY KEY, last_seq BIGINT NOT NULL)")
}

// Last implements middleware.OrderingStore.
func (s *OrderingStore) Last(ctx context.Context, key string) (uint64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, s.lastSQL, key).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return uint64(n), nil
}

// Advance implements middleware.OrderingStore. Numbers above
// math.MaxInt64 are refused with message.ErrInvalidArgument.
func (s *OrderingStore) Advance(ctx context.Context, key string, seq uint64) error {
	if err := checkSeq("sqlstore: advance", seq); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.advanceSQL, key, int64(seq))
	return err
}

// SequenceCounter is a middleware.SequenceCounter in a SQL table, so that
// publishers keep their numbers across restarts and several publishers can
// stamp one key. Its rows are
//
//	seq_key   TEXT PRIMARY KEY
//	last_seq  BIGINT            the last number handed out
type SequenceCounter struct {
	db *sql.DB
	t  table

	reserveSQL string
}

// NewSequenceCounter returns a counter over db; cfg.Table defaults to
// "polybus_sequences". It does not touch the database: call Migrate.
func NewSequenceCounter(db *sql.DB, cfg Config) (*SequenceCounter, error) {
	t, err := newTable(db, cfg, "polybus_sequences", "sqlstore: sequence counter")
	if err != nil {
		return nil, err
	}
	return &SequenceCounter{
		db: db, t: t,
		// One statement reserves the range: concurrent reservations
		// serialise on the row and get disjoint ranges.
		reserveSQL: "INSERT INTO " + t.String() + " (seq_key, last_seq) VALUES ($1, $2)" +
			" ON CONFLICT (seq_key) DO UPDATE SET last_seq = " + t.name + ".last_seq + excluded.last_seq RETURNING last_seq",
	}, nil
}

// Table returns the table's quoted, qualified name.
func (c *SequenceCounter) Table() string { return c.t.String() }

// Migrate creates the table if it does not exist.
func (c *SequenceCounter) Migrate(ctx context.Context) error {
	return execAll(ctx, c.db, "CREATE TABLE IF NOT EXISTS "+c.t.String()+" (seq_key TEXT PRIMARY KEY, last_seq BIGINT NOT NULL)")
}

// Reserve implements middleware.SequenceCounter.
func (c *SequenceCounter) Reserve(ctx context.Context, key string, n uint64) (uint64, error) {
	const op = "sqlstore: reserve"
	if n == 0 {
		return 0, message.Errorf(message.InvalidArgument, op, "reserve of 0 numbers")
	}
	if err := checkSeq(op, n); err != nil {
		return 0, err
	}
	var last int64
	if err := c.db.QueryRowContext(ctx, c.reserveSQL, key, int64(n)).Scan(&last); err != nil {
		return 0, err
	}
	return uint64(last) - n + 1, nil
}
