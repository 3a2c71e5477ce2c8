package nats

import (
	"maps"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/polybus/polybus/message"
)

func TestStreamNames(t *testing.T) {
	cases := map[string]string{
		"orders":         "PB_orders",
		"orders.created": "PB_orders_2Ecreated",
		"Orders":         "PB__4Frders",
		"a_b":            "PB_a_5Fb",
		"ü":              "PB__C3_BC",
	}
	for topic, want := range cases {
		if got := streamName(topic); got != want {
			t.Errorf("streamName(%q) = %q, want %q", topic, got, want)
		}
	}
	// Injective and case-proof over topics that differ subtly.
	topics := []string{"a.b", "a_b", "a_2Eb", "A.b", "a.B", "ab", "a-b", "a/b", strings.Repeat("x", 300), strings.Repeat("x", 301), strings.Repeat("X", 300)}
	seen := map[string]string{}
	for _, tp := range topics {
		n := streamName(tp)
		if len(n) > maxNameLen {
			t.Errorf("%q: name of %d bytes", tp, len(n))
		}
		key := strings.ToLower(n)
		if other, dup := seen[key]; dup {
			t.Errorf("%q and %q map to names equal up to case: %q", tp, other, n)
		}
		seen[key] = tp
		for _, c := range n {
			if c == '.' || c == '*' || c == '>' || c == ' ' || c == '/' || c == '\\' {
				t.Errorf("%q: name %q has %q", tp, n, c)
			}
		}
	}
	if consumerName("g", "t", true) == consumerName("g", "u", false) || consumerName("g", "t", false) == consumerName("g", "u", false) {
		t.Errorf("consumer names on a shared stream must differ by topic")
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	msgs := []*message.Message{
		{ID: "plain", Key: "k", Payload: []byte("p"), Time: time.Unix(1, 2)},
		{ID: " spaced id ", Key: "\r\n", Metadata: message.Metadata{
			"a": "b", "A": "B", "x y": "z", "Nats-Msg-Id": "m", "NATS-x": "y", "Polybus-Key": "k2",
			"polybus-seq": "7", "v": " lead", "w": "trail\t", "é": "é", "e": "", "nul": "\x00",
		}},
	}
	// One envelope for the batch: a message's headers must not leak into
	// the next one's, whichever comes first.
	msgs = append(msgs, msgs[0], &message.Message{ID: "bare"})
	env := newEnvelope(msgs)
	for i, m := range msgs {
		nm := &natsgo.Msg{Subject: "t", Header: env.header(i, m), Data: m.Payload}
		// The wire: what nats.go writes is what it reads back.
		raw := wireHeader(t, nm)
		got := decode(nm.Data, raw, nil)
		if got.ID != m.ID || got.Key != m.Key || !maps.Equal(got.Metadata, m.Metadata) || !got.Time.Equal(m.Time) {
			t.Errorf("round trip of %+v gave %+v", m, got)
		}
	}
}

// wireHeader encodes m's headers as nats.go puts them on the wire and
// decodes them as nats.go reads them.
func wireHeader(t *testing.T, m *natsgo.Msg) natsgo.Header {
	t.Helper()
	var b strings.Builder
	b.WriteString("NATS/1.0\r\n")
	for k, vs := range m.Header {
		for _, v := range vs {
			b.WriteString(k + ": " + strings.TrimSpace(strings.NewReplacer("\r", " ", "\n", " ").Replace(v)) + "\r\n")
		}
	}
	b.WriteString("\r\n")
	h, err := natsgo.DecodeHeadersMsg([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return h
}
