package message

// W3C Trace Context (https://www.w3.org/TR/trace-context/) travels in these
// metadata keys, under the names the W3C and the CloudEvents distributed
// tracing extension give them (not under MetadataPrefix), so that tracers of
// other languages read them from the broker's headers as they are. Package
// telemetry writes them on publish and reads them on receive; polybus's
// core only reads them for log lines and the CLI (TraceID).
const (
	// KeyTraceParent carries the W3C traceparent of the span that
	// published the message: "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>".
	KeyTraceParent = "traceparent"
	// KeyTraceState carries the W3C tracestate, when there is one.
	KeyTraceState = "tracestate"
)

// TraceID returns the trace ID (32 lower-case hex digits) of md's
// KeyTraceParent, or "" when md has none or it is malformed (as
// OpenTelemetry's W3C propagator judges it: all-zero IDs, upper-case hex,
// version ff, extra fields or unknown flags in version 00). It needs no
// tracing library: the CLI and Logging use it.
func TraceID(md Metadata) string {
	tp := md[KeyTraceParent]
	// version "-" trace-id "-" parent-id "-" flags; a later version may
	// append fields.
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' || tp[:2] == "ff" {
		return ""
	}
	if tp[:2] == "00" {
		if len(tp) != 55 || tp[53] != '0' || tp[54] > '3' {
			return ""
		}
	} else if len(tp) > 55 && tp[55] != '-' {
		return ""
	}
	if !hexID(tp[0:2], false) || !hexID(tp[53:55], false) || !hexID(tp[36:52], true) || !hexID(tp[3:35], true) {
		return ""
	}
	return tp[3:35]
}

// hexID reports whether s is lower-case hex, and not all zeros when
// nonzero is set.
func hexID(s string, nonzero bool) bool {
	zero := true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '0':
		case '1' <= c && c <= '9', 'a' <= c && c <= 'f':
			zero = false
		default:
			return false
		}
	}
	return !(nonzero && zero)
}

// LogArgs returns the attributes that identify m on a log line, as
// key-value pairs for log/slog: id, key, topic, group and attempt (from
// its Delivery, empty and 0 for a message not received) and trace_id (of
// its KeyTraceParent, "" when it has none). Every per-message line that
// polybus writes carries them.
func LogArgs(m *Message) []any {
	var d Delivery
	if m.delivery != nil {
		d = *m.delivery
	}
	return []any{"id", m.ID, "key", m.Key, "topic", d.Topic, "group", d.Group, "attempt", d.Attempt, "trace_id", TraceID(m.Metadata)}
}
