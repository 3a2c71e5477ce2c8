package outbox_test

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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/polybus/polybus"
	_ "github.com/polybus/polybus/adapters/nats" // embedded://, opened by the child, then by the parent
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/outbox"
	"github.com/polybus/polybus/subscriber"
)

const childEnv = "POLYBUS_OUTBOX_CHILD"

// killingPublisher SIGKILLs its process after its n-th Publish returned:
// messages are on the broker, their rows not yet marked.
type killingPublisher struct {
	p     outbox.Publisher
	n     int64
	calls atomic.Int64
}

func (k *killingPublisher) Publish(ctx context.Context, topic string, msgs ...*message.Message) error {
	err := k.p.Publish(ctx, topic, msgs...)
	if k.calls.Add(1) == k.n {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	return err
}

// relayChild is the crash test's child: a relay on CHILD_DSN's outbox,
// publishing to CHILD_BUS (an embedded:// URL), killed after CHILD_KILL_AFTER
// publish calls.
func relayChild() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }
	ctx := context.Background()
	db, err := sql.Open(os.Getenv("CHILD_DRIVER"), os.Getenv("CHILD_DSN"))
	if err != nil {
		return fail(err)
	}
	d := outbox.SQLite
	if os.Getenv("CHILD_DRIVER") == "pgx" {
		d = outbox.Postgres
	}
	o, err := outbox.New(db, outbox.Config{Dialect: d, Table: os.Getenv("CHILD_TABLE")})
	if err != nil {
		return fail(err)
	}
	bus, err := polybus.Open(ctx, os.Getenv("CHILD_BUS"))
	if err != nil {
		return fail(err)
	}
	n, _ := strconv.ParseInt(os.Getenv("CHILD_KILL_AFTER"), 10, 64)
	r, err := o.Relay(outbox.RelayConfig{Publisher: &killingPublisher{p: bus.Publisher(), n: n}, BatchSize: 10, Lease: 300 * time.Millisecond})
	if err != nil {
		return fail(err)
	}
	for {
		if _, err := r.Once(ctx); err != nil {
			return fail(err)
		}
	}
}

// TestRelayKilledMidBatchLosesNothing: a relay process is killed with
// SIGKILL in the middle of a batch (after some of its publish calls, before
// their rows are marked). A second relay finishes the outbox; the consumer
// receives every message, and repeats only of the killed batch, with their
// IDs (counted).
func TestRelayKilledMidBatchLosesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		o := newOutbox(t, b, nil)
		busURL := "embedded://" + filepath.Join(t.TempDir(), "bus")
		ta, tb := fmt.Sprintf("outbox-crash-a-%x", rand.Uint64()), fmt.Sprintf("outbox-crash-b-%x", rand.Uint64())
		const total = 100
		for i := 0; i < total; i += 10 {
			var msgs []*message.Message
			for j := i; j < i+10; j++ {
				msgs = append(msgs, &message.Message{ID: fmt.Sprintf("m%03d", j), Key: fmt.Sprintf("k%d", j%5)})
			}
			// Alternate topics, so that one batch makes several publish calls.
			add(t, o, ta, true, msgs[:5]...)
			add(t, o, tb, true, msgs[5:]...)
		}
		// The embedded broker's store is on disk: the child's broker dies
		// with it, and the parent opens the same store after.
		driver, dsn := "sqlite", ""
		if b.dialect == outbox.Postgres {
			driver = "pgx"
		}
		dsn = os.Getenv("POLYBUS_POSTGRES_URL")
		if driver == "sqlite" {
			var file string
			if err := b.db.QueryRowContext(ctx, "SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&file); err != nil {
				t.Fatal(err)
			}
			dsn = sqliteDSN(file)
		}
		// Publish calls: each batch of 10 rows is 2 or more runs of one
		// topic; killed after the 5th call, inside the third batch.
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_DRIVER="+driver, "CHILD_DSN="+dsn,
			"CHILD_TABLE="+o.Table(), "CHILD_BUS="+busURL, "CHILD_KILL_AFTER=5")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
			t.Fatalf("child: %v, want killed; output %s", err, out)
		}
		before, _ := o.Stats(ctx)
		if before.Pending == 0 || before.Pending == total {
			t.Fatalf("after the kill %d rows pending: the kill was not mid-way", before.Pending)
		}

		bus, err := polybus.Open(ctx, busURL)
		if err != nil {
			t.Fatal(err)
		}
		defer bus.Close(ctx)
		r, _ := o.Relay(outbox.RelayConfig{Publisher: bus.Publisher(), Interval: 20 * time.Millisecond})
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = r.Run(rctx); close(done) }()
		pbtest.WaitFor(t, "the outbox to drain", func() bool {
			st, err := o.Stats(ctx)
			return err == nil && st.Pending == 0
		})
		stop()
		<-done

		var mu sync.Mutex
		count := map[string]int{}
		h := func(_ context.Context, m *message.Message) error {
			mu.Lock()
			count[m.ID]++
			mu.Unlock()
			return nil
		}
		for _, topic := range []string{ta, tb} {
			pbtest.Consume(t, bus, topic, h, subscriber.Group("check"))
		}
		// Nothing lost: every ID arrives (pbtest.WaitFor fails after its
		// deadline otherwise).
		pbtest.WaitFor(t, "every message", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(count) == total
		})
		mu.Lock()
		defer mu.Unlock()
		dups := 0
		for i := range total {
			id := fmt.Sprintf("m%03d", i)
			if count[id] == 0 {
				t.Fatalf("%s lost", id)
			}
			dups += count[id] - 1
		}
		if dups > 10 {
			t.Fatalf("%d duplicates: more than the killed batch", dups)
		}
		t.Logf("%d rows were pending after the kill; %d messages received twice (the broker's duplicate window drops repeats by ID)", before.Pending, dups)
	})
}
