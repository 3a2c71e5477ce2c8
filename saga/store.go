package saga

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"regexp"
	"time"

	"github.com/polybus/polybus/eventstore/sqlstore"
	"github.com/polybus/polybus/message"
)

// Dialect is the SQL dialect of a Store's database: package
// eventstore/sqlstore's, so one value configures every store of an
// application.
type Dialect = sqlstore.Dialect

// The dialects.
const (
	// SQLite is SQLite 3.24 or later (modernc.org/sqlite): the default.
	SQLite = sqlstore.SQLite
	// Postgres is PostgreSQL (github.com/jackc/pgx/v5/stdlib).
	Postgres = sqlstore.Postgres
)

// StoreConfig says where a Store keeps its table.
type StoreConfig struct {
	// Dialect of the database. Default SQLite.
	Dialect Dialect
	// Table is the table's name: a letter or underscore, then letters,
	// digits and underscores, at most 50. Default "polybus_sagas".
	Table string
}

// Store keeps saga states in one SQL table (SQLite or PostgreSQL through
// database/sql; it imports no driver): one row per saga, its steps as a
// JSON column, written with an expected version so two writers never
// both win. For SQLite open the database with a busy timeout, WAL and
// _txlock=immediate (see package eventstore/sqlstore).
type Store struct {
	db    *sql.DB
	d     Dialect
	table string
	bare  string
}

var tableRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,49}$`)

// NewStore returns a Store on db. Call Migrate to create its table.
// Errors: InvalidArgument for a nil db, an unknown dialect or a bad table
// name.
func NewStore(db *sql.DB, cfg StoreConfig) (*Store, error) {
	const op = "saga: new store"
	if db == nil {
		return nil, message.Errorf(message.InvalidArgument, op, "nil database")
	}
	if cfg.Dialect == 0 {
		cfg.Dialect = SQLite
	}
	if cfg.Dialect != SQLite && cfg.Dialect != Postgres {
		return nil, message.Errorf(message.InvalidArgument, op, "unknown dialect %d", cfg.Dialect)
	}
	if cfg.Table == "" {
		cfg.Table = "polybus_sagas"
	}
	if !tableRE.MatchString(cfg.Table) {
		return nil, message.Errorf(message.InvalidArgument, op, "table name %q: a letter or underscore, then letters, digits or underscores, at most 50", cfg.Table)
	}
	return &Store{db: db, d: cfg.Dialect, table: `"` + cfg.Table + `"`, bare: cfg.Table}, nil
}

// Table returns the table's name, unquoted.
func (s *Store) Table() string { return s.bare }

// Migrate creates the table and its index when they do not exist.
func (s *Store) Migrate(ctx context.Context) error {
	blob := "BYTEA"
	if s.d == SQLite {
		blob = "BLOB"
	}
	for _, q := range []string{
		"CREATE TABLE IF NOT EXISTS " + s.table + " (id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, step BIGINT NOT NULL" +
			", version BIGINT NOT NULL, data " + blob + " NOT NULL, steps TEXT NOT NULL, error TEXT NOT NULL" +
			", created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL)",
		`CREATE INDEX IF NOT EXISTS "` + s.bare + `_status" ON ` + s.table + " (status, updated_ms)",
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			return message.Wrap(message.Unavailable, "saga: migrate", err)
		}
	}
	return nil
}

const columns = "id, name, status, step, version, data, steps, error, created_ms, updated_ms"

// Create inserts st (with Version 1) unless a saga with its ID exists,
// and reports whether it did.
func (s *Store) Create(ctx context.Context, st *State) (bool, error) {
	const op = "saga: create"
	steps, err := json.Marshal(st.Steps)
	if err != nil {
		return false, message.Errorf(message.InvalidArgument, op, "encoding steps: %w", err)
	}
	st.Version = 1
	res, err := s.db.ExecContext(ctx, "INSERT INTO "+s.table+" ("+columns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
		st.ID, st.Name, string(st.Status), st.Step, st.Version, []byte(st.Data), string(steps), st.Error, st.Created.UnixMilli(), st.Updated.UnixMilli())
	if err != nil {
		return false, message.Wrap(message.Unavailable, op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, message.Wrap(message.Unavailable, op, err)
	}
	return n == 1, nil
}

// Save writes st if the stored version is still st.Version, and then
// increments st.Version. Errors: Conflict when another save came first
// (or the saga does not exist).
func (s *Store) Save(ctx context.Context, st *State) error {
	const op = "saga: save"
	steps, err := json.Marshal(st.Steps)
	if err != nil {
		return message.Errorf(message.InvalidArgument, op, "encoding steps: %w", err)
	}
	res, err := s.db.ExecContext(ctx, "UPDATE "+s.table+" SET status = $1, step = $2, version = $3, data = $4, steps = $5, error = $6, updated_ms = $7 WHERE id = $8 AND version = $9",
		string(st.Status), st.Step, st.Version+1, []byte(st.Data), string(steps), st.Error, st.Updated.UnixMilli(), st.ID, st.Version)
	if err != nil {
		return message.Wrap(message.Unavailable, op, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return message.Wrap(message.Unavailable, op, err)
	} else if n != 1 {
		return message.Errorf(message.Conflict, op, "saga %s changed since version %d", st.ID, st.Version)
	}
	st.Version++
	return nil
}

// Load returns the saga id. Errors: NotFound when there is none.
func (s *Store) Load(ctx context.Context, id string) (*State, error) {
	sts, err := s.query(ctx, "SELECT "+columns+" FROM "+s.table+" WHERE id = $1", id)
	if err != nil {
		return nil, err
	}
	if len(sts) == 0 {
		return nil, message.Errorf(message.NotFound, "saga: load", "no saga %q", id)
	}
	return sts[0], nil
}

// Filter selects sagas for List. Its zero value selects every saga.
type Filter struct {
	// Name, when set, selects sagas of that Definition.
	Name string
	// Status, when set, selects sagas of that status.
	Status Status
	// Limit, when positive, returns at most that many.
	Limit int
}

// List returns the sagas that f selects, the most recently updated
// first.
func (s *Store) List(ctx context.Context, f Filter) ([]*State, error) {
	q := "SELECT " + columns + " FROM " + s.table + " WHERE ($1 = '' OR name = $1) AND ($2 = '' OR status = $2) ORDER BY updated_ms DESC, id"
	args := []any{f.Name, string(f.Status)}
	if f.Limit > 0 {
		q += " LIMIT $3"
		args = append(args, f.Limit)
	}
	return s.query(ctx, q, args...)
}

func (s *Store) query(ctx context.Context, q string, args ...any) ([]*State, error) {
	const op = "saga: read"
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, message.Wrap(message.Unavailable, op, err)
	}
	defer rows.Close()
	var out []*State
	for rows.Next() {
		var st State
		var status, steps string
		var data []byte
		var created, updated int64
		if err := rows.Scan(&st.ID, &st.Name, &status, &st.Step, &st.Version, &data, &steps, &st.Error, &created, &updated); err != nil {
			return nil, message.Wrap(message.Unavailable, op, err)
		}
		st.Status, st.Data = Status(status), json.RawMessage(data)
		st.Created, st.Updated = time.UnixMilli(created), time.UnixMilli(updated)
		if err := json.Unmarshal([]byte(steps), &st.Steps); err != nil {
			return nil, message.Errorf(message.Unknown, op, "saga %s: decoding steps: %w", st.ID, err)
		}
		out = append(out, &st)
	}
	if err := rows.Err(); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, message.Wrap(message.Unavailable, op, err)
	}
	return out, nil
}
