package saga_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/saga"
)

func newOrderSaga(t testing.TB, w *world, cfg saga.Config) *saga.Saga[Order] {
	t.Helper()
	cfg.Bus, cfg.Store = w.orch, w.store
	s, err := saga.New(orderSaga(w.orch), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOrderSaga: the happy path and a declined payment, on each broker.
// Happy: reserve, charge, confirm, each once. Declined: reserve, the
// charge fails, the reservation is released, then the order failed:
// compensations in reverse order, the failed step's own compensation
// skipped.
func TestOrderSaga(t *testing.T) {
	brokers(t, func(t *testing.T, url string) {
		ctx := context.Background()
		w := newWorld(t, url, "", "", "")
		w.startServices()
		s := newOrderSaga(t, w, saga.Config{StepTimeout: 20 * time.Second})
		run(t, s)
		if err := s.Start(ctx, "ord-1", Order{OrderID: "ord-1", SKU: "sku-9", Qty: 2, Amount: 40}); err != nil {
			t.Fatal(err)
		}
		st := w.final("ord-1")
		if got, want := outcomes(st), "completed order:done/pending reserve:done/pending charge:done/pending confirm:done/pending"; got != want {
			t.Errorf("ord-1: %s, want %s", got, want)
		}
		for _, step := range st.Steps[1:] {
			if step.Action.Runs != 1 {
				t.Errorf("ord-1 %s ran %d times", step.Name, step.Action.Runs)
			}
		}
		// The saga's commands are one flow: the saga ID is their
		// correlation ID, and each one's causation chain is longer than
		// the last (start, then each reply).
		for i, step := range []string{"reserve", "charge", "confirm"} {
			if got, want := w.ledger.flow("ord-1/"+step+"/action"), fmt.Sprintf("ord-1/%d", 2*i+1); got != want {
				t.Errorf("%s command: correlation/chain %q, want %q", step, got, want)
			}
		}
		if err := s.Start(ctx, "ord-2", Order{OrderID: "ord-2", SKU: "sku-9", Qty: 1, Amount: 500}); err != nil {
			t.Fatal(err)
		}
		st = w.final("ord-2")
		if got, want := outcomes(st), "compensated order:done/done reserve:done/done charge:failed/skipped confirm:pending/pending"; got != want {
			t.Errorf("ord-2: %s, want %s", got, want)
		}
		if !strings.Contains(st.Error, "card declined for 500") {
			t.Errorf("ord-2 error %q", st.Error)
		}
		want := []string{"reserve ord-1 2xsku-9", "charge ord-1 40", "confirm ord-1",
			"reserve ord-2 1xsku-9", "release ord-2", "fail ord-2"}
		if got := w.effects(); !slices.Equal(got, want) {
			t.Errorf("effects %q, want %q", got, want)
		}
		// A second Start of a saga changes nothing.
		if err := s.Start(ctx, "ord-1", Order{OrderID: "ord-1", Amount: 1}); err != nil {
			t.Fatal(err)
		}
		if st := w.final("ord-1"); st.Status != saga.Completed || !strings.Contains(string(st.Data), `"Amount":40`) {
			t.Errorf("after a second Start: %s %s", st.Status, st.Data)
		}
	})
}

// recorder is a saga of local steps that records what ran.
type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, s)
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

func localStep(r *recorder, name string, fail error) saga.Step[int] {
	return saga.Step[int]{Name: name,
		Action: func(ctx context.Context, x *saga.Exec[int]) error {
			r.add(fmt.Sprintf("%s#%d", name, x.Attempt))
			*x.Data++
			return fail
		},
		Compensate: func(ctx context.Context, x *saga.Exec[int]) error {
			r.add("undo " + name)
			return nil
		}}
}

// TestCompensationReverseOrder: the fourth of four local steps fails
// after its retries: the three before it are compensated in reverse
// order, each once; a transient failure is retried with backoff first.
func TestCompensationReverseOrder(t *testing.T) {
	w := newWorld(t, "mem://", "", "", "")
	var r recorder
	flaky := 0
	def := saga.Definition[int]{Name: "four", Steps: []saga.Step[int]{
		localStep(&r, "a", nil), localStep(&r, "b", nil), localStep(&r, "c", nil), localStep(&r, "d", errors.New("d is down")),
	}}
	def.Steps[1].Action = func(ctx context.Context, x *saga.Exec[int]) error {
		r.add(fmt.Sprintf("b#%d", x.Attempt))
		if flaky++; flaky < 2 {
			return errors.New("b flaked")
		}
		return nil
	}
	st := w.runLocal(def, "s1")
	if got, want := outcomes(st), "compensated a:done/done b:done/done c:done/done d:failed/skipped"; got != want {
		t.Errorf("%s, want %s", got, want)
	}
	want := []string{"a#1", "b#1", "b#2", "c#1", "d#1", "d#2", "d#3", "undo c", "undo b", "undo a"}
	if got := r.got(); !slices.Equal(got, want) {
		t.Errorf("ran %q, want %q", got, want)
	}
	if !strings.Contains(st.Error, "after 3 attempts: d is down") || st.Steps[3].Action.Attempts != 3 {
		t.Errorf("error %q, attempts %d", st.Error, st.Steps[3].Action.Attempts)
	}
	if string(st.Data) != "2" {
		t.Errorf("data %s, want 2 (a and c added one; d's change is not kept)", st.Data)
	}
}

var retryFast = middlewareRetry()

// runLocal runs def (fast retries) for one saga, id, and returns its
// final state.
func (w *world) runLocal(def saga.Definition[int], id string) *saga.State {
	w.t.Helper()
	s, err := saga.New(def, saga.Config{Bus: w.orch, Store: w.store, Retry: retryFast})
	if err != nil {
		w.t.Fatal(err)
	}
	run(w.t, s)
	if err := s.Start(context.Background(), id, 0); err != nil {
		w.t.Fatal(err)
	}
	return w.final(id)
}

// TestStepTimeout: a step whose command nobody answers times out by its
// timer; the timed-out step and those before it are compensated. On each
// broker.
func TestStepTimeout(t *testing.T) {
	brokers(t, func(t *testing.T, url string) {
		ctx := context.Background()
		w := newWorld(t, url, "", "", "")
		w.startServices()
		type Unanswered struct{ OrderID string }
		def := orderSaga(w.orch)
		def.Steps[2] = saga.Step[Order]{Name: "charge", Timeout: 500 * time.Millisecond,
			Action: func(ctx context.Context, x *saga.Exec[Order]) error {
				return bus.Send(ctx, w.orch, Unanswered{x.Data.OrderID}, x.AwaitReply()...)
			},
			Compensate: def.Steps[2].Compensate}
		s, err := saga.New(def, saga.Config{Bus: w.orch, Store: w.store})
		if err != nil {
			t.Fatal(err)
		}
		run(t, s)
		start := time.Now()
		if err := s.Start(ctx, "ord-t", Order{OrderID: "ord-t", SKU: "x", Qty: 1, Amount: 5}); err != nil {
			t.Fatal(err)
		}
		st := w.final("ord-t")
		if got, want := outcomes(st), "compensated order:done/done reserve:done/done charge:timed-out/done confirm:pending/pending"; got != want {
			t.Errorf("%s, want %s", got, want)
		}
		if took := time.Since(start); took < 500*time.Millisecond {
			t.Errorf("timed out after %s, before the step's timeout", took)
		}
		want := []string{"reserve ord-t 1xx", "refund ord-t", "release ord-t", "fail ord-t"}
		if got := w.effects(); !slices.Equal(got, want) {
			t.Errorf("effects %q, want %q", got, want)
		}
	})
}

// TestStuck: a compensation that fails leaves the saga Stuck, with both
// errors, and stops there.
func TestStuck(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, "mem://", "", "", "")
	var r recorder
	def := saga.Definition[int]{Name: "stuck", Steps: []saga.Step[int]{
		localStep(&r, "a", nil), localStep(&r, "b", nil), localStep(&r, "c", message.PermanentError(errors.New("c refused"))),
	}}
	def.Steps[1].Compensate = func(context.Context, *saga.Exec[int]) error {
		r.add("undo b")
		return message.PermanentError(errors.New("b cannot be undone"))
	}
	st := w.runLocal(def, "s1")
	if got, want := outcomes(st), "stuck a:done/pending b:done/failed c:failed/skipped"; got != want {
		t.Errorf("%s, want %s", got, want)
	}
	if want := "step c: failed: c refused; compensating step b: failed: b cannot be undone"; st.Error != want {
		t.Errorf("error %q, want %q", st.Error, want)
	}
	if got, want := r.got(), []string{"a#1", "b#1", "c#1", "undo b"}; !slices.Equal(got, want) {
		t.Errorf("ran %q, want %q", got, want)
	}
	list, err := w.store.List(ctx, saga.Filter{Status: saga.Stuck})
	if err != nil || len(list) != 1 || list[0].ID != "s1" {
		t.Errorf("List(stuck) = %v, %v", list, err)
	}
}

// TestBadDefinitions: New and Start refuse what cannot run.
func TestBadDefinitions(t *testing.T) {
	w := newWorld(t, "mem://", "", "", "")
	ok := saga.Step[int]{Name: "a", Action: func(context.Context, *saga.Exec[int]) error { return nil }}
	for name, def := range map[string]saga.Definition[int]{
		"no steps":   {Name: "x"},
		"bad name":   {Name: "a b", Steps: []saga.Step[int]{ok}},
		"dup step":   {Name: "x", Steps: []saga.Step[int]{ok, ok}},
		"empty step": {Name: "x", Steps: []saga.Step[int]{{Name: "e"}}},
	} {
		if _, err := saga.New(def, saga.Config{Bus: w.orch, Store: w.store}); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if _, err := saga.New(saga.Definition[int]{Name: "x", Steps: []saga.Step[int]{ok}}, saga.Config{}); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("no bus: %v", err)
	}
	s, _ := saga.New(saga.Definition[int]{Name: "x", Steps: []saga.Step[int]{ok}}, saga.Config{Bus: w.orch, Store: w.store})
	if err := s.Start(context.Background(), "has/slash", 1); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("bad id: %v", err)
	}
	other, _ := saga.New(saga.Definition[int]{Name: "y", Steps: []saga.Step[int]{ok}}, saga.Config{Bus: w.orch, Store: w.store})
	_ = s.Start(context.Background(), "same", 1)
	if err := other.Start(context.Background(), "same", 1); !errors.Is(err, message.ErrConflict) {
		t.Errorf("ID of another saga: %v, want Conflict", err)
	}
}

// TestPostgresStore: the OrderSaga on embedded:// with its state in
// PostgreSQL (POLYBUS_POSTGRES_URL).
func TestPostgresStore(t *testing.T) {
	ctx := context.Background()
	pg := brokertest.URL(t, "postgres")
	w := newWorld(t, "mem://", "pgx", pg, "")
	t.Cleanup(func() { _, _ = w.db.Exec(`DROP TABLE "` + w.store.Table() + `"`) })
	var r recorder
	def := saga.Definition[int]{Name: "pg", Steps: []saga.Step[int]{
		localStep(&r, "a", nil), localStep(&r, "b", message.PermanentError(errors.New("no"))),
	}}
	s, err := saga.New(def, saga.Config{Bus: w.orch, Store: w.store})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	if err := s.Start(ctx, "p1", 0); err != nil {
		t.Fatal(err)
	}
	if got, want := outcomes(w.final("p1")), "compensated a:done/done b:failed/skipped"; got != want {
		t.Errorf("%s, want %s", got, want)
	}
	list, err := w.store.List(ctx, saga.Filter{Name: "pg", Limit: 5})
	if err != nil || len(list) != 1 {
		t.Errorf("List: %v, %v", list, err)
	}
}

// TestCompensationTimeout: a compensation whose command nobody answers
// times out, and the saga is stuck with both errors.
func TestCompensationTimeout(t *testing.T) {
	w := newWorld(t, "mem://", "", "", "")
	type NobodyUndoes struct{}
	var r recorder
	def := saga.Definition[int]{Name: "undo-timeout", Steps: []saga.Step[int]{
		{Name: "a", Timeout: 200 * time.Millisecond,
			Action: func(context.Context, *saga.Exec[int]) error { return nil },
			Compensate: func(ctx context.Context, x *saga.Exec[int]) error {
				return bus.Send(ctx, w.orch, NobodyUndoes{}, x.AwaitReply()...)
			}},
		localStep(&r, "b", message.PermanentError(errors.New("b refused"))),
	}}
	st := w.runLocal(def, "s1")
	if got, want := outcomes(st), "stuck a:done/timed-out b:failed/skipped"; got != want {
		t.Errorf("%s, want %s", got, want)
	}
	if !strings.Contains(st.Error, "compensating step a: timed-out: no reply within 200ms") {
		t.Errorf("error %q", st.Error)
	}
}
