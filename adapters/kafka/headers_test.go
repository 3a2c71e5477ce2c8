package kafka

import (
	"io"
	"strconv"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/polybus/polybus/message"
)

// TestRecordRoundTrip turns messages into records and back, as the
// broker would hand them out, and checks every field.
func TestRecordRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    *message.Message
	}{
		{"keyed", &message.Message{ID: "id-1", Key: "k", Payload: []byte("p"), Time: time.Unix(1700000000, 123456789), Metadata: message.Metadata{"a": "1", "b": ""}}},
		{"keyless", &message.Message{ID: "id-2", Payload: []byte("p"), Time: time.Unix(0, 1)}},
		{"before 1970", &message.Message{ID: "id-3", Key: "k", Payload: []byte{}, Time: time.Unix(-5, 7)}},
		{"no time", &message.Message{ID: "id-4", Key: "long key", Payload: []byte("p")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, size, key := newRecordSlab([]*message.Message{tc.m}).record(tc.m)
			if string(key) != tc.m.Key || (tc.m.Key == "") != (key == nil) {
				t.Fatalf("key bytes %q, want %q", key, tc.m.Key)
			}
			km := kafkago.Message{Topic: "t", Partition: 2, Offset: 9, Time: time.UnixMilli(tc.m.Time.UnixMilli()), Headers: rec.Headers}
			if rec.Key != nil {
				km.Key, _ = io.ReadAll(rec.Key)
			}
			km.Value, _ = io.ReadAll(rec.Value)
			n := 0
			for _, h := range rec.Headers {
				n += headerOverhead + len(h.Key) + len(h.Value)
			}
			if want := recordOverhead + len(tc.m.Key) + len(tc.m.Payload) + n; size != want {
				t.Errorf("size %d, want %d", size, want)
			}
			var got message.Message
			if bid := decode(&got, &km); bid != "2:9" {
				t.Errorf("broker ID %q, want 2:9", bid)
			}
			if got.ID != tc.m.ID || got.Key != tc.m.Key || string(got.Payload) != string(tc.m.Payload) || !got.Time.Equal(wantTime(tc.m.Time, km.Time)) || len(got.Metadata) != len(tc.m.Metadata) {
				t.Fatalf("decoded %+v, want %+v", got, tc.m)
			}
			for k, v := range tc.m.Metadata {
				if got.Metadata[k] != v {
					t.Errorf("metadata %q = %q, want %q", k, got.Metadata[k], v)
				}
			}
		})
	}
}

// wantTime is the time a decoded message has: the exact time of the
// header, or the record's timestamp without one.
func wantTime(sent, rec time.Time) time.Time {
	if sent.IsZero() {
		return rec
	}
	return sent
}

func TestParseNanos(t *testing.T) {
	for _, s := range []string{"0", "1", "-1", "1700000000123456789", "9223372036854775807", "-9223372036854775808"} {
		want, _ := strconv.ParseInt(s, 10, 64)
		if got, ok := parseNanos([]byte(s)); !ok || got != want {
			t.Errorf("parseNanos(%q) = %d, %v; want %d", s, got, ok, want)
		}
	}
	for _, s := range []string{"", "-", "+1", "1.5", "x", "9223372036854775808", "-9223372036854775809", "99999999999999999999"} {
		if got, ok := parseNanos([]byte(s)); ok {
			t.Errorf("parseNanos(%q) = %d, true; want false", s, got)
		}
	}
}

// TestDecodeForeign decodes a record that no polybus publisher wrote: its
// headers are metadata (the first of a repeated one), the ID is
// topic:partition:offset and the time the record's.
func TestDecodeForeign(t *testing.T) {
	ts := time.UnixMilli(1700000000123)
	km := kafkago.Message{Topic: "orders", Partition: 3, Offset: 42, Key: []byte("k1"), Value: []byte("v"), Time: ts,
		Headers: []kafkago.Header{{Key: "a", Value: []byte("1")}, {Key: "a", Value: []byte("2")}, {Key: HeaderTime, Value: []byte("bad")}}}
	var m message.Message
	bid := decode(&m, &km)
	if bid != "3:42" || m.ID != "orders:3:42" || m.Key != "k1" || string(m.Payload) != "v" || !m.Time.Equal(ts) {
		t.Fatalf("decoded %q %+v", bid, m)
	}
	if len(m.Metadata) != 2 || m.Metadata["a"] != "1" || m.Metadata[HeaderTime] != "bad" {
		t.Fatalf("metadata %v, want a=1 and the unparsable time header", m.Metadata)
	}
}
