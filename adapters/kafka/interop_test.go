package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// javaTools returns the classpath of Kafka's own tools (kafka-tools from
// Maven Central, which `scripts/brokers up kafka` fetches into its cache),
// or skips the test; under CI=true it fails instead.
func javaTools(t *testing.T) string {
	t.Helper()
	missing := func(why string) string {
		if brokertest.CI() {
			t.Fatalf("Kafka's console tools are needed under CI: %s (run scripts/brokers up kafka)", why)
		}
		t.Skipf("Kafka's console tools not found: %s (run scripts/brokers up kafka)", why)
		return ""
	}
	if _, err := exec.LookPath("java"); err != nil {
		return missing("no java on PATH")
	}
	dir := os.Getenv("POLYBUS_KAFKA_TOOLS")
	if dir == "" {
		cache := os.Getenv("POLYBUS_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return missing(err.Error())
			}
			cache = filepath.Join(home, ".cache", "polybus")
		}
		found, _ := filepath.Glob(filepath.Join(cache, "kafka", "*-tools", "libs", ".complete"))
		if len(found) == 0 {
			return missing("no kafka/*-tools/libs in " + cache)
		}
		dir = filepath.Dir(found[len(found)-1])
	}
	return filepath.Join(dir, "*")
}

// java runs one of Kafka's tool classes with stdin and returns its stdout.
// Its logging goes to stderr, which is shown when it fails.
func java(t *testing.T, ctx context.Context, cp, stdin string, args ...string) string {
	t.Helper()
	l4j := filepath.Join(t.TempDir(), "log4j2.properties")
	const conf = "status = warn\nappender.err.type = Console\nappender.err.name = err\nappender.err.target = SYSTEM_ERR\n" +
		"appender.err.layout.type = PatternLayout\nappender.err.layout.pattern = %p %m%n\nrootLogger.level = warn\nrootLogger.appenderRef.err.ref = err\n"
	if err := os.WriteFile(l4j, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "java", append([]string{"-Xmx256m", "-Dlog4j2.configurationFile=" + l4j, "-cp", cp}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("java %s: %v\nstderr:\n%s\nstdout:\n%s", args[0], err, errb.String(), out.String())
	}
	return out.String()
}

// consoleRecord is one line of the console consumer's output with
// print.partition, print.offset, print.headers and print.key.
type consoleRecord struct {
	partition int
	offset    int64
	headers   map[string]string
	key       string
	value     string
}

func parseConsole(t *testing.T, out string) []consoleRecord {
	t.Helper()
	var recs []consoleRecord
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.SplitN(line, "\t", 5)
		if len(f) != 5 || !strings.HasPrefix(f[0], "Partition:") || !strings.HasPrefix(f[1], "Offset:") {
			t.Fatalf("console consumer line %q: want Partition:P, Offset:O, headers, key, value", line)
		}
		var r consoleRecord
		r.partition, _ = strconv.Atoi(strings.TrimPrefix(f[0], "Partition:"))
		r.offset, _ = strconv.ParseInt(strings.TrimPrefix(f[1], "Offset:"), 10, 64)
		r.headers = map[string]string{}
		if f[2] != "NO_HEADERS" {
			for _, kv := range strings.Split(f[2], ",") {
				k, v, _ := strings.Cut(kv, ":")
				r.headers[k] = v
			}
		}
		r.key, r.value = f[3], f[4]
		recs = append(recs, r)
	}
	return recs
}

// TestInteropJava checks polybus against Kafka's own Java clients on one
// six-partition topic: the console producer writes keyed records with
// headers; polybus publishes messages with the same keys; the console
// consumer then reads both, and every polybus message must arrive with
// key, headers and payload intact, on the partition that the Java
// producer chose for the same key. Finally polybus consumes the Java
// producer's records.
func TestInteropJava(t *testing.T) {
	cp := javaTools(t)
	u := kafkaURL(t, "partitions=6")
	bootstrap := strings.TrimPrefix(strings.SplitN(u, "?", 2)[0], "kafka://")
	c := open(t, u)
	topic := unique("interop")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// polybus creates the topic (six partitions) before the Java
	// producer writes to it.
	probe := message.New([]byte("first"))
	probe.Key = "probe"
	if err := c.Publisher().Publish(ctx, topic, probe); err != nil {
		t.Fatal(err)
	}

	const n = 24
	var lines strings.Builder
	for i := range n {
		fmt.Fprintf(&lines, "src:java,seq:%d\tkey-%d|java payload %d\n", i, i, i)
	}
	java(t, ctx, cp, lines.String(), "org.apache.kafka.tools.ConsoleProducer",
		"--bootstrap-server", bootstrap, "--topic", topic,
		"--command-property", "acks=all",
		"--reader-property", "parse.key=true", "--reader-property", "key.separator=|",
		"--reader-property", "parse.headers=true", "--reader-property", "headers.delimiter=\t",
		"--reader-property", "headers.separator=,", "--reader-property", "headers.key.separator=:")

	var ours []*message.Message
	for i := range n {
		m := message.New(fmt.Appendf(nil, "polybus payload %d with spaces ✓", i))
		m.Key = fmt.Sprintf("key-%d", i)
		m.Metadata = message.Metadata{"src": "polybus", "tenant": "acme", "seq": strconv.Itoa(i)}
		ours = append(ours, m)
	}
	if err := c.Publisher().Publish(ctx, topic, ours...); err != nil {
		t.Fatal(err)
	}

	out := java(t, ctx, cp, "", "org.apache.kafka.tools.consumer.ConsoleConsumer",
		"--bootstrap-server", bootstrap, "--topic", topic, "--from-beginning",
		"--group", unique("java"), "--max-messages", strconv.Itoa(2*n+1), "--timeout-ms", "60000",
		"--formatter-property", "print.key=true", "--formatter-property", "print.headers=true",
		"--formatter-property", "print.partition=true", "--formatter-property", "print.offset=true")
	recs := parseConsole(t, out)
	if len(recs) != 2*n+1 {
		t.Fatalf("console consumer read %d records, want %d:\n%s", len(recs), 2*n+1, out)
	}
	javaPart := map[string]int{}
	pbRecs := map[string]consoleRecord{}
	for _, r := range recs {
		switch r.headers["src"] {
		case "java":
			javaPart[r.key] = r.partition
		case "polybus":
			pbRecs[r.headers["polybus-id"]] = r
		}
	}
	if len(javaPart) != n || len(pbRecs) != n {
		t.Fatalf("read %d Java and %d polybus records, want %d each:\n%s", len(javaPart), len(pbRecs), n, out)
	}
	spread := map[int]bool{}
	for _, m := range ours {
		r, ok := pbRecs[m.ID]
		if !ok {
			t.Errorf("polybus message %s not read by the console consumer (its ID header missing?)", m.ID)
			continue
		}
		if r.key != m.Key || r.value != string(m.Payload) {
			t.Errorf("%s: console consumer read key %q value %q, want %q %q", m.ID, r.key, r.value, m.Key, m.Payload)
		}
		for k, v := range m.Metadata {
			if r.headers[k] != v {
				t.Errorf("%s: header %s = %q, want %q", m.ID, k, r.headers[k], v)
			}
		}
		if ns := r.headers["polybus-time"]; ns != strconv.FormatInt(m.Time.UnixNano(), 10) {
			t.Errorf("%s: polybus-time header %q, want %d", m.ID, ns, m.Time.UnixNano())
		}
		if want := javaPart[m.Key]; r.partition != want {
			t.Errorf("key %s: polybus wrote partition %d, the Java producer partition %d", m.Key, r.partition, want)
		}
		spread[r.partition] = true
	}
	if len(spread) < 3 {
		t.Errorf("%d keys landed on only %d of 6 partitions: the partition check proves little", n, len(spread))
	}

	// polybus consumes what the Java producer wrote.
	var mu sync.Mutex
	got := map[string]*message.Message{}
	pbtest.Consume(t, c, topic, func(_ context.Context, m *message.Message) error {
		if m.Metadata.Get("src") == "java" {
			mu.Lock()
			got[m.Key] = m
			mu.Unlock()
		}
		return nil
	}, subscriber.Group(unique("pb")))
	pbtest.WaitFor(t, "the Java producer's records", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == n
	})
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		key := fmt.Sprintf("key-%d", i)
		m := got[key]
		d, _ := m.Delivery()
		wantID := fmt.Sprintf("%s:%d:%d", topic, d.Partition, d.Offset)
		if string(m.Payload) != fmt.Sprintf("java payload %d", i) || m.Metadata.Get("seq") != strconv.Itoa(i) ||
			m.ID != wantID || d.Partition != javaPart[key] || m.Time.IsZero() {
			t.Errorf("Java record %s consumed as ID %q payload %q metadata %v partition %d time %v", key, m.ID, m.Payload, m.Metadata, d.Partition, m.Time)
		}
	}
}
