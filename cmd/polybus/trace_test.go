package main

import (
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestTraceCommand publishes a flow by hand on one embedded store (A on
// orders causes B on shipping, which causes C, dead-lettered from shipping;
// D belongs to the flow, its cause gone; X is unrelated) and checks that
// `polybus trace B` prints the chain from A down through C's dead letter,
// then D; that an unknown ID exits 5; and that `sub --trace` prints the
// trace IDs.
func TestTraceCommand(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	url := "embedded://" + filepath.Join(c.tmp, "store") + "?partitions=1"
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	tp := "traceparent=00-" + traceID + "-00f067aa0ba902b7-01"
	pub := func(topic, id string, headers ...string) {
		t.Helper()
		args := []string{"pub", "--url", url, "--topic", topic, "--id", id, "--key", "ord-1"}
		for _, h := range headers {
			args = append(args, "--header", h)
		}
		c.ok(append(args, "payload of "+id)...)
	}
	pub("orders", "A", "polybus-correlation-id=flow-1", tp)
	pub("shipping", "B", "polybus-correlation-id=flow-1", "polybus-causation-id=A", tp)
	pub("shipping", "C", "polybus-correlation-id=flow-1", "polybus-causation-id=B")
	pub("shipping.dlq", "C", "polybus-correlation-id=flow-1", "polybus-causation-id=B", "polybus-dlq-reason=max-attempts")
	pub("orders", "D", "polybus-correlation-id=flow-1", "polybus-causation-id=Z")
	pub("orders", "X")

	r := c.ok("trace", "B", "--url", url, "--topic", "orders", "--topic", "shipping", "--wait", "500ms")
	times := regexp.MustCompile(` time=\S+`)
	got := lines(times.ReplaceAllString(r.stdout, ""))
	want := []string{
		"message B correlation=flow-1 trace=" + traceID,
		"A topic=orders key=ord-1 trace=" + traceID,
		"  *B topic=shipping key=ord-1 trace=" + traceID,
		"    C topic=shipping key=ord-1",
		"    C topic=shipping.dlq key=ord-1 dlq=max-attempts",
		"also in this flow or trace:",
		"D topic=orders key=ord-1",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("trace B printed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Nothing was consumed: a second run prints the same.
	r = c.ok("trace", "B", "--url", url, "--topic", "orders", "--topic", "shipping", "--wait", "500ms")
	if again := lines(times.ReplaceAllString(r.stdout, "")); !reflect.DeepEqual(again, want) {
		t.Errorf("second trace B printed\n%s", strings.Join(again, "\n"))
	}

	c.expect(exitNotFound, []string{`message "nope" is in none of orders, orders.dlq`}, "trace", "nope", "--url", url, "--topic", "orders", "--wait", "300ms")

	r = c.ok("sub", "--url", url, "--topic", "orders", "--group", "audit", "--count", "3", "--trace")
	var traces []string
	for _, l := range lines(r.stdout) {
		f := strings.Fields(l)
		traces = append(traces, f[0]+" "+f[3])
	}
	if want := []string{"A trace=" + traceID, `D trace=""`, `X trace=""`}; !reflect.DeepEqual(traces, want) {
		t.Errorf("sub --trace printed %q, want %q", traces, want)
	}
}
