package nats_test

import (
	"bytes"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	polynats "github.com/polybus/polybus/adapters/nats"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TestRoundTrip publishes messages that stress every field and checks that
// each arrives exactly as sent.
func TestRoundTrip(t *testing.T) {
	// One partition: stream order across keys, which this test checks.
	c := open(t, embeddedURL(t)+"?partitions=1")
	topic := "orders.created"

	binary := make([]byte, 256*4)
	for i := range binary {
		binary[i] = byte(i)
	}
	meta := message.Metadata{
		"tenant":                 "acme",
		"Tenant":                 "ACME (case differs)",
		"TENANT":                 "",
		"ключ":                   "значение",
		"emoji 🚀":                "✓ done",
		"with space":             " leading and trailing ",
		"colon:key":              "a:b",
		"crlf":                   "line1\r\nline2\n",
		"tab\tkey":               "\tvalue\t",
		"Nats-Msg-Id":            "not a NATS header",
		"nats-expected-stream":   "nope",
		"Polybus-Key":            "not the key",
		message.KeyCorrelationID: "corr-1",
		"nul":                    "a\x00b",
		"non-utf8":               "\xff\xfe",
		"x-trace":                "00-abc-01",
	}
	for i := range 40 {
		meta["k"+strconv.Itoa(i)] = "v" + strconv.Itoa(i)
	}
	sent := []*message.Message{
		{ID: "id-binary", Key: "ord-1", Payload: binary, Metadata: meta, Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))},
		{ID: "id-empty", Key: "ord-1", Payload: []byte{}},
		{ID: "id nil payload with spaces ", Payload: nil},
		{ID: "id-unicode-key", Key: "клиент/42 ☃", Payload: []byte("ünïcødé")},
		{ID: "id-crlf-key", Key: "\r\nkey\t", Payload: []byte("x")},
	}
	publish(t, c, topic, sent...)

	s := newSink()
	subscribe(t, c, topic, s.handle, subscriber.Concurrency(1))
	got := s.waitCount(t, len(sent))
	if len(got) != len(sent) {
		t.Fatalf("got %d messages, want %d", len(got), len(sent))
	}
	for i, want := range sent {
		g := got[i]
		if g.ID != want.ID || g.Key != want.Key || !bytes.Equal(g.Payload, want.Payload) {
			t.Errorf("message %d: got id %q key %q payload %q; want id %q key %q payload %q",
				i, g.ID, g.Key, g.Payload, want.ID, want.Key, want.Payload)
		}
		if !maps.Equal(g.Metadata, want.Metadata) {
			t.Errorf("message %d metadata:\n got %q\nwant %q", i, g.Metadata, want.Metadata)
		}
		if !g.Time.Equal(want.Time) {
			t.Errorf("message %d time: got %v want %v", i, g.Time, want.Time)
		}
		d, ok := g.Delivery()
		if !ok {
			t.Fatalf("message %d has no delivery", i)
		}
		if d.Topic != topic || d.Group != subscriber.DefaultGroup || d.Attempt != 1 || d.Redelivered ||
			d.Partition != 0 || d.Offset != int64(i+1) || d.BrokerID != strconv.Itoa(i+1) {
			t.Errorf("message %d delivery: %+v", i, d)
		}
		var native jetstream.Msg
		if !g.As(&native) || native.Subject() != polynats.PartitionPrefix+"0."+topic {
			t.Errorf("message %d: As(*jetstream.Msg) failed", i)
		}
		var wrong *int
		if g.As(&wrong) {
			t.Errorf("message %d: As(**int) succeeded", i)
		}
	}
}
