package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the results of one or many runs, with what is needed to read
// them: the workload, the machine and the versions.
type Report struct {
	Title    string    `json:"title"`
	Started  time.Time `json:"started"`
	Machine  Machine   `json:"machine"`
	Workload Workload  `json:"workload"`
	// Baseline names the target that ratios are taken against (the raw
	// client, in a peer comparison); empty: the first target.
	Baseline string `json:"baseline,omitempty"`
	// Versions lists module versions that matter (clients, peers).
	Versions map[string]string `json:"versions,omitempty"`
	Notes    []string          `json:"notes,omitempty"`
	Results  []Result          `json:"results"`
	// Summaries are filled by Summarize (WriteJSON, WriteHTML and
	// WriteTable call it).
	Summaries []Summary `json:"summaries,omitempty"`
}

// Machine describes where a report was measured.
type Machine struct {
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	GoVersion string `json:"go"`
	Polybus   string `json:"polybus,omitempty"`
}

// NewReport returns an empty report for w (with its defaults filled in)
// on this machine.
func NewReport(title string, w Workload) *Report {
	if d, err := w.withDefaults(); err == nil {
		w = d
	}
	w.Topic = ""
	m := Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), CPUModel: cpuModel()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		m.Polybus = bi.Main.Version
		for _, d := range bi.Deps {
			if d.Path == "github.com/polybus/polybus" {
				m.Polybus = d.Version
			}
		}
	}
	return &Report{Title: title, Started: time.Now().UTC().Truncate(time.Second), Machine: m, Workload: w}
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Add appends results.
func (r *Report) Add(results ...Result) { r.Results = append(r.Results, results...) }

// Stat is the median and spread of one figure over the rounds.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func statOf(v []float64) Stat {
	if len(v) == 0 {
		return Stat{}
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: med, Min: s[0], Max: s[len(s)-1]}
}

// Summary is one target's phase over every round of a report.
type Summary struct {
	Target     string  `json:"target"`
	Phase      Phase   `json:"phase"`
	Rounds     int     `json:"rounds"`
	MsgsPerSec Stat    `json:"msgs_per_sec"`
	MBPerSec   float64 `json:"mb_per_sec"`
	// Rate is the steady phase's target rate (the median, if rounds
	// differ).
	Rate float64 `json:"rate,omitempty"`
	// Ratio is the median throughput over the baseline's, for the same
	// phase; LatencyRatio the median p99 over the baseline's, given only
	// when both ran at the same rate.
	Ratio        float64 `json:"ratio,omitempty"`
	LatencyRatio float64 `json:"p99_ratio,omitempty"`
	// P50..P999 are medians over the rounds, microseconds (steady).
	P50  Stat `json:"p50_us"`
	P90  Stat `json:"p90_us"`
	P99  Stat `json:"p99_us"`
	P999 Stat `json:"p999_us"`
	// Curve is the latency curve of the round with the median p99.
	Curve []Point `json:"curve,omitempty"`
	// Memory is the memory series of the last round.
	Memory          []MemSample `json:"memory,omitempty"`
	CPUMicrosPerMsg float64     `json:"cpu_us_per_msg"`
	AllocsPerMsg    float64     `json:"allocs_per_msg"`
	Duplicates      int64       `json:"duplicates"`
	Reordered       int64       `json:"reordered"`
	Partial         bool        `json:"partial,omitempty"`
}

// Summarize fills r.Summaries: per target and phase, in the order they
// first appear, medians over the rounds and ratios to the baseline.
func (r *Report) Summarize() []Summary {
	type keyT struct {
		target string
		phase  Phase
	}
	var order []keyT
	groups := map[keyT][]Result{}
	for _, res := range r.Results {
		k := keyT{res.Target, res.Phase}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], res)
	}
	baseline := r.Baseline
	if baseline == "" && len(order) > 0 {
		baseline = order[0].target
	}
	sums := make([]Summary, 0, len(order))
	for _, k := range order {
		rs := groups[k]
		s := Summary{Target: k.target, Phase: k.phase, Rounds: len(rs)}
		var tput, mb, cpu, allocs, p50, p90, p99, p999, rates []float64
		for _, res := range rs {
			rates = append(rates, res.Rate)
			tput = append(tput, res.MsgsPerSec)
			mb = append(mb, res.MBPerSec)
			cpu = append(cpu, res.CPUMicrosPerMsg)
			allocs = append(allocs, res.AllocsPerMsg)
			s.Duplicates += res.Duplicates
			s.Reordered += res.Reordered
			s.Partial = s.Partial || res.Partial
			if l := res.Latency; l != nil {
				p50, p90, p99, p999 = append(p50, l.P50), append(p90, l.P90), append(p99, l.P99), append(p999, l.P999)
			}
		}
		s.MsgsPerSec, s.MBPerSec, s.Rate = statOf(tput), statOf(mb).Median, statOf(rates).Median
		s.CPUMicrosPerMsg, s.AllocsPerMsg = statOf(cpu).Median, statOf(allocs).Median
		s.P50, s.P90, s.P99, s.P999 = statOf(p50), statOf(p90), statOf(p99), statOf(p999)
		if len(p99) > 0 {
			var best *Latency
			for _, res := range rs {
				if l := res.Latency; l != nil && (best == nil || math.Abs(l.P99-s.P99.Median) < math.Abs(best.P99-s.P99.Median)) {
					best = l
				}
			}
			s.Curve = best.Curve
		}
		s.Memory = rs[len(rs)-1].Memory
		sums = append(sums, s)
	}
	for i := range sums {
		for _, b := range sums {
			if b.Target == baseline && b.Phase == sums[i].Phase {
				if b.MsgsPerSec.Median > 0 {
					sums[i].Ratio = sums[i].MsgsPerSec.Median / b.MsgsPerSec.Median
				}
				if b.P99.Median > 0 && b.Rate == sums[i].Rate {
					sums[i].LatencyRatio = sums[i].P99.Median / b.P99.Median
				}
			}
		}
	}
	r.Summaries = sums
	return sums
}

// WriteJSON writes the report, with its summaries, as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	r.Summarize()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the summaries as an aligned text table.
func (r *Report) WriteTable(w io.Writer) error {
	sums := r.Summarize()
	multi := false
	targets := map[string]bool{}
	for _, s := range sums {
		multi = multi || s.Rounds > 1
		targets[s.Target] = true
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "target\tphase\tmsgs/s\t"
	if multi {
		head += "spread\t"
	}
	head += "MB/s\tp50\tp90\tp99\tp99.9\tCPU µs/msg\tallocs/msg\tdup\treorder\t"
	if len(targets) > 1 {
		head += "ratio\tp99 ratio\t"
	}
	fmt.Fprintln(tw, head)
	for _, s := range sums {
		name := s.Target
		if s.Partial {
			name += " (partial)"
		}
		line := fmt.Sprintf("%s\t%s\t%.0f\t", name, s.Phase, s.MsgsPerSec.Median)
		if multi {
			line += fmt.Sprintf("%.0f–%.0f\t", s.MsgsPerSec.Min, s.MsgsPerSec.Max)
		}
		line += fmt.Sprintf("%.1f\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%d\t%d\t", s.MBPerSec,
			micros(s.P50.Median), micros(s.P90.Median), micros(s.P99.Median), micros(s.P999.Median),
			s.CPUMicrosPerMsg, s.AllocsPerMsg, s.Duplicates, s.Reordered)
		if len(targets) > 1 {
			line += ratio(s.Ratio) + "\t" + ratio(s.LatencyRatio) + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// micros formats a latency in microseconds; "-" when there is none.
func micros(us float64) string {
	switch {
	case us == 0:
		return "-"
	case us < 1000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 1e6:
		return fmt.Sprintf("%.2fms", us/1000)
	default:
		return fmt.Sprintf("%.2fs", us/1e6)
	}
}

func ratio(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", r)
}

// MemoryTrend summarises a phase's memory samples: the medians of the
// first and of the last quarter of the samples, and the largest, for the
// heap and the resident set. ok is false with fewer than 8 samples.
type MemoryTrend struct {
	HeapFirst, HeapLast, HeapMax uint64
	RSSFirst, RSSLast, RSSMax    uint64
}

// Trend returns the memory trend of res.
func (res Result) Trend() (t MemoryTrend, ok bool) {
	s := res.Memory
	if len(s) < 8 {
		return t, false
	}
	q := len(s) / 4
	med := func(part []MemSample, f func(MemSample) uint64) uint64 {
		v := make([]float64, len(part))
		for i, m := range part {
			v[i] = float64(f(m))
		}
		return uint64(statOf(v).Median)
	}
	heap := func(m MemSample) uint64 { return m.HeapBytes }
	rssOf := func(m MemSample) uint64 { return m.RSSBytes }
	t.HeapFirst, t.HeapLast = med(s[:q], heap), med(s[len(s)-q:], heap)
	t.RSSFirst, t.RSSLast = med(s[:q], rssOf), med(s[len(s)-q:], rssOf)
	for _, m := range s {
		t.HeapMax, t.RSSMax = max(t.HeapMax, m.HeapBytes), max(t.RSSMax, m.RSSBytes)
	}
	return t, true
}

// WriteMemory writes one line per result with enough samples: its heap
// and resident set in the first and last quarter of the phase, and their
// peaks.
func (r *Report) WriteMemory(w io.Writer) error {
	mb := func(b uint64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }
	for _, res := range r.Results {
		t, ok := res.Trend()
		if !ok {
			continue
		}
		if _, err := fmt.Fprintf(w, "memory %s %s (%d samples over %.0fs): heap %s (first quarter) -> %s (last quarter), peak %s; RSS %s -> %s, peak %s\n",
			res.Target, res.Phase, len(res.Memory), res.Memory[len(res.Memory)-1].Seconds,
			mb(t.HeapFirst), mb(t.HeapLast), mb(t.HeapMax), mb(t.RSSFirst), mb(t.RSSLast), mb(t.RSSMax)); err != nil {
			return err
		}
	}
	return nil
}
