package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/polybus/polybus/message"
)

// Status is the outcome of one test.
type Status string

// The outcomes of a test.
const (
	// Pass: every assertion held.
	Pass Status = "pass"
	// Fail: a declared guarantee did not hold, or the test could not run
	// (a client that would not open, a deadline passed).
	Fail Status = "fail"
	// Skip: the adapter does not declare the guarantee (Reason says which
	// capability), or the harness lacks what the test needs.
	Skip Status = "skip"
)

// Result is the outcome of one test.
type Result struct {
	// Name is the test's name; "round-N/" precedes it in a stress run.
	Name   string
	Status Status
	// Reason is the failure messages, one a line, or why it was skipped.
	Reason   string
	Duration time.Duration
	// Metrics holds figures a test measured, such as "duplicates" in the
	// broker-restart test.
	Metrics map[string]int64
	// Log holds the test's log lines.
	Log []string
}

// Report is the outcome of a run of the suite by [RunAll].
type Report struct {
	// Adapter is the name the adapter declares in its capabilities.
	Adapter string
	// Capabilities is the adapter's declaration, as read from the first
	// client the suite opened (zero if none opened).
	Capabilities message.Capabilities
	// Results holds one entry per test run, in run order.
	Results []Result
	// CleanupError is Options.Cleanup's error, "" when it succeeded or
	// there was none.
	CleanupError string
}

// Failed reports whether any test failed.
func (r Report) Failed() bool {
	for _, res := range r.Results {
		if res.Status == Fail {
			return true
		}
	}
	return false
}

// Counts returns how many tests passed, failed and were skipped.
func (r Report) Counts() (passed, failed, skipped int) {
	for _, res := range r.Results {
		switch res.Status {
		case Pass:
			passed++
		case Fail:
			failed++
		case Skip:
			skipped++
		}
	}
	return passed, failed, skipped
}

// Result returns the result of the test with the given name.
func (r Report) Result(name string) (Result, bool) {
	for _, res := range r.Results {
		if res.Name == name {
			return res, true
		}
	}
	return Result{}, false
}

type jsonResult struct {
	Name       string           `json:"name"`
	Status     Status           `json:"status"`
	Reason     string           `json:"reason"`
	DurationMS int64            `json:"duration_ms"`
	Metrics    map[string]int64 `json:"metrics,omitempty"`
}

// WriteJSON writes the results as a JSON array with one object per test:
// name, status ("pass", "fail" or "skip"), reason, duration_ms and, where
// the test measured any, metrics.
func (r Report) WriteJSON(w io.Writer) error {
	out := make([]jsonResult, len(r.Results))
	for i, res := range r.Results {
		out[i] = jsonResult{
			Name: res.Name, Status: res.Status, Reason: res.Reason,
			DurationMS: res.Duration.Milliseconds(), Metrics: res.Metrics,
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// WriteMatrix writes the results as a text table, one row per test, and a
// closing line "N passed, N failed, N skipped" (and one for a failed
// Options.Cleanup). A multi-line reason shows its first line.
func (r Report) WriteMatrix(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "TEST\tSTATUS\tTIME\tREASON\n")
	for _, res := range r.Results {
		reason, _, _ := strings.Cut(res.Reason, "\n")
		if m := formatMetrics(res.Metrics); m != "" {
			reason = strings.TrimSpace(reason + " [" + m + "]")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", res.Name, res.Status, res.Duration.Round(time.Millisecond), reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	p, f, s := r.Counts()
	if _, err := fmt.Fprintf(w, "%d passed, %d failed, %d skipped\n", p, f, s); err != nil {
		return err
	}
	if r.CleanupError != "" {
		_, err := fmt.Fprintf(w, "cleanup failed (the run's topics may be left on the broker): %s\n", r.CleanupError)
		return err
	}
	return nil
}

func formatMetrics(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.FormatInt(m[k], 10)
	}
	return strings.Join(parts, " ")
}

// WriteCapabilities writes a table of capability declarations: one row per
// capability, one column per adapter, in the order given.
func WriteCapabilities(w io.Writer, caps ...message.Capabilities) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	limit := func(n int, unit string) string {
		if n == 0 {
			return "none"
		}
		return strconv.Itoa(n) + unit
	}
	dur := func(d time.Duration) string {
		if d == 0 {
			return "none"
		}
		return d.String()
	}
	rows := []struct {
		name string
		val  func(c message.Capabilities) string
	}{
		{"order per key", func(c message.Capabilities) string { return yes(c.OrderPerKey) }},
		{"order per key, scaled out", func(c message.Capabilities) string { return yes(c.OrderPerKeyScaleOut) }},
		{"rebalance within", func(c message.Capabilities) string {
			if !c.OrderPerKeyScaleOut {
				return "-"
			}
			return dur(c.Rebalance)
		}},
		{"consumer groups", func(c message.Capabilities) string { return yes(c.ConsumerGroups) }},
		{"fan-out", func(c message.Capabilities) string { return yes(c.FanOut) }},
		{"retained", func(c message.Capabilities) string { return yes(c.Retained) }},
		{"nack", func(c message.Capabilities) string { return yes(c.Nack) }},
		{"nack delay", func(c message.Capabilities) string { return yes(c.NackDelay) }},
		{"max nack delay", func(c message.Capabilities) string { return dur(c.MaxNackDelay) }},
		{"attempt count", func(c message.Capabilities) string { return yes(c.AttemptCount) }},
		{"max message size", func(c message.Capabilities) string { return limit(c.MaxMessageSize, " B") }},
		{"native dead letter", func(c message.Capabilities) string { return yes(c.NativeDeadLetter) }},
		{"persistent", func(c message.Capabilities) string { return yes(c.Persistent) }},
	}
	fmt.Fprint(tw, "CAPABILITY")
	for _, c := range caps {
		fmt.Fprintf(tw, "\t%s", c.Name)
	}
	fmt.Fprintln(tw)
	for _, row := range rows {
		fmt.Fprint(tw, row.name)
		for _, c := range caps {
			fmt.Fprintf(tw, "\t%s", row.val(c))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
