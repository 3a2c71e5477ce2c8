package sqs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	polysqs "github.com/polybus/polybus/adapters/sqs"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// python returns a Python with boto3: POLYBUS_PYTHON, else the one that
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
		t.Skipf("no Python with boto3 (POLYBUS_PYTHON unset, scripts/pyenv: %v)", err)
	}
	if brokertest.CI() {
		t.Fatal("no Python with boto3: set POLYBUS_PYTHON")
	}
	t.Skip("no Python with boto3: set POLYBUS_PYTHON")
	return ""
}

// boto3 runs a Python program with an SQS client "sqs" on the endpoint of
// POLYBUS_SQS_ENDPOINT and returns what it prints.
func boto3(t *testing.T, py, program string, args ...string) []byte {
	t.Helper()
	endpoint := os.Getenv("POLYBUS_SQS_ENDPOINT")
	if endpoint == "" {
		endpoint = "http://127.0.0.1:9324"
	}
	head := `import boto3, json, sys
sqs = boto3.client("sqs", endpoint_url=` + pyString(endpoint) + `, region_name="us-east-1",
                   aws_access_key_id="x", aws_secret_access_key="x")
`
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{"-c", head + program}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("boto3 program: %v\n%s", err, stderr.String())
	}
	return out
}

func pyString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestInteropToBoto3: messages that polybus publishes are read by boto3
// from the group's queue, body and attributes intact: ID, key, time and
// metadata as attributes; a binary payload in base64, marked.
func TestInteropToBoto3(t *testing.T) {
	py := python(t)
	for _, fifo := range []bool{false, true} {
		t.Run(map[bool]string{false: "standard", true: "fifo"}[fifo], func(t *testing.T) {
			q := ""
			if fifo {
				q = "fifo=true"
			}
			c := open(t, sqsURL(t, q))
			topic, group := unique("interop"), unique("boto3")
			// A subscription opened and closed creates the group's queue.
			stop := pbtest.Consume(t, c, topic, func(context.Context, *message.Message) error { return nil }, subscriber.Group(group))
			var api *sqs.Client
			c.Publisher().As(&api)
			queue := queueNamed(t, api, fifo, topic, group)
			stop()
			text := &message.Message{ID: "id-text-1", Key: "ord-1", Payload: []byte(`{"total": 12.5, "note": "héllo ✓"}`),
				Metadata: message.Metadata{"tenant": "acme", "Content-Type": "application/json"},
				Time:     time.Unix(1700000000, 123456789)}
			bin := &message.Message{ID: "id-bin-2", Key: "ord-1", Payload: []byte{0, 1, 2, 0xff, 0xfe}}
			if err := c.Publisher().Publish(t.Context(), topic, text, bin); err != nil {
				t.Fatal(err)
			}
			out := boto3(t, py, `
got = []
while len(got) < 2:
    r = sqs.receive_message(QueueUrl=sys.argv[1], MaxNumberOfMessages=10, WaitTimeSeconds=5,
                            MessageAttributeNames=["All"], AttributeNames=["All"])
    for m in r.get("Messages", []):
        attrs = {k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()}
        got.append({"body": m["Body"], "attrs": attrs, "group": m["Attributes"].get("MessageGroupId")})
        sqs.delete_message(QueueUrl=sys.argv[1], ReceiptHandle=m["ReceiptHandle"])
print(json.dumps(got))
`, queue)
			var got []struct {
				Body  string
				Attrs map[string]string
				Group *string
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if len(got) != 2 {
				t.Fatalf("boto3 read %d messages, want 2: %s", len(got), out)
			}
			if got[0].Attrs["polybus-id"] != "id-text-1" {
				got[0], got[1] = got[1], got[0]
			}
			want0 := map[string]string{"polybus-id": "id-text-1", "polybus-key": "ord-1", "polybus-time": "1700000000123456789",
				"tenant": "acme", "Content-Type": "application/json"}
			if got[0].Body != string(text.Payload) || !sameMap(got[0].Attrs, want0) {
				t.Errorf("text message: body %q attributes %v, want %q and %v", got[0].Body, got[0].Attrs, text.Payload, want0)
			}
			if got[1].Body != "AAEC//4=" || got[1].Attrs["polybus-enc"] != "base64" || got[1].Attrs["polybus-id"] != "id-bin-2" {
				t.Errorf("binary message: body %q attributes %v, want base64 AAEC//4= marked base64", got[1].Body, got[1].Attrs)
			}
			if fifo && (got[0].Group == nil || *got[0].Group != "ord-1") {
				t.Errorf("FIFO message group %v, want the key ord-1", got[0].Group)
			}
		})
	}
}

// TestInteropFromBoto3: messages that boto3 sends to a group's queue are
// consumed by polybus: body as payload, attributes as metadata, SQS's
// MessageId as ID (and, on FIFO, the message group as key).
func TestInteropFromBoto3(t *testing.T) {
	py := python(t)
	for _, fifo := range []bool{false, true} {
		t.Run(map[bool]string{false: "standard", true: "fifo"}[fifo], func(t *testing.T) {
			q := ""
			if fifo {
				q = "fifo=true"
			}
			c := open(t, sqsURL(t, q))
			topic, group := unique("interop"), unique("polybus")
			got := make(chan *message.Message, 10)
			stop := pbtest.Consume(t, c, topic, func(_ context.Context, m *message.Message) error {
				got <- m
				return nil
			}, subscriber.Group(group))
			defer stop()
			var api *sqs.Client
			c.Publisher().As(&api)
			queue := queueNamed(t, api, fifo, topic, group)
			out := boto3(t, py, `
kw = {}
if sys.argv[1].endswith(".fifo"):
    kw = {"MessageGroupId": "cust-7", "MessageDeduplicationId": "dedup-1"}
r = sqs.send_message(QueueUrl=sys.argv[1], MessageBody="from boto3 ✓", MessageAttributes={
    "origin": {"DataType": "String", "StringValue": "python"},
    "count": {"DataType": "Number", "StringValue": "42"},
    "blob": {"DataType": "Binary", "BinaryValue": b"\x00bin"}}, **kw)
print(r["MessageId"])
`, queue)
			id := strings.TrimSpace(string(out))
			var m *message.Message
			select {
			case m = <-got:
			case <-time.After(30 * time.Second):
				t.Fatal("polybus did not receive boto3's message")
			}
			want := message.Metadata{"origin": "python", "count": "42", "blob": "\x00bin"}
			if m.ID != id || string(m.Payload) != "from boto3 ✓" || !sameMap(m.Metadata, want) {
				t.Errorf("got ID %q payload %q metadata %v; want %q, %q, %v", m.ID, m.Payload, m.Metadata, id, "from boto3 ✓", want)
			}
			if d, _ := m.Delivery(); d.Attempt != 1 || d.BrokerID != id || d.Group != group {
				t.Errorf("delivery facts %+v", d)
			}
			if m.Time.IsZero() || time.Since(m.Time) > time.Minute {
				t.Errorf("time %v, want SQS's SentTimestamp", m.Time)
			}
			if fifo && m.Key != "cust-7" {
				t.Errorf("key %q, want the message group cust-7", m.Key)
			}
		})
	}
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// queueNamed returns the URL of group's queue on topic.
func queueNamed(t *testing.T, api *sqs.Client, fifo bool, topic, group string) string {
	t.Helper()
	var url string
	// The subscriber creates the queue when its Subscribe call opens.
	pbtest.WaitFor(t, "the group's queue", func() bool {
		out, err := api.GetQueueUrl(t.Context(), &sqs.GetQueueUrlInput{QueueName: aws.String(polysqs.QueueName(runPrefix, fifo, topic, group))})
		if err != nil {
			time.Sleep(20 * time.Millisecond) // one call per 20ms at most
			return false
		}
		url = aws.ToString(out.QueueUrl)
		return true
	})
	return url
}
