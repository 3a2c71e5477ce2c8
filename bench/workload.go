package bench

import (
	"fmt"
	"time"

	"github.com/polybus/polybus/message"
)

// Phase names a part of a run.
type Phase string

// The phases, in the order Run runs them.
const (
	PhasePublish Phase = "publish"
	PhaseConsume Phase = "consume"
	PhaseSteady  Phase = "steady"
)

// Workload is what Run does. The zero value is valid: every field
// documents its default.
type Workload struct {
	// Messages is N, the number of messages of the publish phase (and of
	// the consume phase, which drains them). Default 100,000.
	Messages int `json:"messages"`
	// Size is S, the payload size in bytes, at least 16 (the sequence
	// number and the due time). Default 256.
	Size int `json:"size"`
	// Publishers is P, the publishing goroutines. All messages of a key
	// come from one publisher, in order. Default 8.
	Publishers int `json:"publishers"`
	// Consumers is C, the members of the consumer group. Default 1.
	Consumers int `json:"consumers"`
	// Keys is K, the number of keys; message j has key j mod K. Zero
	// sends keyless messages.
	Keys int `json:"keys"`
	// Batch is the number of messages per publish call in the publish
	// phase (the steady phase publishes one at a time). Default 1.
	Batch int `json:"batch"`
	// Rate is the steady phase's open-loop rate in messages per second.
	// Zero takes half of what the publish and consume phases measured
	// would sustain together, 0.5/(1/publish + 1/consume): below
	// saturation even when both share the machine's CPU with the broker.
	// Those phases must then be run.
	Rate float64 `json:"rate"`
	// SteadyMessages is the number of messages of the steady phase.
	// Default Messages.
	SteadyMessages int `json:"steady_messages"`
	// Phases are the phases to run; nil runs all three. Consume needs
	// Publish.
	Phases []Phase `json:"phases"`
	// Group is the consumer group. Default "bench".
	Group string `json:"group"`
	// Topic is the topic; default "bench-" and a random suffix, so every
	// run starts on an empty topic.
	Topic string `json:"topic"`
	// WarmUp is the number of marker messages of each warm-up round.
	// Default 256.
	WarmUp int `json:"warm_up"`
	// Timeout bounds each phase. Default 10 minutes.
	Timeout time.Duration `json:"timeout"`
}

const minSize = 16

// withDefaults returns w with its defaults filled in, or an
// InvalidArgument error.
func (w Workload) withDefaults() (Workload, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&w.Messages, 100_000)
	def(&w.Size, 256)
	def(&w.Publishers, 8)
	def(&w.Consumers, 1)
	def(&w.Batch, 1)
	def(&w.SteadyMessages, w.Messages)
	def(&w.WarmUp, 256)
	if w.Group == "" {
		w.Group = "bench"
	}
	if w.Topic == "" {
		w.Topic = "bench-" + message.NewID()[24:]
	}
	if w.Timeout == 0 {
		w.Timeout = 10 * time.Minute
	}
	if w.Phases == nil {
		w.Phases = []Phase{PhasePublish, PhaseConsume, PhaseSteady}
	}
	bad := func(format string, args ...any) (Workload, error) {
		return w, message.Errorf(message.InvalidArgument, "bench", format, args...)
	}
	switch {
	case w.Messages < 0 || w.SteadyMessages < 0 || w.Publishers < 0 || w.Consumers < 0 || w.Batch < 0 || w.WarmUp < 0:
		return bad("negative count in workload")
	case w.Keys < 0:
		return bad("negative key count %d", w.Keys)
	case w.Size < minSize:
		return bad("message size %d is below the minimum of %d bytes", w.Size, minSize)
	case w.Rate < 0:
		return bad("negative rate %g", w.Rate)
	case w.Timeout < 0:
		return bad("negative timeout %s", w.Timeout)
	}
	seen := map[Phase]bool{}
	for _, p := range w.Phases {
		switch p {
		case PhasePublish, PhaseConsume, PhaseSteady:
		default:
			return bad("unknown phase %q (want publish, consume or steady)", p)
		}
		seen[p] = true
	}
	if seen[PhaseConsume] && !seen[PhasePublish] {
		return bad("the consume phase drains what the publish phase sent: add publish")
	}
	if seen[PhaseSteady] && w.Rate == 0 && !(seen[PhasePublish] && seen[PhaseConsume]) {
		return bad("the steady phase needs a rate when the publish and consume phases are not run")
	}
	return w, nil
}

// Validate checks w as Run does: an InvalidArgument error for a bad
// field.
func (w Workload) Validate() error {
	_, err := w.withDefaults()
	return err
}

// has reports whether w runs phase p.
func (w Workload) has(p Phase) bool {
	for _, q := range w.Phases {
		if q == p {
			return true
		}
	}
	return false
}

// keyNames are the names of w's keys, key j mod K for message j.
func (w Workload) keyNames() []string {
	names := make([]string, w.Keys)
	for k := range names {
		names[k] = fmt.Sprintf("key-%d", k)
	}
	return names
}
