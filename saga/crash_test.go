package saga_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/saga"
)

const childEnv = "POLYBUS_SAGA_CHILD"

// killPoint reports whether the state just saved is where the child
// kills itself: "between" once charge is done and confirm not started,
// "during" once charge's action is recorded as started (and has not sent
// its command).
func killPoint(at string, st saga.State) bool {
	charge, confirm := st.Steps[2], st.Steps[3]
	switch at {
	case "between":
		return charge.Action.Outcome == saga.Done && confirm.Action.Outcome == saga.Pending
	case "during":
		return charge.Action.Outcome == saga.Started
	}
	return false
}

// sagaChild is the crash test's child: the OrderSaga's services and
// orchestrator on CHILD_BUS (embedded://) and CHILD_DB (SQLite), running
// saga ord-k until it SIGKILLs itself at CHILD_KILL_AT.
func sagaChild() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }
	ctx := context.Background()
	c, err := polybus.Open(ctx, os.Getenv("CHILD_BUS"))
	if err != nil {
		return fail(err)
	}
	db, err := sql.Open("sqlite", sqliteDSN(os.Getenv("CHILD_DB")))
	if err != nil {
		return fail(err)
	}
	store, _ := saga.NewStore(db, saga.StoreConfig{})
	if err := store.Migrate(ctx); err != nil {
		return fail(err)
	}
	l, err := newLedger(ctx, db)
	if err != nil {
		return fail(err)
	}
	prefix := os.Getenv("CHILD_PREFIX")
	bs, err := services(c, prefix, l.apply)
	if err != nil {
		return fail(err)
	}
	for _, b := range bs {
		if err := b.Start(ctx); err != nil {
			return fail(err)
		}
	}
	orch, _ := bus.New(c, bus.Options{Prefix: prefix})
	at := os.Getenv("CHILD_KILL_AT")
	s, err := saga.New(orderSaga(orch), saga.Config{Bus: orch, Store: store, OnSave: func(st saga.State) {
		if killPoint(at, st) {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}})
	if err != nil {
		return fail(err)
	}
	if err := s.Start(ctx, "ord-k", Order{OrderID: "ord-k", SKU: "sku-1", Qty: 3, Amount: 30}); err != nil {
		return fail(err)
	}
	return fail(s.Run(ctx))
}

// TestKilledSagaResumes: the saga's process (orchestrator and services,
// on embedded:// and SQLite on disk) is killed with SIGKILL, between two
// steps or inside one; a new process on the same broker and store resumes
// the saga from its last recorded step and completes it, with each action
// applied exactly once. Killed between steps, no action runs twice; killed
// inside one, that action runs again and says so (Runs 2), and its
// command, sent with the same idempotency key, is applied once.
func TestKilledSagaResumes(t *testing.T) {
	for _, at := range []string{"between", "during"} {
		t.Run(at, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			busURL, dbPath, prefix := "embedded://"+filepath.Join(dir, "bus"), filepath.Join(dir, "saga.db"), "crash."
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			cmd := exec.CommandContext(cctx, os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_BUS="+busURL, "CHILD_DB="+dbPath, "CHILD_PREFIX="+prefix, "CHILD_KILL_AT="+at)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child: %v, want killed by SIGKILL; output %s", err, out)
			}

			w := newWorld(t, busURL, "sqlite", sqliteDSN(dbPath), prefix)
			before, err := w.store.Load(ctx, "ord-k")
			if err != nil {
				t.Fatal(err)
			}
			if before.Status != saga.Running || !killPoint(at, *before) {
				t.Fatalf("after the kill: %s", outcomes(before))
			}
			w.startServices()
			s := newOrderSaga(t, w, saga.Config{})
			run(t, s)
			st := w.final("ord-k")
			if got, want := outcomes(st), "completed order:done/pending reserve:done/pending charge:done/pending confirm:done/pending"; got != want {
				t.Errorf("%s, want %s", got, want)
			}
			runs := []int{st.Steps[1].Action.Runs, st.Steps[2].Action.Runs, st.Steps[3].Action.Runs}
			wantRuns := []int{1, 1, 1}
			if at == "during" {
				wantRuns[1] = 2
			}
			if !slices.Equal(runs, wantRuns) {
				t.Errorf("runs of reserve, charge, confirm: %v, want %v", runs, wantRuns)
			}
			want := []string{"reserve ord-k 3xsku-1", "charge ord-k 30", "confirm ord-k"}
			if got := w.effects(); !slices.Equal(got, want) {
				t.Errorf("effects %q, want %q", got, want)
			}
			t.Logf("killed %s: the services were delivered %d commands after the restart", at, w.ledger.deliveries.Load())
		})
	}
}
