package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// summary is the demo's summary block, the same on every broker that keeps
// per-key order.
const summary = `summary
  published      7 events for 4 orders
  handled        payment 7, inventory 6, notification 7, analytics 7
  retried        2  (inventory)
  dead-lettered  1  (to orders.dlq; 1 there now)
  deduplicated   1  (notification)
  reordered      8  (ord-1002 OrderPaid, ord-1003 OrderPaid, in each consumer)
  analytics      4 orders placed (€100.00), 3 paid (€88.00)
  in sequence    every consumer handled every order's events in order
`

func golden(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "demo.golden"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDemoDefault runs the README's command as a new user would: no URL,
// no config. It runs on a fresh embedded store in the temporary directory,
// prints the same narration every time, and leaves nothing behind.
func TestDemoDefault(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	want := golden(t)
	if !strings.Contains(want, summary) {
		t.Fatalf("testdata/demo.golden lacks the summary:\n%s", want)
	}
	for run := 1; run <= 2; run++ {
		r := c.ok("demo")
		if r.stdout != want {
			t.Errorf("run %d: output differs from testdata/demo.golden:\n%s", run, r)
		}
		if r.stderr != "" {
			t.Errorf("run %d: stderr: %s", run, r.stderr)
		}
	}
	for _, dir := range []string{c.dir, c.tmp} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) > 0 {
			t.Errorf("the demo left %v in %s", entries, dir)
		}
	}
}

// TestDemoMem runs the same flow on the memory broker: the same narration
// and figures.
func TestDemoMem(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	r := c.ok("demo", "--url", "mem://")
	// The golden output without its first line (the broker) and its
	// last (a hint for the default broker only).
	want, _, _ := strings.Cut(golden(t), "\nnext: ")
	_, wantRest, _ := strings.Cut(want, "\n")
	first, rest, _ := strings.Cut(r.stdout, "\n")
	if first != "polybus demo: an order flow on mem://" {
		t.Errorf("first line %q", first)
	}
	if rest != wantRest {
		t.Errorf("output differs from testdata/demo.golden after its first line:\n%s", r)
	}
}

// TestDemoOnANamedBroker runs the demo on an embedded store of the user's
// choosing: topics get a per-run prefix, so that a second run on the same
// store starts clean and prints the same figures.
func TestDemoOnANamedBroker(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	url := "embedded://" + filepath.Join(c.tmp, "store")
	var prefixes []string
	for run := 1; run <= 2; run++ {
		r := c.ok("demo", "--url", url)
		prefix := between(r.stdout, `topics are prefixed "`, `"`)
		if !strings.HasPrefix(prefix, "demo-") {
			t.Fatalf("run %d: no topic prefix:\n%s", run, r)
		}
		prefixes = append(prefixes, prefix)
		if want := strings.ReplaceAll(summary, "orders.dlq", prefix+"orders.dlq"); !strings.Contains(r.stdout, want) {
			t.Errorf("run %d: summary differs:\n%s", run, r)
		}
		if !strings.Contains(r.stdout, "next: polybus dlq ls --url "+url+" --topic "+prefix+"orders.dlq") {
			t.Errorf("run %d: no dlq hint:\n%s", run, r)
		}
	}
	if prefixes[0] == prefixes[1] {
		t.Errorf("both runs used prefix %q", prefixes[0])
	}
}

// between returns the text of s between the first start and the next end.
func between(s, start, end string) string {
	_, after, ok := strings.Cut(s, start)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(after, end)
	return v
}
