package telemetry

import "github.com/polybus/polybus/message"

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
