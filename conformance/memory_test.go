package conformance_test

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/polybus/polybus"
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

// TestRunAllCleanup: Options.Cleanup runs once, after the last test, with
// a client and every topic the tests made; its error is reported.
func TestRunAllCleanup(t *testing.T) {
	var calls int
	var got []string
	rep := conformance.RunAll(t.Context(), conformance.URLHarness("mem://"), conformance.Options{
		Stress: 2,
		Run:    regexp.MustCompile(`^(RoundTrip|FanOut)$`),
		Cleanup: func(ctx context.Context, c *polybus.Client, topics []string) error {
			calls++
			if c == nil {
				return errors.New("no client")
			}
			got = topics
			return errors.New("broker said no")
		},
	})
	if rep.Failed() {
		t.Fatalf("the suite failed: %+v", rep.Results)
	}
	if calls != 1 {
		t.Fatalf("Cleanup ran %d times, want once", calls)
	}
	// Each of the 2 rounds' RoundTrip and FanOut made at least one topic,
	// each a fresh name from the harness.
	if len(got) < 4 || len(slices.Compact(slices.Sorted(slices.Values(got)))) != len(got) {
		t.Fatalf("Cleanup got topics %v, want at least 4 distinct", got)
	}
	for _, topic := range got {
		if !strings.HasPrefix(topic, "cf-topic-") {
			t.Fatalf("topic %q is not a harness name", topic)
		}
	}
	if !strings.Contains(rep.CleanupError, "broker said no") {
		t.Fatalf("CleanupError = %q", rep.CleanupError)
	}
	var out strings.Builder
	if err := rep.WriteMatrix(&out); err != nil || !strings.Contains(out.String(), "cleanup failed") {
		t.Fatalf("the matrix does not report the cleanup failure (%v):\n%s", err, out.String())
	}
}
