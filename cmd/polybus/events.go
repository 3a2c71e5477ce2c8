package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/spf13/cobra"
	_ "modernc.org/sqlite"

	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/eventstore/sqlstore"
	"github.com/polybus/polybus/projection"
)

// eventsFlags are the flags every events command shares.
type eventsFlags struct {
	db     string
	prefix string
	json   bool
}

// openSQL opens a --db value: sqlite:PATH (default sqlite:DEFAULT) or a
// postgres:// URL, and says which dialect it speaks.
func openSQL(dsn, def string) (*sql.DB, sqlstore.Dialect, error) {
	if dsn == "" {
		dsn = "sqlite:" + def
	}
	driver, dialect := "sqlite", sqlstore.SQLite
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		path := strings.TrimPrefix(dsn, "sqlite:")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, 0, err
		}
		dsn = "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate"
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		driver, dialect = "pgx", sqlstore.Postgres
	default:
		return nil, 0, usagef("--db %q: want sqlite:PATH or postgres://...", dsn)
	}
	db, err := sql.Open(driver, dsn)
	return db, dialect, err
}

// eventsDB opens --db (see openSQL; default sqlite:./.polybus/events.db)
// and the event store on it.
func (a *app) eventsDB(ctx context.Context, f *eventsFlags, fn func(*sql.DB, *sqlstore.Driver, *eventstore.Store) error) error {
	db, dialect, err := openSQL(f.db, "./.polybus/events.db")
	if err != nil {
		return err
	}
	defer db.Close()
	d, err := sqlstore.New(db, sqlstore.Config{Dialect: dialect, Prefix: f.prefix})
	if err != nil {
		return err
	}
	if err := d.Migrate(ctx); err != nil {
		return err
	}
	s, err := eventstore.New(d, eventstore.Options{})
	if err != nil {
		return err
	}
	return fn(db, d, s)
}

func (a *app) printEvent(f *eventsFlags, e *eventstore.Event) {
	if f.json {
		b, _ := json.Marshal(map[string]any{"id": e.ID, "stream": e.Stream, "version": e.Version, "position": e.Position.String(),
			"type": e.Type, "data": json.RawMessage(validJSON(e.Raw)), "metadata": e.Metadata, "time": e.Time})
		fmt.Fprintln(a.stdout, string(b))
		return
	}
	fmt.Fprintf(a.stdout, "%s\t%s@%d\t%s\t%s\t%s\n", e.Position, e.Stream, e.Version, e.Type, e.Time.Format(time.RFC3339Nano), e.Raw)
}

func validJSON(b []byte) []byte {
	if json.Valid(b) {
		return b
	}
	q, _ := json.Marshal(string(b))
	return q
}

func (a *app) eventsCommand() *cobra.Command {
	var f eventsFlags
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Append to and read the event store; show and rewind projections",
		Long: `Commands on an event store (package eventstore) in SQLite or PostgreSQL.
--db is sqlite:PATH (default sqlite:./.polybus/events.db) or a postgres:// URL;
--prefix is the tables' prefix (default polybus_).`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.db, "db", "", "event store database: sqlite:PATH or postgres://... (default sqlite:./.polybus/events.db)")
	pf.StringVar(&f.prefix, "prefix", "", "table name prefix (default polybus_)")
	pf.BoolVar(&f.json, "json", false, "print one JSON object per event")
	cmd.AddCommand(a.eventsAppend(&f), a.eventsRead(&f), a.eventsTail(&f), a.eventsProjection(&f))
	return cmd
}

func parseExpected(s string) (eventstore.ExpectedVersion, error) {
	switch s {
	case "any", "":
		return eventstore.Any, nil
	case "none", "no-stream":
		return eventstore.NoStream, nil
	case "exists":
		return eventstore.StreamExists, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, usagef("--expect %q: want any, none, exists or a version", s)
	}
	return eventstore.Exactly(n), nil
}

func (a *app) eventsAppend(f *eventsFlags) *cobra.Command {
	var stream, typ, expect, id string
	cmd := &cobra.Command{
		Use:     "append --stream S --type T [--expect any|none|exists|N] DATA",
		Short:   "Append one event (DATA is its JSON) to a stream",
		Example: `  polybus events append --stream account-42 --type Deposited --expect none '{"Amount":100}'`,
		Args:    cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if stream == "" || typ == "" {
				return usagef("--stream and --type are required")
			}
			exp, err := parseExpected(expect)
			if err != nil {
				return err
			}
			if !json.Valid([]byte(args[0])) {
				return usagef("DATA is not JSON: %.40q", args[0])
			}
			return a.eventsDB(cmd.Context(), f, func(_ *sql.DB, _ *sqlstore.Driver, s *eventstore.Store) error {
				e := &eventstore.Event{ID: id, Type: typ, Raw: []byte(args[0])}
				res, err := s.Append(cmd.Context(), stream, exp, e)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%s@%d %s %s\n", stream, res.Version, res.Position, e.ID)
				return nil
			})
		}),
	}
	cmd.Flags().StringVar(&stream, "stream", "", "stream name (required)")
	cmd.Flags().StringVar(&typ, "type", "", "event type (required)")
	cmd.Flags().StringVar(&expect, "expect", "any", "expected version: any, none, exists or N")
	cmd.Flags().StringVar(&id, "id", "", "event ID, for an idempotent retry (default: a new UUIDv7)")
	return cmd
}

func (a *app) eventsRead(f *eventsFlags) *cobra.Command {
	var stream string
	var from int64
	var limit int
	var backward bool
	cmd := &cobra.Command{
		Use:   "read --stream S [--from N] [--limit N] [--backward]",
		Short: "Print a stream's events",
		Args:  cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if stream == "" {
				return usagef("--stream is required")
			}
			return a.eventsDB(cmd.Context(), f, func(_ *sql.DB, _ *sqlstore.Driver, s *eventstore.Store) error {
				evs, err := s.Query(cmd.Context(), eventstore.StreamQuery{Stream: stream, From: from, Limit: limit, Backward: backward})
				if err != nil {
					return err
				}
				for _, e := range evs {
					a.printEvent(f, e)
				}
				return nil
			})
		}),
	}
	cmd.Flags().StringVar(&stream, "stream", "", "stream name (required)")
	cmd.Flags().Int64Var(&from, "from", 0, "first version (backward: last version; 0: the start or end)")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most N events (0: all)")
	cmd.Flags().BoolVar(&backward, "backward", false, "newest first")
	return cmd
}

func (a *app) eventsTail(f *eventsFlags) *cobra.Command {
	var after string
	var follow bool
	cmd := &cobra.Command{
		Use:   "tail [--after COMMIT/SEQ] [--follow]",
		Short: "Print the global log in order; with --follow, wait for new events",
		Args:  cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			var p eventstore.Position
			if after != "" {
				var err error
				if p, err = eventstore.ParsePosition(after); err != nil {
					return usagef("--after: %v", err)
				}
			}
			ctx := cmd.Context()
			return a.eventsDB(ctx, f, func(_ *sql.DB, _ *sqlstore.Driver, s *eventstore.Store) error {
				for {
					evs, err := s.ReadAll(ctx, p, 1000)
					if err != nil {
						if ctx.Err() != nil {
							return nil
						}
						return err
					}
					for _, e := range evs {
						a.printEvent(f, e)
						p = e.Position
					}
					if len(evs) > 0 {
						continue
					}
					if !follow {
						return nil
					}
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(200 * time.Millisecond):
					}
				}
			})
		}),
	}
	cmd.Flags().StringVar(&after, "after", "", "start after this position (as printed: COMMIT/SEQ)")
	cmd.Flags().BoolVar(&follow, "follow", false, "keep printing new events until interrupted")
	return cmd
}

func (a *app) eventsProjection(f *eventsFlags) *cobra.Command {
	var name, table string
	var rewind bool
	cmd := &cobra.Command{
		Use:   "projection --name P [--rewind]",
		Short: "Show a projection's checkpoint and lag; --rewind resets it to replay from zero",
		Long: `Print a projector's checkpoint (package projection) and how many events it is
behind. --rewind sets its checkpoint to the start, so that the running
projector replays the whole log: clear its read model first (or use
Projector.Rebuild in the application, which does both in one transaction).`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return usagef("--name is required")
			}
			return a.eventsDB(cmd.Context(), f, func(db *sql.DB, d *sqlstore.Driver, s *eventstore.Store) error {
				dialect := projection.SQLite
				if d.Dialect() == sqlstore.Postgres {
					dialect = projection.Postgres
				}
				p, err := projection.New(projection.Config{Name: name, Store: s, DB: db, Dialect: dialect, Table: table,
					Handle: func(context.Context, *sql.Tx, *eventstore.Event) error { return nil }})
				if err != nil {
					return err
				}
				if err := p.Migrate(cmd.Context()); err != nil {
					return err
				}
				if rewind {
					if err := p.Rebuild(cmd.Context()); err != nil {
						return err
					}
				}
				st, err := p.Status(cmd.Context(), 0)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%s\tcheckpoint %s\tbehind %d\n", name, st.Checkpoint, st.Behind)
				return nil
			})
		}),
	}
	cmd.Flags().StringVar(&name, "name", "", "projector name (required)")
	cmd.Flags().StringVar(&table, "table", "", "checkpoint table (default polybus_checkpoints)")
	cmd.Flags().BoolVar(&rewind, "rewind", false, "reset the checkpoint to the start")
	return cmd
}
