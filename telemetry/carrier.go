package telemetry

import (
	"go.opentelemetry.io/otel/trace"

	"github.com/polybus/polybus/message"
)

// carrier is message metadata as a propagation.TextMapCarrier. W3C
// TraceContext keys are lower case, and so are the metadata keys it
// writes; Get is exact, as metadata keys are.
type carrier message.Metadata

func (c carrier) Get(key string) string { return c[key] }

func (c carrier) Set(key, value string) { c[key] = value }

func (c carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// parseTraceParent reads a W3C traceparent and tracestate as
// propagation.TraceContext does, without the context it returns them in
// (an allocation per message).
func parseTraceParent(tp, ts string) trace.SpanContext {
	// version "-" trace-id "-" parent-id "-" flags; versions above 00 may
	// append fields after the flags.
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' || (len(tp) > 55 && (tp[:2] == "00" || tp[55] != '-')) {
		return trace.SpanContext{}
	}
	var ver, flags [1]byte
	var scc trace.SpanContextConfig
	if !unhex(ver[:], tp[0:2]) || ver[0] == 0xff {
		return trace.SpanContext{}
	}
	if !unhex(scc.TraceID[:], tp[3:35]) || !unhex(scc.SpanID[:], tp[36:52]) || !unhex(flags[:], tp[53:55]) {
		return trace.SpanContext{}
	}
	if ver[0] == 0 && flags[0] > 3 {
		return trace.SpanContext{}
	}
	scc.TraceFlags = trace.TraceFlags(flags[0]) & (trace.FlagsSampled | trace.FlagsRandom)
	if ts != "" {
		scc.TraceState, _ = trace.ParseTraceState(ts)
	}
	scc.Remote = true
	if sc := trace.NewSpanContext(scc); sc.IsValid() {
		return sc
	}
	return trace.SpanContext{}
}

// unhex decodes lower-case hex s into dst (len(s) == 2*len(dst)).
func unhex(dst []byte, s string) bool {
	for i := range dst {
		hi, ok1 := nibble(s[2*i])
		lo, ok2 := nibble(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func nibble(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
