package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polybus/polybus/saga"
)

// sagaFlags are the flags every saga command shares.
type sagaFlags struct {
	db    string
	table string
	json  bool
}

// sagaStore opens --db (see openSQL; default sqlite:./.polybus/sagas.db)
// and the saga store in --table on it.
func (a *app) sagaStore(ctx context.Context, f *sagaFlags, fn func(*saga.Store) error) error {
	db, dialect, err := openSQL(f.db, "./.polybus/sagas.db")
	if err != nil {
		return err
	}
	defer db.Close()
	s, err := saga.NewStore(db, saga.StoreConfig{Dialect: dialect, Table: f.table})
	if err != nil {
		return err
	}
	if err := s.Migrate(ctx); err != nil {
		return err
	}
	return fn(s)
}

func (a *app) sagaCommand() *cobra.Command {
	var f sagaFlags
	cmd := &cobra.Command{
		Use:   "saga",
		Short: "List sagas and show one saga's steps",
		Long: `Read a saga store (package saga) in SQLite or PostgreSQL: each saga's status
(running, compensating, completed, compensated, stuck) and each step's action
and compensation outcome (pending, started, waiting, done, failed, timed-out,
skipped). --db is sqlite:PATH (default sqlite:./.polybus/sagas.db) or a
postgres:// URL; --table is the store's table (default polybus_sagas).`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.db, "db", "", "saga store database: sqlite:PATH or postgres://... (default sqlite:./.polybus/sagas.db)")
	pf.StringVar(&f.table, "table", "", "saga table (default polybus_sagas)")
	pf.BoolVar(&f.json, "json", false, "print JSON")
	cmd.AddCommand(a.sagaLs(&f), a.sagaShow(&f))
	return cmd
}

var sagaStatuses = []saga.Status{saga.Running, saga.Compensating, saga.Completed, saga.Compensated, saga.Stuck}

func (a *app) sagaLs(f *sagaFlags) *cobra.Command {
	var status, name string
	var limit int
	cmd := &cobra.Command{
		Use:   "ls [--status S] [--name N] [--limit N]",
		Short: "List sagas, the most recently updated first",
		Example: `  polybus saga ls
  polybus saga ls --status stuck --db postgres://app@db/app`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			st := saga.Status(status)
			if status != "" && !slices.Contains(sagaStatuses, st) {
				return usagef("--status %q: want one of %s", status, statusNames())
			}
			if limit < 0 {
				return usagef("--limit %d: want 0 (no limit) or more", limit)
			}
			return a.sagaStore(cmd.Context(), f, func(s *saga.Store) error {
				list, err := s.List(cmd.Context(), saga.Filter{Name: name, Status: st, Limit: limit})
				if err != nil {
					return err
				}
				if f.json {
					for _, st := range list {
						if err := writeSagaJSON(a.stdout, st); err != nil {
							return err
						}
					}
					return nil
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tSTEP\tUPDATED\tERROR")
				for _, st := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", st.ID, st.Name, st.Status, stepLabel(st),
						st.Updated.UTC().Format(time.RFC3339), st.Error)
				}
				return tw.Flush()
			})
		}),
	}
	cmd.Flags().StringVar(&status, "status", "", "only sagas of this status: "+statusNames())
	cmd.Flags().StringVar(&name, "name", "", "only sagas of this definition")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many (0: all)")
	return cmd
}

func (a *app) sagaShow(f *sagaFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Short:   "Show one saga: its status, data, error and each step's outcome",
		Example: `  polybus saga show ord-1`,
		Args:    cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.sagaStore(cmd.Context(), f, func(s *saga.Store) error {
				st, err := s.Load(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if f.json {
					return writeSagaJSON(a.stdout, st)
				}
				w := a.stdout
				fmt.Fprintf(w, "saga %s (%s): %s\n", st.ID, st.Name, st.Status)
				fmt.Fprintf(w, "created %s, updated %s, version %d\n", st.Created.UTC().Format(time.RFC3339Nano), st.Updated.UTC().Format(time.RFC3339Nano), st.Version)
				fmt.Fprintf(w, "data %s\n", st.Data)
				if st.Error != "" {
					fmt.Fprintf(w, "error %s\n", st.Error)
				}
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "#\tSTEP\tACTION\tRUNS\tCOMPENSATION\tRUNS\tERROR")
				for i, step := range st.Steps {
					mark := " "
					if i == st.Step && !st.Status.Final() {
						mark = ">"
					}
					fmt.Fprintf(tw, "%s%d\t%s\t%s\t%d\t%s\t%d\t%s\n", mark, i, step.Name, step.Action.Outcome, step.Action.Runs,
						step.Compensation.Outcome, step.Compensation.Runs, strings.Trim(step.Action.Error+"; "+step.Compensation.Error, "; "))
				}
				return tw.Flush()
			})
		}),
	}
}

// stepLabel names where a saga is: the step being run or compensated,
// "-" once it is final.
func stepLabel(st *saga.State) string {
	if st.Status.Final() || st.Step < 0 || st.Step >= len(st.Steps) {
		return "-"
	}
	return fmt.Sprintf("%d/%d %s", st.Step+1, len(st.Steps), st.Steps[st.Step].Name)
}

func writeSagaJSON(w io.Writer, st *saga.State) error {
	b, err := json.Marshal(map[string]any{"id": st.ID, "name": st.Name, "status": st.Status, "step": st.Step,
		"data": json.RawMessage(validJSON(st.Data)), "steps": st.Steps, "error": st.Error,
		"created": st.Created.UTC(), "updated": st.Updated.UTC(), "version": st.Version})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func statusNames() string {
	var names []string
	for _, s := range sagaStatuses {
		names = append(names, string(s))
	}
	return strings.Join(names, ", ")
}
