package rabbitmq_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polybus/polybus/adapters/rabbitmq"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// python returns a Python with pika: POLYBUS_PYTHON, else the one that
// scripts/pyenv prints. Without one the test is skipped, and fails under
// CI=true.
func python(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("POLYBUS_PYTHON"); p != "" {
		return p
	}
	if script := brokersScript(); script != "" {
		out, err := exec.Command(filepath.Join(filepath.Dir(script), "pyenv")).Output()
		if err == nil {
			return strings.TrimSpace(string(out))
		}
		if brokertest.CI() {
			t.Fatalf("scripts/pyenv: %v", err)
		}
		t.Skipf("no Python with pika (POLYBUS_PYTHON unset, scripts/pyenv: %v)", err)
	}
	if brokertest.CI() {
		t.Fatal("no Python with pika: set POLYBUS_PYTHON")
	}
	t.Skip("no Python with pika: set POLYBUS_PYTHON")
	return ""
}

// pika runs a Python program with a pika channel "ch" on amqpURL and
// returns what it prints.
func pika(t *testing.T, amqpURL, program string, args ...string) []byte {
	t.Helper()
	py := python(t)
	head := "import pika, json, sys, base64, time\n" +
		"conn = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))\n" +
		"ch = conn.channel()\n"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{"-c", head + program, amqpURL}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pika: %v\n%s", err, stderr.String())
	}
	return out
}

// TestInteropToPika: a message published by polybus, read by pika from
// the group's partition queue, has its body, ID, time and headers (key and
// metadata) intact.
func TestInteropToPika(t *testing.T) {
	u := brokertest.URL(t, "rabbitmq")
	c := open(t, u)
	topic, group := unique("interop"), unique("g")
	declare(t, c, topic, group)
	m := message.New([]byte{0, 1, 2, 0xff, 'h', 'i'})
	m.Key = "ord-42"
	m.Metadata = message.Metadata{"trace": "abc-123", "ünï": "✓値", "CC": "not routing", "x-empty": ""}
	m.Time = time.Unix(1700000000, 123456789)
	if err := c.Publisher().Publish(context.Background(), topic, m); err != nil {
		t.Fatal(err)
	}
	queue := rabbitmq.PartitionQueueName(topic, group, rabbitmq.Partition(m.Key, rabbitmq.DefaultPartitions))
	out := pika(t, u, `
method = None
for method, props, body in ch.consume(sys.argv[2], inactivity_timeout=30):
    break
if method is None:
    sys.exit("no message in " + sys.argv[2])
ch.basic_ack(method.delivery_tag)
hdrs = {k: (v.decode("utf-8") if isinstance(v, bytes) else str(v)) for k, v in (props.headers or {}).items()}
print(json.dumps({"body": base64.b64encode(body).decode(), "id": props.message_id,
                  "ts": props.timestamp, "mode": props.delivery_mode, "headers": hdrs}))
conn.close()
`, queue)
	var got struct {
		Body    string            `json:"body"`
		ID      string            `json:"id"`
		TS      int64             `json:"ts"`
		Mode    int               `json:"mode"`
		Headers map[string]string `json:"headers"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("pika printed %q: %v", out, err)
	}
	if got.Body != base64.StdEncoding.EncodeToString(m.Payload) {
		t.Errorf("body %s, want %x", got.Body, m.Payload)
	}
	if got.ID != m.ID || got.TS != m.Time.Unix() || got.Mode != 2 {
		t.Errorf("id %q ts %d mode %d, want %q %d 2 (persistent)", got.ID, got.TS, got.Mode, m.ID, m.Time.Unix())
	}
	for k, v := range map[string]string{"trace": "abc-123", "ünï": "✓値", "x-empty": "", "polybus-amqp-key": "ord-42", "polybus-amqp-time": "1700000000123456789"} {
		if got.Headers[k] != v {
			t.Errorf("header %q = %q, want %q (headers %v)", k, got.Headers[k], v, got.Headers)
		}
	}
	if _, ok := got.Headers["CC"]; ok {
		t.Errorf("metadata CC travelled as the CC header, which RabbitMQ routes by")
	}
}

// TestInteropFromPika: a message that pika publishes to the topic's
// exchange reaches a polybus subscriber with its body, ID and headers as
// metadata.
func TestInteropFromPika(t *testing.T) {
	u := brokertest.URL(t, "rabbitmq")
	c := open(t, u)
	topic, group := unique("interop"), unique("g")
	declare(t, c, topic, group)
	got := make(chan *message.Message, 1)
	pbtest.Consume(t, c, topic, func(_ context.Context, m *message.Message) error {
		select {
		case got <- m:
		default:
		}
		return nil
	}, subscriber.Group(group))
	pika(t, u, `
ch.confirm_delivery()
ch.basic_publish(sys.argv[2], "p.0", bytes([0, 0xfe, 65]),
    pika.BasicProperties(message_id="from-pika-1", delivery_mode=2, timestamp=1700000001,
                         headers={"trace": "t-9", "count": 7, "ünï": "✓"}),
    mandatory=True)
conn.close()
`, topic)
	select {
	case m := <-got:
		if m.ID != "from-pika-1" || !bytes.Equal(m.Payload, []byte{0, 0xfe, 65}) {
			t.Errorf("got ID %q payload %x", m.ID, m.Payload)
		}
		want := message.Metadata{"trace": "t-9", "count": "7", "ünï": "✓"}
		for k, v := range want {
			if m.Metadata[k] != v {
				t.Errorf("metadata %q = %q, want %q (all: %v)", k, m.Metadata[k], v, m.Metadata)
			}
		}
		if len(m.Metadata) != len(want) {
			t.Errorf("metadata %v, want %v", m.Metadata, want)
		}
		if !m.Time.Equal(time.Unix(1700000001, 0)) {
			t.Errorf("time %v, want the AMQP timestamp", m.Time)
		}
		if d, _ := m.Delivery(); d.Topic != topic || d.Group != group || d.Partition != 0 || d.Attempt != 1 {
			t.Errorf("delivery facts %+v", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the message pika published never arrived")
	}
}
