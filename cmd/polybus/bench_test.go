package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polybus/polybus/bench"
)

// TestBench runs two rounds on two mem:// brokers and checks the table,
// the JSON (every phase of every round, exact counts) and the HTML file.
func TestBench(t *testing.T) {
	dir := t.TempDir()
	jsonFile, htmlFile := filepath.Join(dir, "b.json"), filepath.Join(dir, "b.html")
	var out, errs bytes.Buffer
	code := run(context.Background(), []string{"bench", "--url", "mem://a", "--url", "mem://b", "-n", "2000", "--steady-messages", "1000",
		"--rate", "2000", "--consumers", "2", "--keys", "8", "--rounds", "2", "--json", jsonFile, "--html", htmlFile}, strings.NewReader(""), &out, &errs)
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errs.String())
	}
	table := out.String()
	for _, want := range []string{"mem://a", "mem://b", "publish", "consume", "steady", "spread", "ratio"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if n := len(strings.Split(strings.TrimSpace(table), "\n")); n != 7 {
		t.Errorf("table has %d lines, want a header and 6 rows:\n%s", n, table)
	}
	raw, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 12 || len(rep.Summaries) != 6 {
		t.Fatalf("%d results, %d summaries; want 12 and 6", len(rep.Results), len(rep.Summaries))
	}
	for _, r := range rep.Results {
		want := 2000
		if r.Phase == bench.PhaseSteady {
			want = 1000
		}
		if r.Messages != want || r.Duplicates != 0 || r.Reordered != 0 || r.Partial || r.Round < 1 || r.Round > 2 {
			t.Errorf("result %+v", r)
		}
	}
	page, err := os.ReadFile(htmlFile)
	if err != nil || !bytes.Contains(page, []byte(`"target":"mem://b"`)) || bytes.Contains(page, []byte(`src="http`)) {
		t.Errorf("html: %v, %d bytes", err, len(page))
	}
}

func TestBenchErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"bench", "--size", "8"}, exitUsage, "below the minimum of 16 bytes"},
		{[]string{"bench", "--phases", "consume"}, exitUsage, "add publish"},
		{[]string{"bench", "--phases", "warp"}, exitUsage, `unknown phase "warp"`},
		{[]string{"bench", "--rounds", "0"}, exitUsage, "--rounds 0"},
		{[]string{"bench", "--url", "bogus://x"}, exitUsage, "bogus"},
		{[]string{"bench", "--url", "nats://127.0.0.1:1", "--connect-timeout", "1s"}, exitUnavailable, "cannot reach the broker"},
	} {
		start := time.Now()
		var out, errs bytes.Buffer
		code := run(context.Background(), tc.args, strings.NewReader(""), &out, &errs)
		if code != tc.code || !strings.Contains(errs.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errs.String(), tc.code, tc.want)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("%v took %s", tc.args, d)
		}
	}
}

// TestBenchInterrupted: a SIGINT (the context ending) mid-run prints what
// was measured so far, marked partial, and exits 130.
func TestBenchInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	jsonFile := filepath.Join(dir, "b.json")
	var out, errs bytes.Buffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"bench", "--url", "mem://", "-n", "100000000", "--phases", "publish", "--json", jsonFile}, strings.NewReader(""), &out, &errs)
	}()
	// The interrupt comes while the publish phase runs (it would take
	// minutes); the assertions below hold whenever it comes after the
	// warm-up.
	time.AfterFunc(500*time.Millisecond, cancel)
	select {
	case code := <-done:
		if code != exitInterrupted {
			t.Fatalf("exit %d, want %d\n%s", code, exitInterrupted, errs.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("bench did not stop within a minute of the interrupt")
	}
	if !strings.Contains(out.String(), "mem:// (partial)") || !strings.Contains(out.String(), "publish") {
		t.Fatalf("table:\n%s", out.String())
	}
	var rep bench.Report
	raw, _ := os.ReadFile(jsonFile)
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 1 || !rep.Results[0].Partial || rep.Results[0].Messages == 0 || rep.Results[0].Messages >= 100000000 {
		t.Fatalf("results %+v", rep.Results)
	}
}
