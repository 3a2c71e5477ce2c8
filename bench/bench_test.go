package bench_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	_ "github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/bench"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunMemory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := bench.Polybus(ctx, "mem://", bench.PolybusOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	w := bench.Workload{Messages: 5000, Size: 64, Publishers: 4, Consumers: 2, Keys: 16, Rate: 5000, SteadyMessages: 2000}
	res, err := bench.Run(ctx, "mem://", c, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Fatalf("got %d results, want 3", len(res))
	}
	for i, want := range []bench.Phase{bench.PhasePublish, bench.PhaseConsume, bench.PhaseSteady} {
		r := res[i]
		n := 5000
		if want == bench.PhaseSteady {
			n = 2000
		}
		if r.Phase != want || r.Messages != n || r.Duplicates != 0 || r.Reordered != 0 || r.Stray != 0 || r.Partial {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	if l := res[2].Latency; l == nil || l.Count != 2000 || l.P50 <= 0 || l.P99 < l.P50 {
		t.Errorf("steady latency %+v", l)
	}
	rep := bench.NewReport("t", w)
	rep.Add(res...)
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table.String())
}

func TestTrend(t *testing.T) {
	var res bench.Result
	for i := range 8 {
		res.Memory = append(res.Memory, bench.MemSample{Seconds: float64(i), HeapBytes: uint64(10 + i), RSSBytes: uint64(100 + 2*i)})
	}
	got, ok := res.Trend()
	want := bench.MemoryTrend{HeapFirst: 10, HeapLast: 16, HeapMax: 17, RSSFirst: 101, RSSLast: 113, RSSMax: 114}
	if !ok || got != want {
		t.Fatalf("Trend = %+v, %v; want %+v", got, ok, want)
	}
	if _, ok := (bench.Result{Memory: res.Memory[:7]}).Trend(); ok {
		t.Fatal("Trend of 7 samples is ok")
	}
}
