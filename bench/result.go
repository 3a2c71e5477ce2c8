package bench

import (
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what one phase of one run measured.
type Result struct {
	// Target names what ran (a URL, "raw kafka-go", "watermill ...").
	Target string `json:"target"`
	// Round is the repetition, from 1, when a runner repeats targets.
	Round int   `json:"round,omitempty"`
	Phase Phase `json:"phase"`
	// Messages counts the messages published (publish phase) or the
	// distinct messages handled (consume, steady).
	Messages int     `json:"messages"`
	Seconds  float64 `json:"seconds"`
	// MsgsPerSec and MBPerSec are Messages (and their payload bytes) over
	// Seconds. For the consume phase Seconds runs from the first delivery
	// to the last; for the steady phase, from the first due time to the
	// last delivery.
	MsgsPerSec float64 `json:"msgs_per_sec"`
	MBPerSec   float64 `json:"mb_per_sec"`
	// StartupSeconds is the time from Subscribe to the first delivery
	// (consume and steady phases).
	StartupSeconds float64 `json:"startup_seconds,omitempty"`
	// Rate is the steady phase's target rate, messages per second.
	Rate float64 `json:"rate,omitempty"`
	// Latency is the steady phase's, from due time to handler call.
	Latency *Latency `json:"latency,omitempty"`
	// CPUSeconds is this process's user and system CPU time over the
	// phase; CPUMicrosPerMsg divides it by Messages.
	CPUSeconds      float64 `json:"cpu_seconds"`
	CPUMicrosPerMsg float64 `json:"cpu_us_per_msg"`
	// AllocsPerMsg and AllocBytesPerMsg are this process's heap
	// allocations over the phase per message, the bench's own payload
	// allocation included.
	AllocsPerMsg     float64 `json:"allocs_per_msg"`
	AllocBytesPerMsg float64 `json:"alloc_bytes_per_msg"`
	// Duplicates counts deliveries of a message already handled;
	// Reordered, messages handled after a later message of their key;
	// Stray, deliveries that belong to no phase of this run (markers of
	// an earlier warm-up round are not counted).
	Duplicates int64 `json:"duplicates"`
	Reordered  int64 `json:"reordered"`
	Stray      int64 `json:"stray,omitempty"`
	// Memory samples this process's memory about every 250ms.
	Memory []MemSample `json:"memory,omitempty"`
	// Partial is set when the phase was interrupted or failed; Error says
	// why.
	Partial bool   `json:"partial,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Latency summarises a latency histogram, in microseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
	// Curve is the percentile distribution: the latency at percentiles
	// that halve the remainder each step (0, 50, 75, 87.5, ... 99.9999)
	// and at 100.
	Curve []Point `json:"curve"`
}

// Point is one point of a percentile curve.
type Point struct {
	Percentile float64 `json:"p"`
	Micros     float64 `json:"us"`
}

// MemSample is the process's memory at one moment of a phase.
type MemSample struct {
	// Seconds since the phase started.
	Seconds float64 `json:"t"`
	// HeapBytes is the memory of live and not yet swept heap objects
	// (runtime/metrics /memory/classes/heap/objects:bytes).
	HeapBytes uint64 `json:"heap"`
	// RSSBytes is the resident set size (Linux; zero elsewhere).
	RSSBytes uint64 `json:"rss"`
}

func latencyOf(h *hdrhistogram.Histogram) *Latency {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	l := &Latency{
		Count: h.TotalCount(),
		Mean:  h.Mean(),
		P50:   float64(h.ValueAtQuantile(50)),
		P90:   float64(h.ValueAtQuantile(90)),
		P99:   float64(h.ValueAtQuantile(99)),
		P999:  float64(h.ValueAtQuantile(99.9)),
		Max:   float64(h.Max()),
	}
	l.Curve = append(l.Curve, Point{Percentile: 0, Micros: float64(h.Min())})
	for rest := 50.0; rest > 0.0001; rest /= 2 {
		p := 100 - rest
		l.Curve = append(l.Curve, Point{Percentile: p, Micros: float64(h.ValueAtQuantile(p))})
	}
	l.Curve = append(l.Curve, Point{Percentile: 100, Micros: l.Max})
	return l
}

// meter measures a phase's CPU time, allocations and memory.
type meter struct {
	start         time.Time
	cpu           time.Duration
	allocs, bytes uint64
	samples       *sampler
}

func startMeter() meter {
	m := meter{start: time.Now(), cpu: processCPU(), samples: startSampler()}
	m.allocs, m.bytes = heapAllocs()
	return m
}

func (m meter) stop(res *Result) {
	if m.samples == nil { // the phase ended before it measured anything
		return
	}
	res.Memory = m.samples.stop()
	res.CPUSeconds = (processCPU() - m.cpu).Seconds()
	allocs, bytes := heapAllocs()
	if res.Messages > 0 {
		n := float64(res.Messages)
		res.CPUMicrosPerMsg = res.CPUSeconds * 1e6 / n
		res.AllocsPerMsg = float64(allocs-m.allocs) / n
		res.AllocBytesPerMsg = float64(bytes-m.bytes) / n
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapAllocs() (objects, bytes uint64) {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

// sampler records MemSamples every 250ms, at most maxSamples of them
// (then every other one is dropped and the interval doubles).
type sampler struct {
	quit, done chan struct{}
	samples    []MemSample
}

const maxSamples = 512

func startSampler() *sampler {
	s := &sampler{quit: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	every := 250 * time.Millisecond
	heap := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	take := func() {
		metrics.Read(heap)
		s.samples = append(s.samples, MemSample{Seconds: time.Since(start).Seconds(), HeapBytes: heap[0].Value.Uint64(), RSSBytes: rss()})
		if len(s.samples) == maxSamples {
			for i := range maxSamples / 2 {
				s.samples[i] = s.samples[2*i+1]
			}
			s.samples = s.samples[:maxSamples/2]
			every *= 2
		}
	}
	go func() {
		defer close(s.done)
		take()
		t := time.NewTimer(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				take()
				t.Reset(every)
			case <-s.quit:
				take()
				return
			}
		}
	}()
	return s
}

func (s *sampler) stop() []MemSample {
	close(s.quit)
	<-s.done
	return s.samples
}

// rss reads the resident set size from /proc/self/statm.
func rss() uint64 {
	if runtime.GOOS != "linux" {
		return 0
	}
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// result is a publish phase's Result.
func (r *runner) result(phase Phase, m meter, n int, elapsed time.Duration) Result {
	res := Result{Target: r.target, Phase: phase, Messages: n, Seconds: elapsed.Seconds()}
	if elapsed > 0 {
		res.MsgsPerSec = float64(n) / elapsed.Seconds()
		res.MBPerSec = res.MsgsPerSec * float64(r.w.Size) / 1e6
	}
	m.stop(&res)
	return res
}

// tracked is a consuming phase's Result, from its tracker.
func (r *runner) tracked(phase Phase, m meter, t *tracker, subscribed time.Time) Result {
	n := int(t.seen.Load())
	first, end := t.first.Load(), t.end.Load()
	if end == 0 {
		end = time.Now().UnixNano()
	}
	var elapsed time.Duration
	if first != 0 {
		elapsed = time.Duration(end - first)
	}
	res := r.result(phase, m, n, elapsed)
	if first != 0 {
		res.StartupSeconds = time.Unix(0, first).Sub(subscribed).Seconds()
	}
	res.Duplicates, res.Reordered, res.Stray = t.dups.Load(), t.reorder.Load(), t.stray.Load()
	return res
}
