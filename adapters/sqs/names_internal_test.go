package sqs

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/polybus/polybus/message"
)

func TestQueueNames(t *testing.T) {
	long := strings.Repeat("x", 300)
	for _, fifo := range []bool{false, true} {
		n := namer{prefix: "pb-", fifo: fifo}
		seen := map[string]string{}
		for _, topic := range []string{"orders", "orders.created", "Orders", "ключ", long, long + "y", "a_b", "a.b"} {
			for _, group := range []string{"billing", "Billing", "bill ing", long, long + "z", "default"} {
				name := n.queueName(topic, group)
				if len(name) > maxQueueName || readable(strings.TrimSuffix(name, fifoSuffix), 100) != strings.TrimSuffix(name, fifoSuffix) {
					t.Errorf("%q/%q: bad queue name %q (%d bytes)", topic, group, name, len(name))
				}
				if !strings.HasPrefix(name, n.topicPrefix(topic)) || n.ours(name) != true || strings.HasSuffix(name, fifoSuffix) != fifo {
					t.Errorf("%q/%q: %q does not carry its topic's prefix or kind", topic, group, name)
				}
				if prev, dup := seen[name]; dup {
					t.Errorf("%q and %s/%s share the queue name %q", prev, topic, group, name)
				}
				seen[name] = topic + "/" + group
			}
		}
	}
}

func TestFIFOID(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ord-1", "ord-1"},
		{"k:3/ with space", ""}, // a space is not allowed
		{"ключ", ""},
		{strings.Repeat("a", 128), strings.Repeat("a", 128)},
		{strings.Repeat("a", 129), ""},
	} {
		got := fifoID(tc.in)
		if tc.want != "" && got != tc.want || tc.want == "" && (!strings.HasPrefix(got, "pbh-") || !validFIFOID(got)) {
			t.Errorf("fifoID(%q) = %q", tc.in, got)
		}
	}
}

func TestCodecRoundTrip(t *testing.T) {
	many := message.Metadata{}
	for i := range 25 {
		many[fmt.Sprintf("k%02d", i)] = fmt.Sprint(i)
	}
	cases := []*message.Message{
		{ID: "a", Payload: []byte("plain text ✓"), Metadata: message.Metadata{"tenant": "acme"}},
		{ID: "b", Key: "ключ", Payload: nil},
		{ID: "c", Key: "k\x00", Payload: []byte{0, 1, 0xff}, Metadata: many},
		{ID: "d\x01", Payload: []byte("x"), Metadata: message.Metadata{"x-empty": "", "ünï": "v", "polybus-id": "mine"}},
		{ID: "e", Payload: []byte("tab\tand\nnewline"), Metadata: message.Metadata{"AWS.reserved": "v", "a..b": "v", "ok.name_1-x": "v"}},
	}
	for _, m := range cases {
		m.Time = time.Unix(1700000000, 42)
		for _, fifo := range []bool{false, true} {
			e, err := encode(m, fifo)
			if err != nil {
				t.Fatalf("%q: %v", m.ID, err)
			}
			if len(e.attrs) > maxAttrs {
				t.Errorf("%q: %d attributes", m.ID, len(e.attrs))
			}
			if fifo && (!validFIFOID(*e.groupID) || !validFIFOID(*e.dedupID)) {
				t.Errorf("%q: FIFO IDs %q %q", m.ID, *e.groupID, *e.dedupID)
			}
			got := decode(&types.Message{Body: aws.String(e.body), MessageAttributes: e.attrs, MessageId: aws.String("sqs-id")})
			if got.ID != m.ID || got.Key != m.Key || string(got.Payload) != string(m.Payload) || !got.Time.Equal(m.Time) ||
				fmt.Sprint(got.Metadata) != fmt.Sprint(m.Metadata) && (len(got.Metadata) > 0 || len(m.Metadata) > 0) {
				t.Errorf("round trip of %+v gave %+v", m, got)
			}
		}
	}
	if _, err := encode(&message.Message{ID: "bad", Metadata: message.Metadata{"a": "\xff", "b": "c", "d": "", "e": "f"}}, false); err == nil {
		t.Errorf("metadata that is not UTF-8 was accepted")
	}
	big := &message.Message{ID: "big", Payload: make([]byte, MaxMessageSize)}
	if e, err := encode(big, false); err != nil || e.size > sqsMessageLimit {
		t.Errorf("a binary message of MaxMessageSize: %v", err)
	}
}
