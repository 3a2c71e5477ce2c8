package projection_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/eventstore/sqlstore"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/projection"
)

const childEnv = "POLYBUS_PROJECTION_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m)
}

type Deposited struct{ Amount int }

// env is one database holding an event store and read models.
type env struct {
	name    string
	driver  string
	dsn     string
	dialect projection.Dialect
	db      *sql.DB
	prefix  string
	store   *eventstore.Store
}

func sqliteDSN(file string) string {
	return "file:" + file + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate"
}

func openEnv(t testing.TB, driver, dsn, prefix string) *env {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	e := &env{driver: driver, dsn: dsn, db: db, prefix: prefix, dialect: projection.SQLite}
	sd := sqlstore.SQLite
	if driver == "pgx" {
		sd, e.dialect = sqlstore.Postgres, projection.Postgres
	}
	drv, err := sqlstore.New(db, sqlstore.Config{Dialect: sd, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.store, _ = eventstore.New(drv, eventstore.Options{})
	if err := eventstore.Register[Deposited](e.store.Registry(), "Deposited"); err != nil {
		t.Fatal(err)
	}
	return e
}

func eachBackend(t *testing.T, f func(t *testing.T, e *env)) {
	t.Run("sqlite", func(t *testing.T) {
		f(t, openEnv(t, "sqlite", sqliteDSN(filepath.Join(t.TempDir(), "app.db")), "p_"))
	})
	t.Run("postgres", func(t *testing.T) {
		url := brokertest.URL(t, "postgres")
		prefix := fmt.Sprintf("p%x_", rand.Uint64())
		e := openEnv(t, "pgx", url, prefix)
		t.Cleanup(func() {
			for _, s := range []string{"events", "streams", "snapshots", "checkpoints", "rm", "rm2"} {
				_, _ = e.db.Exec(`DROP TABLE IF EXISTS "` + prefix + s + `"`)
			}
		})
		f(t, e)
	})
}

// readModel is a table counting how often each event was applied.
func (e *env) readModel(t testing.TB, name string) string {
	t.Helper()
	tb := `"` + e.prefix + name + `"`
	if _, err := e.db.Exec("CREATE TABLE IF NOT EXISTS " + tb + " (event_id TEXT PRIMARY KEY, n INTEGER NOT NULL, amount INTEGER NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return tb
}

func apply(tb string) projection.Handler {
	return func(ctx context.Context, tx *sql.Tx, ev *eventstore.Event) error {
		d, ok := ev.Data.(Deposited)
		if !ok {
			return fmt.Errorf("unexpected %s", ev.Type)
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO "+tb+" (event_id, n, amount) VALUES ($1, 1, $2)"+
			" ON CONFLICT (event_id) DO UPDATE SET n = "+tb+".n + 1", ev.ID, d.Amount)
		return err
	}
}

func (e *env) projector(t testing.TB, name, tb string, mod func(*projection.Config)) *projection.Projector {
	t.Helper()
	cfg := projection.Config{Name: name, Store: e.store, DB: e.db, Dialect: e.dialect, Table: e.prefix + "checkpoints",
		Handle: apply(tb), BatchSize: 4,
		Reset: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "DELETE FROM "+tb)
			return err
		}}
	if mod != nil {
		mod(&cfg)
	}
	p, err := projection.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) appendN(t testing.TB, n int) []*eventstore.Event {
	t.Helper()
	var out []*eventstore.Event
	for i := range n {
		ev := &eventstore.Event{Data: Deposited{Amount: i + 1}}
		if _, err := e.store.Append(context.Background(), fmt.Sprintf("acc-%d", i%3), eventstore.Any, ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// applied returns the read model's rows: event ID → times applied.
func (e *env) applied(t testing.TB, tb string) map[string]int {
	t.Helper()
	rows, err := e.db.Query("SELECT event_id, n FROM " + tb)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		out[id] = n
	}
	return out
}

// exactlyOnce fails unless the read model holds exactly want, each once.
func exactlyOnce(t testing.TB, got map[string]int, want []*eventstore.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read model holds %d events, want %d", len(got), len(want))
	}
	for _, ev := range want {
		if got[ev.ID] != 1 {
			t.Fatalf("event %s applied %d times", ev.ID, got[ev.ID])
		}
	}
}

func TestProjectsEachEventOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		tb := e.readModel(t, "rm")
		p := e.projector(t, "list-v1", tb, nil)
		evs := e.appendN(t, 10)
		if err := p.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		exactlyOnce(t, e.applied(t, tb), evs)
		evs = append(evs, e.appendN(t, 7)...)
		st, err := p.Status(ctx, 0)
		if err != nil || st.Behind != 7 {
			t.Fatalf("status %+v %v, want 7 behind", st, err)
		}
		if err := p.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		exactlyOnce(t, e.applied(t, tb), evs)
		all, _ := e.store.ReadAll(ctx, eventstore.Position{}, 100)
		st, _ = p.Status(ctx, 0)
		if st.Behind != 0 || st.Checkpoint != all[len(all)-1].Position {
			t.Fatalf("status %+v, want the last position %s", st, all[len(all)-1].Position)
		}
	})
}

func TestHandlerErrorRollsBackTheBatch(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		tb := e.readModel(t, "rm")
		evs := e.appendN(t, 10)
		failOn := evs[6].ID
		fail := true
		boom := errors.New("boom")
		p := e.projector(t, "f", tb, func(c *projection.Config) {
			h := c.Handle
			c.Handle = func(ctx context.Context, tx *sql.Tx, ev *eventstore.Event) error {
				if err := h(ctx, tx, ev); err != nil {
					return err
				}
				if ev.ID == failOn && fail {
					return boom
				}
				return nil
			}
		})
		if err := p.CatchUp(ctx); !errors.Is(err, boom) {
			t.Fatalf("CatchUp = %v, want the handler's error", err)
		}
		exactlyOnce(t, e.applied(t, tb), evs[:4])
		fail = false
		if err := p.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		exactlyOnce(t, e.applied(t, tb), evs)
	})
}

func TestRebuildAndSideBySide(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		tb := e.readModel(t, "rm")
		p := e.projector(t, "v1", tb, nil)
		evs := e.appendN(t, 9)
		if err := p.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		if err := p.Rebuild(ctx); err != nil {
			t.Fatal(err)
		}
		if got := e.applied(t, tb); len(got) != 0 {
			t.Fatalf("after Rebuild the read model holds %d rows", len(got))
		}
		if st, _ := p.Status(ctx, 0); !st.Checkpoint.IsZero() || st.Behind != 9 {
			t.Fatalf("after Rebuild status %+v", st)
		}
		if err := p.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		exactlyOnce(t, e.applied(t, tb), evs)
		// v2 builds beside v1, which keeps serving, then takes over.
		tb2 := e.readModel(t, "rm2")
		p2 := e.projector(t, "v2", tb2, nil)
		evs = append(evs, e.appendN(t, 3)...)
		if err := p2.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		if st, _ := p2.Status(ctx, 0); st.Behind != 0 {
			t.Fatalf("v2 behind %d", st.Behind)
		}
		exactlyOnce(t, e.applied(t, tb2), evs)
		exactlyOnce(t, e.applied(t, tb), evs[:9]) // v1 untouched until it steps
	})
}

func TestTwoProjectorsOfOneNameApplyOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		tb := e.readModel(t, "rm")
		evs := e.appendN(t, 40)
		var wg sync.WaitGroup
		for range 2 {
			p := e.projector(t, "shared", tb, nil)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := p.CatchUp(context.Background()); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		exactlyOnce(t, e.applied(t, tb), evs)
	})
}

func TestBadConfig(t *testing.T) {
	e := openEnv(t, "sqlite", sqliteDSN(filepath.Join(t.TempDir(), "x.db")), "p_")
	h := apply("x")
	for _, c := range []projection.Config{
		{Store: e.store, DB: e.db, Dialect: projection.SQLite, Handle: h},
		{Name: "a", DB: e.db, Dialect: projection.SQLite, Handle: h},
		{Name: "a", Store: e.store, DB: e.db, Handle: h},
		{Name: "a", Store: e.store, DB: e.db, Dialect: projection.SQLite, Handle: h, Table: "x y"},
	} {
		if _, err := projection.New(c); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("New(%+v): %v", c, err)
		}
	}
}

// TestCrashBetweenReadModelAndCheckpoint runs the projector in a child
// process (this test binary again) that kills itself with SIGKILL after a
// batch's read-model writes and before its checkpoint: each restart must
// apply every event exactly once, none skipped, none twice.
func TestCrashBetweenReadModelAndCheckpoint(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		tb := e.readModel(t, "rm")
		evs := e.appendN(t, 40)
		all, err := e.store.ReadAll(context.Background(), eventstore.Position{}, 100)
		if err != nil || len(all) != 40 {
			t.Fatal(len(all), err)
		}
		run := func(killAt int) error {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_DRIVER="+e.driver, "CHILD_DSN="+e.dsn,
				"CHILD_PREFIX="+e.prefix, "CHILD_TABLE="+tb, "CHILD_KILL_SEQ="+strconv.FormatInt(killSeq(all, killAt), 10))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Logf("child output: %s", out)
			}
			return err
		}
		killed := func(err error) bool {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				return false
			}
			ws, ok := ee.Sys().(syscall.WaitStatus)
			return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
		}
		// Batches of 4: killed in the batch holding the 6th event, so
		// events 1..4 stay applied; then in the one holding the 23rd.
		if err := run(6); !killed(err) {
			t.Fatalf("child 1: %v, want killed by SIGKILL", err)
		}
		exactlyOnce(t, e.applied(t, tb), evs[:4])
		if err := run(23); !killed(err) {
			t.Fatalf("child 2: %v, want killed by SIGKILL", err)
		}
		exactlyOnce(t, e.applied(t, tb), evs[:20])
		if err := run(0); err != nil {
			t.Fatalf("child 3: %v", err)
		}
		exactlyOnce(t, e.applied(t, tb), evs)
	})
}

func killSeq(all []*eventstore.Event, n int) int64 {
	if n == 0 {
		return 0
	}
	return all[n-1].Position.Seq
}

// runChild is the crash test's child: it catches up, killing itself before
// the checkpoint of the batch that reaches CHILD_KILL_SEQ.
func runChild() int {
	killAt, _ := strconv.ParseInt(os.Getenv("CHILD_KILL_SEQ"), 10, 64)
	t := &childTB{}
	e := openEnv(t, os.Getenv("CHILD_DRIVER"), os.Getenv("CHILD_DSN"), os.Getenv("CHILD_PREFIX"))
	p := e.projector(t, "crash", os.Getenv("CHILD_TABLE"), func(c *projection.Config) {
		c.BeforeCheckpoint = func(last *eventstore.Event) {
			if killAt > 0 && last.Position.Seq >= killAt {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		}
	})
	if err := p.CatchUp(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// childTB is the little of testing.TB the helpers use, for the child.
type childTB struct{ testing.TB }

func (*childTB) Helper()          {}
func (*childTB) Cleanup(f func()) {}
func (*childTB) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, args...)
	os.Exit(2)
}
func (c *childTB) Fatalf(f string, args ...any) { c.Fatal(fmt.Sprintf(f, args...)) }
