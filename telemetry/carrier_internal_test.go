package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/polybus/polybus/message"
)

// TestParseTraceParent checks the subscriber side's own traceparent parser
// against propagation.TraceContext's, header by header.
func TestParseTraceParent(t *testing.T) {
	for _, tc := range []struct{ tp, ts string }{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "congo=t61rcWkgMzE"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", ""},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-extra", ""},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", ""},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", ""},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ""},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", ""},
		{"", ""},
	} {
		md := message.Metadata{message.KeyTraceParent: tc.tp, message.KeyTraceState: tc.ts}
		want := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier(md)))
		got := parseTraceParent(tc.tp, tc.ts)
		if !got.Equal(want) {
			t.Errorf("%q %q: got %v, want %v", tc.tp, tc.ts, got, want)
		}
		if id := message.TraceID(md); want.IsValid() != (id != "") || (id != "" && id != want.TraceID().String()) {
			t.Errorf("message.TraceID(%q) = %q, want %v", tc.tp, id, want.TraceID())
		}
	}
}
