package main

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// deadLetter publishes a hand-made dead letter to orders.dlq, as the DLQ
// middleware would, and returns its ID.
func deadLetter(t *testing.T, c *cli, url, id, key, reason, tenant string) {
	t.Helper()
	c.ok("pub", "--url", url, "--topic", "orders.dlq", "--id", id, "--key", key,
		"--header", "tenant="+tenant,
		"--header", "polybus-dlq-reason="+reason,
		"--header", "polybus-dlq-topic=orders",
		"--header", "polybus-dlq-group=billing",
		"--header", "polybus-dlq-attempts=3",
		"--header", "polybus-dlq-error=boom: "+id,
		"--header", "polybus-dlq-first-failure=2026-01-02T03:04:05Z",
		"--header", "polybus-dlq-last-failure=2026-01-02T03:04:06Z",
		`{"order":"`+key+`"}`)
}

// dlq runs a dlq command on url and topic orders.dlq, quickly.
func dlqArgs(url, sub string, args ...string) []string {
	return append([]string{"dlq", sub, "--url", url, "--topic", "orders.dlq", "--wait", "700ms"}, args...)
}

func depth(t *testing.T, c *cli, url string, args ...string) string {
	t.Helper()
	return strings.TrimSpace(c.ok(dlqArgs(url, "depth", args...)...).stdout)
}

// TestDLQListShowDepthWithoutConsuming: ls, show and depth read the pending
// dead letters and hand them back, however often they run.
func TestDLQListShowDepthWithoutConsuming(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	url := "embedded://" + filepath.Join(c.tmp, "store")
	deadLetter(t, c, url, "dl-1", "ord-1", "max-attempts", "acme")
	deadLetter(t, c, url, "dl-2", "ord-2", "permanent", "acme")
	deadLetter(t, c, url, "dl-3", "ord-1", "max-attempts", "globex")

	for i := 0; i < 2; i++ {
		r := c.ok(dlqArgs(url, "ls")...)
		got := lines(r.stdout)
		if len(got) != 4 || !strings.HasPrefix(got[0], "ID ") {
			t.Fatalf("ls:\n%s", r)
		}
		for j, id := range []string{"dl-1", "dl-2", "dl-3"} {
			if f := strings.Fields(got[j+1]); f[0] != id || f[1] == "" {
				t.Errorf("ls row %d = %q, want %s first (topic order)", j+1, got[j+1], id)
			}
		}
		if !strings.Contains(got[1], "max-attempts  3         orders  billing  2026-01-02T03:04:06Z  boom: dl-1") {
			t.Errorf("ls row 1 = %q", got[1])
		}
		if !strings.Contains(r.stderr, "3 dead letters pending in orders.dlq (group polybus-dlq)") {
			t.Errorf("ls stderr = %q", r.stderr)
		}
	}

	r := c.ok(dlqArgs(url, "ls", "--filter", "reason=max-attempts", "--filter", "meta.tenant=acme", "--json")...)
	if got := readJSON(t, r.stdout); len(got) != 1 || got[0].ID != "dl-1" || got[0].Metadata["polybus-dlq-group"] != "billing" {
		t.Errorf("filtered ls --json = %+v", got)
	}

	r = c.ok(dlqArgs(url, "show", "dl-2")...)
	for _, want := range []string{"id:             dl-2\n", "reason:         permanent\n", "topic:          orders\n",
		"metadata:\n  tenant=acme\n", "error:\n  boom: dl-2\n", "payload:\n  {\"order\":\"ord-2\"}\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show lacks %q:\n%s", want, r)
		}
	}
	c.expect(5, []string{"no pending dead letter with ID nope in orders.dlq"}, dlqArgs(url, "show", "nope")...)

	if got := depth(t, c, url); got != "3" {
		t.Errorf("depth = %s, want 3 after ls and show", got)
	}
	if got := depth(t, c, url, "--filter", "key=ord-1"); got != "2" {
		t.Errorf("depth --filter key=ord-1 = %s, want 2", got)
	}
}

// TestDLQDepthThreshold: the exit status drives an alert.
func TestDLQDepthThreshold(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	url := "embedded://" + filepath.Join(c.tmp, "store")
	if got := depth(t, c, url, "--threshold", "0"); got != "0" {
		t.Errorf("empty topic: depth %s", got)
	}
	deadLetter(t, c, url, "dl-1", "ord-1", "max-attempts", "acme")
	deadLetter(t, c, url, "dl-2", "ord-2", "permanent", "acme")
	if got := depth(t, c, url, "--threshold", "2"); got != "2" {
		t.Errorf("depth %s, want 2 (at the threshold: exit 0)", got)
	}
	r := c.expect(4, []string{"dlq depth 2 of orders.dlq is above the threshold 1"}, dlqArgs(url, "depth", "--threshold", "1")...)
	if strings.TrimSpace(r.stdout) != "2" {
		t.Errorf("depth above the threshold printed %q", r.stdout)
	}
	if got := depth(t, c, url, "--threshold", "0", "--filter", "reason=nothing-like-it"); got != "0" {
		t.Errorf("filtered depth %s", got)
	}
}

// TestDLQReplay replays hand-made dead letters: clean metadata, same IDs,
// consumption by the original topic's group, and only the replayed ones
// acked.
func TestDLQReplay(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	url := "embedded://" + filepath.Join(c.tmp, "store")
	deadLetter(t, c, url, "dl-1", "ord-1", "max-attempts", "acme")
	deadLetter(t, c, url, "dl-2", "ord-2", "permanent", "acme")

	r := c.ok(dlqArgs(url, "replay", "--filter", "reason=max-attempts", "--dry-run")...)
	if got := lines(r.stdout); !reflect.DeepEqual(got, []string{"would replay dl-1 key=ord-1 -> orders"}) {
		t.Errorf("dry run: %q", got)
	}
	if got := depth(t, c, url); got != "2" {
		t.Errorf("depth %s after a dry run, want 2", got)
	}

	r = c.ok(dlqArgs(url, "replay", "--filter", "reason=max-attempts")...)
	if got := lines(r.stdout); !reflect.DeepEqual(got, []string{"replayed dl-1 key=ord-1 -> orders"}) {
		t.Errorf("replay: %q", got)
	}
	if !strings.Contains(r.stderr, "replayed 1 of 2 pending dead letters in orders.dlq") {
		t.Errorf("replay stderr %q", r.stderr)
	}
	if got := depth(t, c, url); got != "1" {
		t.Errorf("depth %s after replaying one, want 1", got)
	}

	r = c.ok("sub", "--url", url, "--topic", "orders", "--group", "billing", "--count", "1", "--json")
	got := readJSON(t, r.stdout)
	want := jsonMessage{Topic: "orders", Group: "billing", ID: "dl-1", Key: "ord-1", Attempt: 1,
		Metadata: map[string]string{"tenant": "acme"}, Payload: `{"order":"ord-1"}`}
	if len(got) != 1 {
		t.Fatalf("sub: %s", r)
	}
	got[0].Time = ""
	if !reflect.DeepEqual(got[0], want) {
		t.Errorf("replayed message:\n got %+v\nwant %+v", got[0], want)
	}

	// By ID, to another topic; an unknown ID is exit 5 but does not stop
	// the known one.
	r = c.expect(5, []string{"no pending dead letter with ID nope"}, dlqArgs(url, "replay", "dl-2", "nope", "--to", "orders-retry")...)
	if got := lines(r.stdout); !reflect.DeepEqual(got, []string{"replayed dl-2 key=ord-2 -> orders-retry"}) {
		t.Errorf("replay --to: %q", got)
	}
	if got := depth(t, c, url); got != "0" {
		t.Errorf("depth %s after replaying all, want 0", got)
	}
	r = c.ok("sub", "--url", url, "--topic", "orders-retry", "--group", "g", "--count", "1")
	if !strings.HasPrefix(r.stdout, "dl-2 key=ord-2 attempt=1 tenant=acme | ") {
		t.Errorf("orders-retry got %q", r.stdout)
	}
}

// TestDLQReplayWithinTheDedupeWindow: JetStream drops a message ID that it
// stored within its duplicates window, so replay refuses rather than ack a
// dead letter whose copy the broker would discard.
func TestDLQReplayWithinTheDedupeWindow(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	url := "embedded://" + filepath.Join(c.tmp, "store")
	c.ok("pub", "--url", url, "--topic", "orders", "--id", "dl-1", "--key", "ord-1", "first")
	deadLetter(t, c, url, "dl-1", "ord-1", "permanent", "acme")

	r := c.expect(1, []string{"dead letter dl-1 not replayed: orders drops a message ID that it stored in the last 2m0s", "--new-id"},
		dlqArgs(url, "replay")...)
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
	if got := depth(t, c, url); got != "1" {
		t.Errorf("depth %s, want the dead letter still pending", got)
	}
	r = c.ok(dlqArgs(url, "replay", "--new-id")...)
	id := between(r.stdout, "replayed dl-1 as ", " ")
	if id == "" {
		t.Fatalf("replay --new-id: %s", r)
	}
	r = c.ok("sub", "--url", url, "--topic", "orders", "--group", "g", "--count", "2", "--json")
	if got := readJSON(t, r.stdout); len(got) != 2 || got[0].ID != "dl-1" || got[1].ID != id {
		t.Errorf("orders holds %+v, want dl-1 then %s", got, id)
	}
}

// TestDLQReplayOfTheDemosDeadLetter replays what the DLQ middleware
// dead-lettered in the demo, back to the group that failed it.
func TestDLQReplayOfTheDemosDeadLetter(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	store := "embedded://" + filepath.Join(c.tmp, "store")
	// A short duplicates window, so that the replay need not wait 2m.
	r := c.ok("demo", "--url", store+"?duplicates=100ms")
	prefix := between(r.stdout, `topics are prefixed "`, `"`)
	dlqTopic := prefix + "orders.dlq"
	ls := c.ok("dlq", "ls", "--url", store, "--topic", dlqTopic, "--json")
	dead := readJSON(t, ls.stdout)
	if len(dead) != 1 || dead[0].Key != "ord-1004" || dead[0].Metadata["polybus-dlq-reason"] != "max-attempts" ||
		dead[0].Metadata["polybus-dlq-group"] != "inventory" || dead[0].Metadata["polybus-dlq-attempts"] != "3" {
		t.Fatalf("dead letters: %+v", dead)
	}
	// Wait out the window: replay refuses until it has passed.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r = c.run("dlq", "replay", "--url", store, "--topic", dlqTopic)
		if r.code == 0 {
			break
		}
		if r.code != 1 || !strings.Contains(r.stderr, "duplicates window") || time.Now().After(deadline) {
			t.Fatalf("replay: %s", r)
		}
	}
	if want := "replayed " + dead[0].ID + " key=ord-1004 -> " + prefix + "orders\n"; r.stdout != want {
		t.Errorf("replay printed %q, want %q", r.stdout, want)
	}
	r = c.ok("sub", "--url", store, "--topic", prefix+"orders", "--group", "inventory", "--count", "1", "--json")
	got := readJSON(t, r.stdout)
	if len(got) != 1 || got[0].ID != dead[0].ID || got[0].Metadata["polybus-seq"] != "1" || got[0].Metadata["polybus-dlq-reason"] != "" {
		t.Errorf("inventory got %+v", got)
	}
}

// TestDLQPurge: confirmation, refusal without stdin, filters, dry run.
func TestDLQPurge(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	url := "embedded://" + filepath.Join(c.tmp, "store")
	deadLetter(t, c, url, "dl-1", "ord-1", "max-attempts", "acme")
	deadLetter(t, c, url, "dl-2", "ord-2", "permanent", "acme")
	deadLetter(t, c, url, "dl-3", "ord-3", "permanent", "globex")

	c.expect(2, []string{"pass --yes"}, dlqArgs(url, "purge")...) // no answer on stdin
	c.stdin = "n\n"
	c.expect(1, []string{"Purge 3 of 3 pending dead letters in orders.dlq (group polybus-dlq)?", "purge cancelled"}, dlqArgs(url, "purge")...)
	c.stdin = ""
	r := c.ok(dlqArgs(url, "purge", "--dry-run", "--filter", "reason=permanent")...)
	if !strings.Contains(r.stderr, "would purge 2 of 3") || len(lines(r.stdout)) != 3 {
		t.Errorf("dry run:\n%s", r)
	}
	if got := depth(t, c, url); got != "3" {
		t.Fatalf("depth %s, want 3: nothing purged yet", got)
	}

	r = c.ok(dlqArgs(url, "purge", "--filter", "meta.tenant=globex", "--yes")...)
	if got := lines(r.stdout); !reflect.DeepEqual(got, []string{"purged dl-3 key=ord-3"}) {
		t.Errorf("purge --yes: %q", got)
	}
	c.stdin = "yes\n"
	r = c.ok(dlqArgs(url, "purge", "dl-1")...)
	if got := lines(r.stdout); !reflect.DeepEqual(got, []string{"purged dl-1 key=ord-1"}) {
		t.Errorf("purge confirmed: %q", got)
	}
	c.stdin = ""
	r = c.ok(dlqArgs(url, "ls", "--json")...)
	if got := readJSON(t, r.stdout); len(got) != 1 || got[0].ID != "dl-2" {
		t.Errorf("left: %+v", got)
	}
}
