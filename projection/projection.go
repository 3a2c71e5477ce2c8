// Package projection builds read models from the event store's global log:
// a projector reads events in order and applies each in a database
// transaction that also moves its checkpoint, so that each event has
// exactly one effect on the read model, across crashes and restarts.
//
//	p, _ := projection.New(projection.Config{
//		Name: "order-list-v1", Store: store, DB: db, Dialect: projection.SQLite,
//		Handle: func(ctx context.Context, tx *sql.Tx, e *eventstore.Event) error { ... write in tx ... },
//	})
//	_ = p.Migrate(ctx)
//	go p.Run(ctx)
//
// # Semantics
//
// A step begins a transaction on Config.DB, reads (and on PostgreSQL locks,
// FOR UPDATE) the projector's checkpoint row, reads up to BatchSize events
// after it from the store (gap-safe: see eventstore.Store.ReadAll), calls
// Handle for each in the transaction, writes the last event's position as
// the checkpoint and commits. The read model's changes and the checkpoint
// commit together or not at all: a crash anywhere before the commit rolls
// both back and the events are applied again from the old checkpoint; a
// crash after it leaves them applied once. Handle must do its work only
// through tx (side effects elsewhere can happen twice). Two projectors of
// one name serialise on the checkpoint row (the write lock on SQLite: open
// it with _txlock=immediate), so each event is still applied once.
//
// Rebuild resets: in one transaction it calls Config.Reset (which clears
// the read model) and deletes the checkpoint; the next steps replay the
// whole log. For a side-by-side rebuild, run a second projector under a new
// Name ("order-list-v2") writing new tables, let it catch up
// (Status.Behind == 0) while the old one serves reads, then switch readers
// to the new tables and stop the old projector.
//
// # Errors
//
// Bad configuration is message.ErrInvalidArgument; database failures are
// message.ErrUnavailable; an error from Handle rolls the batch back and is
// returned (Run reports it to OnError and retries after Interval).
package projection

import (
	"context"
	"database/sql"
	"errors"
	"regexp"
	"strconv"
	"time"

	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/message"
)

// Dialect is the SQL dialect of the read model's database.
type Dialect int

const (
	// Postgres is PostgreSQL 9.5 or later.
	Postgres Dialect = iota + 1
	// SQLite is SQLite 3.24 or later.
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

// Handler applies one event to the read model, through tx only. It must
// not commit or roll back tx.
type Handler func(ctx context.Context, tx *sql.Tx, e *eventstore.Event) error

// Config configures a projector. Name, Store, DB, Dialect and Handle are
// required.
type Config struct {
	// Name identifies the projector's checkpoint. Use a new name for a new
	// version of a read model.
	Name string
	// Store is the event store read.
	Store *eventstore.Store
	// DB holds the read model and the checkpoint.
	DB *sql.DB
	// Dialect is DB's dialect.
	Dialect Dialect
	// Table is the checkpoint table, shared by projectors. Default
	// "polybus_checkpoints".
	Table string
	// Handle applies an event.
	Handle Handler
	// Reset clears the read model for Rebuild, in tx. Default: nothing
	// (Rebuild then only rewinds the checkpoint).
	Reset func(ctx context.Context, tx *sql.Tx) error
	// BatchSize is the most events applied in one transaction. Default 100.
	BatchSize int
	// Interval is how long Run waits when caught up, and after an error.
	// Default 100ms.
	Interval time.Duration
	// OnError, when set, is called with each error Run meets.
	OnError func(error)
	// BeforeCheckpoint, when set, is called after a batch's events were
	// handled and before the checkpoint is written. For tests (a crash
	// between the two).
	BeforeCheckpoint func(last *eventstore.Event)
}

var tableRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,49}$`)

// Projector keeps one read model up to date.
type Projector struct {
	cfg                     Config
	table                   string
	readSQL, upsertSQL      string
	ensureSQL, statusReadSQ string
}

// New returns a projector.
func New(cfg Config) (*Projector, error) {
	const op = "projection: new"
	switch {
	case cfg.Name == "":
		return nil, message.Errorf(message.InvalidArgument, op, "empty name")
	case cfg.Store == nil || cfg.DB == nil || cfg.Handle == nil:
		return nil, message.Errorf(message.InvalidArgument, op, "nil store, database or handler")
	case cfg.Dialect != Postgres && cfg.Dialect != SQLite:
		return nil, message.Errorf(message.InvalidArgument, op, "unknown dialect %d", cfg.Dialect)
	case cfg.BatchSize < 0 || cfg.Interval < 0:
		return nil, message.Errorf(message.InvalidArgument, op, "negative batch size or interval")
	}
	if cfg.Table == "" {
		cfg.Table = "polybus_checkpoints"
	}
	if !tableRE.MatchString(cfg.Table) {
		return nil, message.Errorf(message.InvalidArgument, op, "table name %q: a letter or underscore, then letters, digits or underscores, at most 50", cfg.Table)
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 100
	}
	if cfg.Interval == 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	t := `"` + cfg.Table + `"`
	p := &Projector{cfg: cfg, table: t}
	p.readSQL = "SELECT commit_id, seq FROM " + t + " WHERE name = $1"
	if cfg.Dialect == Postgres {
		p.readSQL += " FOR UPDATE"
	}
	p.upsertSQL = "INSERT INTO " + t + " (name, commit_id, seq, updated_ms) VALUES ($1, $2, $3, $4)" +
		" ON CONFLICT (name) DO UPDATE SET commit_id = excluded.commit_id, seq = excluded.seq, updated_ms = excluded.updated_ms"
	// The row is made first so that there is always a row to lock: two
	// projectors starting together serialise on it.
	p.ensureSQL = "INSERT INTO " + t + " (name, commit_id, seq, updated_ms) VALUES ($1, 0, 0, $2) ON CONFLICT (name) DO NOTHING"
	p.statusReadSQ = "SELECT commit_id, seq FROM " + t + " WHERE name = $1"
	return p, nil
}

// Name returns the projector's name.
func (p *Projector) Name() string { return p.cfg.Name }

// Migrate creates the checkpoint table when it does not exist.
func (p *Projector) Migrate(ctx context.Context) error {
	_, err := p.cfg.DB.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+p.table+
		" (name TEXT PRIMARY KEY, commit_id BIGINT NOT NULL, seq BIGINT NOT NULL, updated_ms BIGINT NOT NULL)")
	return message.Wrap(message.Unavailable, "projection: migrate", err)
}

// Step applies the next batch of events and returns how many it applied
// (0 when caught up).
func (p *Projector) Step(ctx context.Context) (n int, err error) {
	const op = "projection: step"
	tx, err := p.cfg.DB.BeginTx(ctx, nil)
	if err != nil {
		return 0, message.Wrap(message.Unavailable, op, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	cp, err := p.read(ctx, tx)
	if err != nil {
		return 0, err
	}
	evs, err := p.cfg.Store.ReadAll(ctx, cp, p.cfg.BatchSize)
	if err != nil || len(evs) == 0 {
		return 0, err
	}
	for _, e := range evs {
		if err := p.cfg.Handle(ctx, tx, e); err != nil {
			return 0, err
		}
	}
	last := evs[len(evs)-1]
	if p.cfg.BeforeCheckpoint != nil {
		p.cfg.BeforeCheckpoint(last)
	}
	if _, err := tx.ExecContext(ctx, p.upsertSQL, p.cfg.Name, int64(last.Position.Commit), last.Position.Seq, time.Now().UnixMilli()); err != nil {
		return 0, message.Wrap(message.Unavailable, op, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, message.Wrap(message.Unavailable, op+": commit", err)
	}
	committed = true
	return len(evs), nil
}

func (p *Projector) read(ctx context.Context, q *sql.Tx) (eventstore.Position, error) {
	if _, err := q.ExecContext(ctx, p.ensureSQL, p.cfg.Name, time.Now().UnixMilli()); err != nil {
		return eventstore.Position{}, message.Wrap(message.Unavailable, "projection: read checkpoint", err)
	}
	var c, s int64
	if err := q.QueryRowContext(ctx, p.readSQL, p.cfg.Name).Scan(&c, &s); err != nil {
		return eventstore.Position{}, message.Wrap(message.Unavailable, "projection: read checkpoint", err)
	}
	return eventstore.Position{Commit: uint64(c), Seq: s}, nil
}

// CatchUp steps until the projector has applied every event committed so
// far.
func (p *Projector) CatchUp(ctx context.Context) error {
	for {
		n, err := p.Step(ctx)
		if err != nil || n == 0 {
			return err
		}
	}
}

// Run steps until ctx ends, then returns nil.
func (p *Projector) Run(ctx context.Context) error {
	for {
		n, err := p.Step(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && p.cfg.OnError != nil {
			p.cfg.OnError(err)
		}
		if err == nil && n > 0 {
			continue
		}
		t := time.NewTimer(p.cfg.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Rebuild clears the read model (Config.Reset) and rewinds the checkpoint
// to the start, in one transaction; Run or CatchUp then replays the log.
func (p *Projector) Rebuild(ctx context.Context) error {
	const op = "projection: rebuild"
	tx, err := p.cfg.DB.BeginTx(ctx, nil)
	if err != nil {
		return message.Wrap(message.Unavailable, op, err)
	}
	defer tx.Rollback()
	if _, err := p.read(ctx, tx); err != nil { // locks the row on PostgreSQL
		return err
	}
	if p.cfg.Reset != nil {
		if err := p.cfg.Reset(ctx, tx); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, p.upsertSQL, p.cfg.Name, 0, 0, time.Now().UnixMilli()); err != nil {
		return message.Wrap(message.Unavailable, op, err)
	}
	return message.Wrap(message.Unavailable, op+": commit", tx.Commit())
}

// Status is where a projector stands.
type Status struct {
	// Checkpoint is the position of the last event applied.
	Checkpoint eventstore.Position
	// Behind counts the committed events after Checkpoint, up to the
	// limit given to Status.
	Behind int
}

// Status returns the checkpoint and how many events (counting up to
// limit; 0 means 10000) the projector is behind.
func (p *Projector) Status(ctx context.Context, limit int) (Status, error) {
	if limit <= 0 {
		limit = 10000
	}
	var st Status
	var c, s int64
	err := p.cfg.DB.QueryRowContext(ctx, p.statusReadSQ, p.cfg.Name).Scan(&c, &s)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return st, message.Wrap(message.Unavailable, "projection: status", err)
	}
	st.Checkpoint = eventstore.Position{Commit: uint64(c), Seq: s}
	pos := st.Checkpoint
	for st.Behind < limit {
		evs, err := p.cfg.Store.ReadAll(ctx, pos, min(1000, limit-st.Behind))
		if err != nil {
			return st, err
		}
		if len(evs) == 0 {
			break
		}
		st.Behind += len(evs)
		pos = evs[len(evs)-1].Position
	}
	return st, nil
}
