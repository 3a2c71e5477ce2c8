package conformance_test

import (
	"regexp"
	"slices"
	"testing"

	"go.uber.org/goleak"

	_ "github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/conformance"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestMemory runs the suite against the in-process broker, opened by URL as
// `polybus conformance --url mem://` does.
func TestMemory(t *testing.T) {
	conformance.Run(t, conformance.URLHarness("mem://"))
}

// TestMemoryStress runs three rounds of the suite at once, as subtests
// round-1..round-3, to flush out flakes that only show under load.
func TestMemoryStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress run: skipped in -short mode")
	}
	conformance.Run(t, conformance.URLHarness("mem://"), conformance.Options{Stress: 3})
}

// TestRunAllStress runs rounds in parallel with RunAll and reports each
// round's results under its own name.
func TestRunAllStress(t *testing.T) {
	rep := conformance.RunAll(t.Context(), conformance.URLHarness("mem://"), conformance.Options{
		Stress: 2,
		Run:    regexp.MustCompile(`^(AckIsFinal|CloseAndCancel|CompetingConsumers)$`),
	})
	var names []string
	for _, r := range rep.Results {
		names = append(names, r.Name)
		if r.Status != conformance.Pass {
			t.Errorf("%s: %s: %s", r.Name, r.Status, r.Reason)
		}
	}
	want := []string{
		"round-1/AckIsFinal", "round-1/CompetingConsumers", "round-1/CloseAndCancel",
		"round-2/AckIsFinal", "round-2/CompetingConsumers", "round-2/CloseAndCancel",
	}
	if !slices.Equal(names, want) {
		t.Errorf("results %v, want %v", names, want)
	}
	if rep.Adapter != "memory" || !rep.Capabilities.OrderPerKey {
		t.Errorf("report adapter %q, capabilities %+v", rep.Adapter, rep.Capabilities)
	}
}
