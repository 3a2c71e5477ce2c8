package main

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TestRunInProcess runs commands through run, as main does, on a named
// memory broker that the test and the commands share. It covers the code
// paths without a child process, and the package's goleak check sees that
// nothing they start outlives them.
func TestRunInProcess(t *testing.T) {
	ctx := context.Background()
	url := "mem://unit-" + t.Name()
	call := func(stdin string, args ...string) (int, string, string) {
		var out, errw bytes.Buffer
		code := run(ctx, args, strings.NewReader(stdin), &out, &errw)
		return code, out.String(), errw.String()
	}
	if code, out, errs := call("", "demo", "--url", "mem://"); code != 0 || !strings.Contains(out, "in sequence    every consumer") {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errs)
	}
	code, out, errs := call("a\nb\n", "pub", "--url", url, "--topic", "t.dlq", "--lines", "--header", "polybus-dlq-topic=t")
	if code != 0 || len(lines(out)) != 2 {
		t.Fatalf("pub: exit %d\n%s\n%s", code, out, errs)
	}
	// The named broker lives as long as the process; each command opens
	// and closes its own client on it.
	if code, out, _ := call("", "dlq", "depth", "--url", url, "--topic", "t.dlq", "--wait", "200ms", "--threshold", "1"); code != exitThreshold || out != "2\n" {
		t.Errorf("depth: exit %d, %q", code, out)
	}
	if code, out, errs := call("", "dlq", "replay", "--url", url, "--topic", "t.dlq", "--wait", "200ms"); code != 0 || len(lines(out)) != 2 {
		t.Errorf("replay: exit %d\n%s\n%s", code, out, errs)
	}
	if code, out, errs := call("", "sub", "--url", url, "--topic", "t", "--group", "g", "--count", "2", "--timeout", "5s"); code != 0 || !strings.Contains(out, "| a\n") || !strings.Contains(out, "| b\n") {
		t.Errorf("sub: exit %d\n%s\n%s", code, out, errs)
	}
	// A cancelled context (SIGINT) ends a subscription with exit 130.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	var out2, err2 bytes.Buffer
	if code := run(cctx, []string{"sub", "--url", url, "--topic", "t", "--group", "g"}, strings.NewReader(""), &out2, &err2); code != exitInterrupted {
		t.Errorf("interrupted sub: exit %d, %s", code, err2.String())
	}
}

func TestPayloadText(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{[]byte(`{"a":1}`), `{"a":1}`},
		{[]byte("two\nlines"), `"two\nlines"`},
		{[]byte("tab\there"), `"tab\there"`},
		{[]byte("héllo wörld"), "héllo wörld"},
		{[]byte{0xff, 0}, "base64:/wA="},
		{nil, ""},
	} {
		if got := payloadText(tc.in); got != tc.want {
			t.Errorf("payloadText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestWriteLineAndJSON(t *testing.T) {
	m := &message.Message{ID: "id1", Key: "k 1", Payload: []byte{0xff}, Metadata: message.Metadata{"b": "2", "a": "x=y"},
		Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
	var b bytes.Buffer
	if err := writeLine(&b, m, false); err != nil {
		t.Fatal(err)
	}
	if want := `id1 key="k 1" attempt=0 a="x=y" b=2 | base64:/w==` + "\n"; b.String() != want {
		t.Errorf("line %q, want %q", b.String(), want)
	}
	b.Reset()
	if err := writeJSON(&b, m, false); err != nil {
		t.Fatal(err)
	}
	want := `{"topic":"","id":"id1","key":"k 1","attempt":0,"time":"2026-01-02T03:04:05.000000006Z","metadata":{"a":"x=y","b":"2"},"payload":"/w==","payload_base64":true}` + "\n"
	if b.String() != want {
		t.Errorf("json %s, want %s", b.String(), want)
	}
}

func TestFilters(t *testing.T) {
	m := &message.Message{ID: "id1", Key: "ord-1", Metadata: message.Metadata{
		message.KeyDLQReason: "permanent", message.KeyDLQTopic: "orders", message.KeyDLQGroup: "billing",
		message.KeyDLQAttempts: "3", "tenant": "acme", "empty": "",
	}}
	for _, tc := range []struct {
		filters []string
		match   bool
	}{
		{nil, true},
		{[]string{"reason=permanent"}, true},
		{[]string{"reason=max-attempts"}, false},
		{[]string{"topic=orders", "group=billing", "attempts=3", "key=ord-1", "id=id1"}, true},
		{[]string{"meta.tenant=acme"}, true},
		{[]string{"meta.tenant=acme", "reason=max-attempts"}, false},
		{[]string{"meta.empty="}, true},
		{[]string{"meta.missing="}, false},
		{[]string{"meta.tenant=a=b"}, false},
	} {
		sel, err := newSelection(nil, tc.filters)
		if err != nil {
			t.Fatalf("%q: %v", tc.filters, err)
		}
		if got := sel.match(m); got != tc.match {
			t.Errorf("%q: match %v, want %v", tc.filters, got, tc.match)
		}
	}
	for _, bad := range []string{"reason", "=x", "colour=red", "meta.=x"} {
		if _, err := parseFilters([]string{bad}); !errors.As(err, new(usageError)) {
			t.Errorf("%q: err = %v, want a usage error", bad, err)
		}
	}
}

func TestReplayCopy(t *testing.T) {
	tm := time.Now()
	m := &message.Message{ID: "id1", Key: "k", Payload: []byte("p"), Time: tm, Metadata: message.Metadata{
		message.KeyDLQReason: "permanent", message.KeyDLQError: "e", message.KeyDLQTopic: "t", message.KeyDLQGroup: "g",
		message.KeyDLQAttempts: "1", message.KeyDLQFirstFailure: "x", message.KeyDLQLastFailure: "y",
		message.MetadataPrefix + "dlq-future-key": "z", message.KeySequence: "4", "app": "v",
	}}
	c := replayCopy(m)
	want := &message.Message{ID: "id1", Key: "k", Payload: []byte("p"), Time: tm, Metadata: message.Metadata{message.KeySequence: "4", "app": "v"}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("copy %+v, want %+v", c, want)
	}
	if len(m.Metadata) != 10 {
		t.Error("replayCopy changed the dead letter")
	}
}

func TestTooSoon(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	m := &message.Message{ID: "x", Time: now.Add(-time.Minute)}
	if err := tooSoon(m, "t", 2*time.Minute, now); err == nil || !strings.Contains(err.Error(), "replay it after 2026-01-01T12:01:01Z") {
		t.Errorf("within the window: %v", err)
	}
	if err := tooSoon(m, "t", 30*time.Second, now); err != nil {
		t.Errorf("past the window: %v", err)
	}
	if err := tooSoon(m, "t", 0, now); err != nil {
		t.Errorf("no window: %v", err)
	}
}

func TestCodeOf(t *testing.T) {
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for _, tc := range []struct {
		ctx  context.Context
		err  error
		want int
	}{
		{ctx, nil, exitOK},
		{ctx, errors.New("x"), exitFailure},
		{ctx, usagef("x"), exitUsage},
		{ctx, message.Errorf(message.InvalidArgument, "op", "x"), exitUsage},
		{ctx, message.Errorf(message.Unavailable, "op", "x"), exitUnavailable},
		{ctx, prefixed{"p: ", message.Errorf(message.Unavailable, "op", "x")}, exitUnavailable},
		{ctx, message.Errorf(message.NotFound, "op", "x"), exitNotFound},
		{ctx, exitError{exitThreshold, "x"}, exitThreshold},
		{cancelled, context.Canceled, exitInterrupted},
		{cancelled, errors.New("x"), exitInterrupted},
	} {
		if got := codeOf(tc.ctx, tc.err); got != tc.want {
			t.Errorf("codeOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestRedact(t *testing.T) {
	a := newApp(nil, nil, nil)
	a.hide("nats://alice:pa%2Fss@host:4222")
	a.hide("nats://t0ken@host")
	a.hide("sqs://host?secret_key=k3y&region=eu")
	for in, want := range map[string]string{
		"dial nats://alice:pa%2Fss@host:4222: refused": "dial nats://alice:xxxxx@host:4222: refused",
		"password pa/ss in text":                       "password xxxxx in text",
		"token t0ken":                                  "token xxxxx",
		"key k3y, region eu":                           "key xxxxx, region eu",
	} {
		if got := a.redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
	if got := a.redactURL("mem://"); got != "mem://" {
		t.Errorf("redactURL(mem://) = %q", got)
	}
}

// notFoundDriver is a subscriber driver whose topics never exist, as on a
// broker that can tell (an SQS queue that was never created).
type notFoundDriver struct{ subscriber.Driver }

func (notFoundDriver) Open(_ context.Context, topic string, _ subscriber.OpenConfig) (subscriber.Subscription, error) {
	return nil, message.Errorf(message.NotFound, "test: subscribe", "topic %q does not exist", topic)
}

func init() {
	polybus.Register("unittest-notfound", func(ctx context.Context, u *url.URL) (*polybus.Client, error) {
		b, err := memory.New(memory.Options{})
		if err != nil {
			return nil, err
		}
		return polybus.NewClient(b.PublisherDriver(), notFoundDriver{b.SubscriberDriver()}, polybus.ClientOptions{})
	})
}

func TestTopicNotFound(t *testing.T) {
	for _, args := range [][]string{
		{"sub", "--url", "unittest-notfound://", "--topic", "nope", "--group", "g"},
		{"dlq", "depth", "--url", "unittest-notfound://", "--topic", "nope.dlq"},
	} {
		var out, errw bytes.Buffer
		code := run(context.Background(), args, strings.NewReader(""), &out, &errw)
		if code != exitNotFound || !strings.Contains(errw.String(), `topic "nope`) {
			t.Errorf("%q: exit %d, %s", args, code, errw.String())
		}
	}
}
