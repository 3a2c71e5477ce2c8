package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/saga"
)

// runSagas runs four sagas on mem:// with their state in the SQLite file
// path: "ok" completes, "undone" is compensated, "wedged" is stuck, and
// "open" waits for a reply that never comes (running).
func runSagas(t *testing.T, path string) {
	ctx := context.Background()
	c, err := polybus.Open(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, _ := saga.NewStore(db, saga.StoreConfig{})
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := bus.New(c, bus.Options{})
	defer b.Close(ctx)
	type Never struct{}
	act := func(ctx context.Context, x *saga.Exec[string]) error {
		switch {
		case x.Step == "pay" && strings.Contains(*x.Data, "fail"):
			return message.PermanentError(errors.New("card declined"))
		case x.Step == "pay" && *x.Data == "wait":
			return bus.Send(ctx, b, Never{}, x.AwaitReply()...)
		case x.Step == "reserve" && x.Compensating && strings.Contains(*x.Data, "wedge"):
			return message.PermanentError(errors.New("warehouse gone"))
		}
		return nil
	}
	def := saga.Definition[string]{Name: "Order", Steps: []saga.Step[string]{
		{Name: "reserve", Action: act, Compensate: act}, {Name: "pay", Action: act}, {Name: "ship", Action: act},
	}}
	s, err := saga.New(def, saga.Config{Bus: b, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- s.Run(rctx) }()
	defer func() { stop(); <-done }()
	for id, data := range map[string]string{"ok": "", "undone": "fail", "wedged": "fail wedge", "open": "wait"} {
		if err := s.Start(ctx, id, data); err != nil {
			t.Fatal(err)
		}
	}
	pbtest.WaitFor(t, "the sagas to settle", func() bool {
		list, err := store.List(ctx, saga.Filter{})
		settled := 0
		for _, st := range list {
			if st.Status.Final() || st.Steps[1].Action.Outcome == saga.Waiting {
				settled++
			}
		}
		return err == nil && settled == 4
	})
}

// TestSagaCommands drives `polybus saga ls|show` on a store with a saga
// of each kind, and bad input.
func TestSagaCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	path := filepath.Join(c.dir, "sagas.db")
	runSagas(t, path)
	db := "--db=sqlite:" + path

	ls := c.ok("saga", db, "ls").stdout
	got := map[string]string{}
	for _, l := range lines(ls)[1:] {
		f := strings.Fields(l)
		got[f[0]] = f[2]
	}
	want := map[string]string{"ok": "completed", "undone": "compensated", "wedged": "stuck", "open": "running"}
	for id, status := range want {
		if got[id] != status {
			t.Errorf("ls: %s is %q, want %q\n%s", id, got[id], status, ls)
		}
	}
	if !strings.HasPrefix(ls, "ID ") || !regexp.MustCompile(`(?m)^open\s+Order\s+running\s+2/3 pay\s`).MatchString(ls) {
		t.Errorf("ls output:\n%s", ls)
	}
	if out := c.ok("saga", db, "ls", "--status", "running").stdout; len(lines(out)) != 2 || !strings.HasPrefix(lines(out)[1], "open ") {
		t.Errorf("ls --status running:\n%s", out)
	}

	show := c.ok("saga", db, "show", "undone").stdout
	for _, w := range []string{"saga undone (Order): compensated", "error step pay: failed: card declined",
		" 0  reserve  done     1     done          1", " 1  pay      failed   1     skipped       0     card declined", " 2  ship     pending  0     pending       0"} {
		if !strings.Contains(show, w) {
			t.Errorf("show undone lacks %q:\n%s", w, show)
		}
	}
	if show := c.ok("saga", db, "show", "open").stdout; !strings.Contains(show, ">1  pay      waiting") {
		t.Errorf("show open:\n%s", show)
	}
	var js struct {
		Status string
		Steps  []saga.StepState
	}
	if err := json.Unmarshal([]byte(c.ok("saga", db, "show", "--json", "ok").stdout), &js); err != nil || js.Status != "completed" || len(js.Steps) != 3 || js.Steps[2].Action.Outcome != saga.Done {
		t.Errorf("show --json: %+v, %v", js, err)
	}

	if out := c.ok("saga", db, "ls", "--status", "stuck").stdout; !regexp.MustCompile(`(?m)^wedged\s+Order\s+stuck\s+-\s+\S+\s+step pay: failed: card declined; compensating step reserve: failed: warehouse gone$`).MatchString(out) {
		t.Errorf("ls --status stuck:\n%s", out)
	}
	c.expect(5, []string{`no saga "nope"`}, "saga", db, "show", "nope")
	c.expect(2, []string{`--status "bogus": want one of running, compensating, completed, compensated, stuck`}, "saga", db, "ls", "--status", "bogus")
	c.expect(2, []string{`--db "mysql://x"`}, "saga", "--db=mysql://x", "ls")
	c.expect(2, nil, "saga", db, "show")
}
