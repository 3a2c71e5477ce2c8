package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// readJSON parses sub --json output.
func readJSON(t *testing.T, out string) []jsonMessage {
	t.Helper()
	var msgs []jsonMessage
	for _, l := range lines(out) {
		var m jsonMessage
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// TestPubSubRoundTrip publishes and subscribes in separate processes on one
// embedded store: every way of giving a payload, keys, headers, IDs, binary
// payloads, and both output formats. One partition, so that a group reads
// the messages (of several keys) in publish order, which --count relies on.
func TestPubSubRoundTrip(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	url := "embedded://" + filepath.Join(c.tmp, "store") + "?partitions=1"

	var ids []string
	pub := func(stdin string, args ...string) []string {
		t.Helper()
		c.stdin = stdin
		defer func() { c.stdin = "" }()
		r := c.ok(append([]string{"pub", "--url", url, "--topic", "orders"}, args...)...)
		got := lines(r.stdout)
		ids = append(ids, got...)
		return got
	}
	if got := pub("", "--key", "ord-1", "--header", "source=web", "--header", "note=a b=c", "--id", "id-arg", `{"total":42}`); !reflect.DeepEqual(got, []string{"id-arg"}) {
		t.Fatalf("pub printed %q, want the ID given", got)
	}
	pub("whole\ninput\n", "--key", "ord-2", "-")
	pub("line one\r\n\nline two\n", "--lines", "--key", "ord-3")
	binary := string([]byte{0, 1, 0xfe, 0xff})
	pub(binary, "--key", "bin")
	if len(ids) != 5 {
		t.Fatalf("published %d messages, want 5: %q", len(ids), ids)
	}

	r := c.ok("sub", "--url", url, "--topic", "orders", "--group", "audit", "--count", "5", "--json")
	msgs := readJSON(t, r.stdout)
	want := []jsonMessage{
		{Topic: "orders", Group: "audit", ID: "id-arg", Key: "ord-1", Attempt: 1, Metadata: map[string]string{"source": "web", "note": "a b=c"}, Payload: `{"total":42}`},
		{Topic: "orders", Group: "audit", ID: ids[1], Key: "ord-2", Attempt: 1, Metadata: map[string]string{}, Payload: "whole\ninput\n"},
		{Topic: "orders", Group: "audit", ID: ids[2], Key: "ord-3", Attempt: 1, Metadata: map[string]string{}, Payload: "line one"},
		{Topic: "orders", Group: "audit", ID: ids[3], Key: "ord-3", Attempt: 1, Metadata: map[string]string{}, Payload: "line two"},
		{Topic: "orders", Group: "audit", ID: ids[4], Key: "bin", Attempt: 1, Metadata: map[string]string{},
			Payload: base64.StdEncoding.EncodeToString([]byte(binary)), PayloadBase64: true},
	}
	if len(msgs) != len(want) {
		t.Fatalf("got %d messages, want %d:\n%s", len(msgs), len(want), r)
	}
	for i := range want {
		if msgs[i].Time == "" {
			t.Errorf("message %d has no time", i)
		}
		msgs[i].Time = ""
		if !reflect.DeepEqual(msgs[i], want[i]) {
			t.Errorf("message %d:\n got %+v\nwant %+v", i, msgs[i], want[i])
		}
	}

	// The group has acked all five: nothing more within the timeout, which
	// with --count is a failure (exit 1).
	c.expect(1, []string{"--timeout 300ms passed after 0 of 1 messages"},
		"sub", "--url", url, "--topic", "orders", "--group", "audit", "--count", "1", "--timeout", "300ms")
	// Without --count the timeout just ends the run.
	if r := c.ok("sub", "--url", url, "--topic", "orders", "--group", "audit", "--timeout", "300ms"); r.stdout != "" {
		t.Errorf("printed %q", r.stdout)
	}

	// A new group reads them all again; the line format.
	r = c.ok("sub", "--url", url, "--topic", "orders", "--group", "lines", "--count", "2")
	wantLines := []string{
		`id-arg key=ord-1 attempt=1 note="a b=c" source=web | {"total":42}`,
		ids[1] + ` key=ord-2 attempt=1 | "whole\ninput\n"`,
	}
	if got := lines(r.stdout); !reflect.DeepEqual(got, wantLines) {
		t.Errorf("lines:\n got %q\nwant %q", got, wantLines)
	}
	// --count stops there: the group's next message is the third.
	r = c.ok("sub", "--url", url, "--topic", "orders", "--group", "lines", "--count", "1", "--json")
	if got := readJSON(t, r.stdout); len(got) != 1 || got[0].ID != ids[2] {
		t.Errorf("after --count 2 the group got %+v, want %s", got, ids[2])
	}

	// --from latest: a new group that starts now sees none of the old.
	c.expect(1, []string{"0 of 1"}, "sub", "--url", url, "--topic", "orders", "--group", "late", "--from", "latest", "--count", "1", "--timeout", "300ms")
}

func TestIsTerminal(t *testing.T) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	// /dev/null is a character device, but not a terminal: pub reads it as
	// an empty payload rather than refusing.
	if isTerminal(devNull) || isTerminal(strings.NewReader("")) {
		t.Error("/dev/null or a reader taken for a terminal")
	}
}
