package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestEvents drives `polybus events` on a SQLite store: append with
// expected versions (a conflict names both), read forward and backward,
// tail the global log, bad input, and a projection that does not exist.
func TestEvents(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	db := "--db=sqlite:" + c.dir + "/events.db"
	first := c.ok("events", db, "append", "--stream", "acct-1", "--type", "Deposited", "--expect", "none", `{"amount":100}`)
	if !regexp.MustCompile(`^acct-1@1 0/1 \S+\n$`).MatchString(first.stdout) {
		t.Fatalf("first append printed %q", first.stdout)
	}
	c.ok("events", db, "append", "--stream", "acct-1", "--type", "Withdrawn", "--expect", "1", `{"amount":30}`)
	c.expect(1, []string{`version conflict on stream "acct-1": expected version 1, actual version 2`},
		"events", db, "append", "--stream", "acct-1", "--type", "Withdrawn", "--expect", "1", `{"amount":30}`)
	c.expect(2, []string{"DATA is not JSON"}, "events", db, "append", "--stream", "x", "--type", "T", "not json")
	c.expect(2, []string{"--stream and --type are required"}, "events", db, "append", "{}")

	fields := func(out string) []string {
		var got []string
		for _, l := range lines(out) {
			f := strings.Split(l, "\t")
			got = append(got, f[0]+" "+f[1]+" "+f[2]+" "+f[4])
		}
		return got
	}
	want := []string{`0/1 acct-1@1 Deposited {"amount":100}`, `0/2 acct-1@2 Withdrawn {"amount":30}`}
	if got := fields(c.ok("events", db, "read", "--stream", "acct-1").stdout); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("read: %q, want %q", got, want)
	}
	if got := fields(c.ok("events", db, "read", "--stream", "acct-1", "--backward").stdout); len(got) != 2 || got[0] != want[1] {
		t.Errorf("read --backward: %q", got)
	}
	if got := fields(c.ok("events", db, "tail").stdout); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("tail: %q, want %q", got, want)
	}
}
