package bus

import (
	"context"
	"database/sql"
	"regexp"
	"sync"
	"time"

	"github.com/polybus/polybus/eventstore/sqlstore"
	"github.com/polybus/polybus/message"
)

// Registry records which service handles each command type: the
// registration record that lets Send refuse a command no service ever
// registered for, and Start refuse a second service for a type. A
// registration is never removed by the bus: a service that stopped still
// owns its type, and its commands wait on the topic for it.
type Registry interface {
	// Register records that service handles commands of typ. Errors:
	// Conflict when another service already does.
	Register(ctx context.Context, typ, service string) error
	// Lookup returns the service that handles typ. Errors: NotFound when
	// none registered it.
	Lookup(ctx context.Context, typ string) (service string, err error)
}

// MemoryRegistry is a Registry in this process's memory: for tests and
// for processes that run every service themselves. The zero value is
// ready.
type MemoryRegistry struct {
	mu sync.Mutex
	m  map[string]string
}

// Register implements Registry.
func (r *MemoryRegistry) Register(_ context.Context, typ, service string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]string{}
	}
	if holder, ok := r.m[typ]; ok {
		return registered(typ, service, holder)
	}
	r.m[typ] = service
	return nil
}

// Lookup implements Registry.
func (r *MemoryRegistry) Lookup(_ context.Context, typ string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.m[typ]; ok {
		return s, nil
	}
	return "", notRegistered(typ)
}

func registered(typ, service, holder string) error {
	if holder != service {
		return message.Errorf(message.Conflict, "bus: register command", "command %s is handled by service %q, not %q: a command has one handler service", typ, holder, service)
	}
	return nil
}

func notRegistered(typ string) error {
	return message.Errorf(message.NotFound, "bus: send", "no service has registered a handler for command %s", typ)
}

// SQLRegistry is a Registry in a table of a SQLite or PostgreSQL
// database that every service reaches: one row per command type (type,
// service, time of first registration).
type SQLRegistry struct {
	db    *sql.DB
	table string
}

var tableRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,49}$`)

// NewSQLRegistry returns a registry in table (default
// "polybus_command_handlers") of db and creates the table when it does
// not exist. Both dialects (sqlstore.SQLite, sqlstore.Postgres) take the
// same statements.
// Errors: InvalidArgument for a nil db, an unknown dialect or a bad table
// name; Unavailable when the table cannot be created.
func NewSQLRegistry(ctx context.Context, db *sql.DB, dialect sqlstore.Dialect, table string) (*SQLRegistry, error) {
	const op = "bus: sql registry"
	if db == nil || (dialect != sqlstore.Postgres && dialect != sqlstore.SQLite) {
		return nil, message.Errorf(message.InvalidArgument, op, "want a database and a known dialect")
	}
	if table == "" {
		table = "polybus_command_handlers"
	}
	if !tableRE.MatchString(table) {
		return nil, message.Errorf(message.InvalidArgument, op, "table name %q: a letter or underscore, then letters, digits or underscores, at most 50", table)
	}
	r := &SQLRegistry{db: db, table: `"` + table + `"`}
	_, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+r.table+" (type TEXT PRIMARY KEY, service TEXT NOT NULL, registered_ms BIGINT NOT NULL)")
	if err != nil {
		return nil, message.Wrap(message.Unavailable, op, err)
	}
	return r, nil
}

// Register implements Registry.
func (r *SQLRegistry) Register(ctx context.Context, typ, service string) error {
	const op = "bus: register command"
	if _, err := r.db.ExecContext(ctx, "INSERT INTO "+r.table+" (type, service, registered_ms) VALUES ($1, $2, $3) ON CONFLICT (type) DO NOTHING",
		typ, service, time.Now().UnixMilli()); err != nil {
		return message.Wrap(message.Unavailable, op, err)
	}
	holder, err := r.Lookup(ctx, typ)
	if err != nil {
		return err
	}
	return registered(typ, service, holder)
}

// Lookup implements Registry.
func (r *SQLRegistry) Lookup(ctx context.Context, typ string) (string, error) {
	var s string
	err := r.db.QueryRowContext(ctx, "SELECT service FROM "+r.table+" WHERE type = $1", typ).Scan(&s)
	switch {
	case err == sql.ErrNoRows:
		return "", notRegistered(typ)
	case err != nil:
		return "", message.Wrap(message.Unavailable, "bus: registry lookup", err)
	}
	return s, nil
}
