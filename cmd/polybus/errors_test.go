package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// closedPort returns a local TCP port that nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	return port
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	closed := "127.0.0.1:" + closedPort(t)
	for _, tc := range []struct {
		name string
		code int
		want []string
		args []string
	}{
		{"unknown scheme", 2, []string{`unknown scheme "kafkaa" in kafkaa://host:9092`, "known: amqp, amqps, embedded, kafka, mem, nats, sqs", "Run 'polybus pub --help'"},
			[]string{"pub", "--url", "kafkaa://host:9092", "--topic", "t", "x"}},
		{"malformed URL", 2, []string{"malformed URL"}, []string{"sub", "--url", "nats://[::1", "--topic", "t", "--group", "g"}},
		{"no scheme", 2, []string{"has no scheme"}, []string{"pub", "--url", "localhost", "--topic", "t", "x"}},
		{"unknown option", 2, []string{"unknown query parameter bogus"}, []string{"pub", "--url", "mem://?bogus=1", "--topic", "t", "x"}},
		{"unknown nats option", 2, []string{"bogus"}, []string{"pub", "--url", "nats://" + closed + "?bogus=1", "--topic", "t", "x"}},
		{"refused", 3, []string{"cannot reach the broker", "nats://" + closed}, []string{"pub", "--url", "nats://" + closed, "--topic", "t", "x"}},
		{"unknown command", 2, []string{`unknown command "publish"`, "Run 'polybus --help'"}, []string{"publish"}},
		{"unknown flag", 2, []string{"unknown flag: --topik"}, []string{"pub", "--topik", "t", "x"}},
		{"missing topic", 2, []string{`required flag(s) "topic" not set`}, []string{"pub", "x"}},
		{"missing group", 2, []string{`required flag(s) "group" not set`}, []string{"sub", "--topic", "t"}},
		{"bad from", 2, []string{`--from "middle": want earliest or latest`}, []string{"sub", "--url", "mem://", "--topic", "t", "--group", "g", "--from", "middle"}},
		{"bad header", 2, []string{`--header "novalue": want NAME=VALUE`}, []string{"pub", "--url", "mem://", "--topic", "t", "--header", "novalue", "x"}},
		{"id with lines", 2, []string{"--id names one message"}, []string{"pub", "--url", "mem://", "--topic", "t", "--id", "a", "--lines", "x"}},
		{"empty topic", 2, []string{"invalid argument"}, []string{"pub", "--url", "embedded://./s", "--topic", "a..b", "x"}},
		{"bad filter", 2, []string{`unknown field "colour"`}, []string{"dlq", "ls", "--url", "mem://", "--topic", "t.dlq", "--filter", "colour=red"}},
		{"show needs an ID", 2, []string{"accepts 1 arg(s)"}, []string{"dlq", "show", "--url", "mem://", "--topic", "t.dlq"}},
		{"negative threshold", 2, []string{"--threshold -5 is negative"}, []string{"dlq", "depth", "--url", "mem://", "--topic", "t.dlq", "--threshold", "-5"}},
		{"bad regexp", 2, []string{"--run"}, []string{"conformance", "--url", "mem://", "--run", "("}},
		{"config file missing", 2, []string{"config file nope.yaml does not exist"}, []string{"pub", "--config", "nope.yaml", "--topic", "t", "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t)
			r := c.expect(tc.code, tc.want, tc.args...)
			if r.took > 10*time.Second {
				t.Errorf("took %s", r.took)
			}
		})
	}
}

// TestUnreachableBrokerFailsFast: a broker that does not answer at all is
// exit 3 within the connect timeout, never a hang.
func TestUnreachableBrokerFailsFast(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	// A non-routable address: the SYN goes unanswered (or the network says
	// unreachable at once); either way, exit 3 within the timeout.
	r := c.expect(3, []string{"cannot reach the broker (from --url)", "within 1s"},
		"sub", "--url", "nats://10.255.255.1:4222", "--connect-timeout", "1s", "--topic", "t", "--group", "g")
	if r.took > 5*time.Second {
		t.Errorf("took %s with --connect-timeout 1s", r.took)
	}
}

func TestConfigFile(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	store := filepath.Join(c.tmp, "store")
	yaml := "url: embedded://" + store + "\n" +
		"profiles:\n" +
		"  broken:\n" +
		"    url: kafkaa://host\n" +
		"  typo:\n" +
		"    url: mem://\n"
	if err := os.WriteFile(filepath.Join(c.dir, "polybus.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	// The file's URL: a message published there is read back from there.
	id := strings.TrimSpace(c.ok("pub", "--topic", "t", "hello").stdout)
	r := c.ok("sub", "--url", "embedded://"+store, "--topic", "t", "--group", "g", "--count", "1")
	if !strings.HasPrefix(r.stdout, id+" ") {
		t.Errorf("sub got %q, want %s", r.stdout, id)
	}
	c.expect(2, []string{`unknown scheme "kafkaa"`}, "pub", "--profile", "broken", "--topic", "t", "x")
	c.env = []string{"POLYBUS_PROFILE=broken"}
	c.expect(2, []string{`unknown scheme "kafkaa"`}, "pub", "--topic", "t", "x")
	c.expect(2, []string{`no profile "nope" (profiles: broken, typo)`}, "pub", "--profile", "nope", "--topic", "t", "x")
	// $POLYBUS_URL beats the file, --url beats $POLYBUS_URL.
	c.env = []string{"POLYBUS_URL=kafkaa://env"}
	c.expect(2, []string{`unknown scheme "kafkaa" in kafkaa://env`}, "pub", "--topic", "t", "x")
	c.ok("pub", "--url", "mem://", "--topic", "t", "x")
	c.env = nil

	if err := os.WriteFile(filepath.Join(c.dir, "polybus.yaml"), []byte("url: mem://\nconect_timeout: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.expect(2, []string{"polybus.yaml: line 2: unknown field conect_timeout"}, "pub", "--topic", "t", "x")
}

// TestCredentialsRedacted: passwords and tokens never reach the output,
// from flags, the environment or the config file, in errors and in
// normal output.
func TestCredentialsRedacted(t *testing.T) {
	t.Parallel()
	closed := "127.0.0.1:" + closedPort(t)
	const secret = "s3cretValue"
	for _, tc := range []struct {
		name string
		env  []string
		file string
		args []string
	}{
		{"password", nil, "", []string{"pub", "--url", "nats://alice:" + secret + "@" + closed, "--topic", "t", "x"}},
		{"token", nil, "", []string{"pub", "--url", "nats://" + secret + "@" + closed, "--topic", "t", "x"}},
		{"token parameter", nil, "", []string{"pub", "--url", "nats://" + closed + "?token=" + secret, "--topic", "t", "x"}},
		{"malformed", nil, "", []string{"pub", "--url", "nats://alice:" + secret + "@[::1", "--topic", "t", "x"}},
		{"unknown scheme", nil, "", []string{"pub", "--url", "kafkaa://alice:" + secret + "@host", "--topic", "t", "x"}},
		{"env", []string{"POLYBUS_URL=nats://alice:" + secret + "@" + closed}, "", []string{"sub", "--topic", "t", "--group", "g"}},
		{"config file", nil, "url: nats://alice:" + secret + "@" + closed + "\n", []string{"dlq", "depth", "--topic", "t.dlq"}},
		{"config file, bad option", nil, "url: nats://alice:" + secret + "@" + closed + "?bogus=1\n", []string{"dlq", "depth", "--topic", "t.dlq"}},
		{"conformance", nil, "", []string{"conformance", "--url", "nats://alice:" + secret + "@" + closed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t)
			c.env = tc.env
			if tc.file != "" {
				if err := os.WriteFile(filepath.Join(c.dir, "polybus.yaml"), []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r := c.run(tc.args...)
			if r.code == 0 {
				t.Fatalf("succeeded:\n%s", r)
			}
			if strings.Contains(r.stdout+r.stderr, secret) {
				t.Errorf("the secret shows:\n%s", r)
			}
			if !strings.Contains(r.stderr, "xxxxx") {
				t.Errorf("no redacted URL in the error:\n%s", r)
			}
		})
	}

	// A successful run that prints its URL: the demo's hint.
	c := newCLI(t)
	c.env = []string{"POLYBUS_URL=embedded://" + filepath.Join(c.tmp, "store") + "?token=" + secret}
	r := c.run("demo")
	// embedded:// takes no token: the run fails at once, and must not
	// show it either.
	if strings.Contains(r.stdout+r.stderr, secret) {
		t.Errorf("the secret shows:\n%s", r)
	}
}

// TestHelp: every command explains itself with an example, and the root
// help documents the exit codes.
func TestHelp(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	root := c.ok("--help").stdout
	for _, want := range []string{"Exit status:", "0    success", "2    usage", "3    unavailable", "4    dlq depth", "5    not found", "130  interrupted",
		"$POLYBUS_URL", "polybus.yaml", "embedded://", "Schemes built in: amqp, amqps, embedded, kafka, mem, nats, sqs"} {
		if !strings.Contains(root, want) {
			t.Errorf("polybus --help lacks %q", want)
		}
	}
	for _, cmd := range [][]string{{"demo"}, {"pub"}, {"sub"}, {"dlq"}, {"dlq", "ls"}, {"dlq", "show"}, {"dlq", "replay"},
		{"dlq", "purge"}, {"dlq", "depth"}, {"conformance"}} {
		r := c.ok(append(cmd, "--help")...)
		if !strings.Contains(r.stdout, "Examples:\n  polybus "+cmd[0]) {
			t.Errorf("polybus %s --help has no example:\n%s", strings.Join(cmd, " "), r.stdout)
		}
	}
}

// TestConformance runs the suite through the command on the memory broker.
func TestConformance(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	out := filepath.Join(c.tmp, "results.json")
	r := c.ok("conformance", "--url", "mem://", "--run", "RoundTrip|FanOut|DeadLetter", "--json", out)
	for _, want := range []string{"conformance suite: adapter memory at mem://", "RoundTrip", "FanOut", "DeadLetter",
		"3 passed, 0 failed", "CAPABILITY", "order per key"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var results []struct {
		Name, Status string
	}
	if err := json.Unmarshal(b, &results); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if len(results) != 3 {
		t.Errorf("JSON results: %+v", results)
	}
	for _, res := range results {
		if res.Status != "pass" {
			t.Errorf("%s: %s", res.Name, res.Status)
		}
	}
}
