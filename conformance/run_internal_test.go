package conformance

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
)

// runFn runs fn as a test named "x" on RunAll's runner.
func runFn(t *testing.T, fn func(f *fixture)) Result {
	t.Helper()
	s := newSuite(nil, Options{Timeout: 10 * time.Second})
	return s.runRT(t.Context(), test{name: "x", fn: fn})
}

func TestRunnerFatalEndsOnlyTheTest(t *testing.T) {
	var order []string
	var mu sync.Mutex
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	res := runFn(t, func(f *fixture) {
		f.Cleanup(func() { note("cleanup 1") })
		f.Cleanup(func() {
			if f.Context().Err() == nil {
				note("context alive in cleanup")
			}
			note("cleanup 2")
		})
		f.Fatalf("stop %d", 1)
		note("after Fatalf")
	})
	if res.Status != Fail || res.Reason != "stop 1" {
		t.Errorf("result %+v, want fail with reason %q", res, "stop 1")
	}
	if got := strings.Join(order, ", "); got != "cleanup 2, cleanup 1" {
		t.Errorf("ran %q, want the cleanups in reverse order, after the context ended, and nothing after Fatalf", got)
	}
}

func TestRunnerSkipErrorPanicMetric(t *testing.T) {
	res := runFn(t, func(f *fixture) { f.Skipf("no %s", "luck") })
	if res.Status != Skip || res.Reason != "no luck" {
		t.Errorf("skip: %+v", res)
	}
	res = runFn(t, func(f *fixture) {
		var wg sync.WaitGroup
		wg.Go(func() { f.Errorf("from another goroutine") })
		wg.Wait()
		f.Errorf("second")
		f.Skipf("skipping after a failure")
	})
	if res.Status != Fail || res.Reason != "from another goroutine\nsecond" {
		t.Errorf("errors: %+v", res)
	}
	res = runFn(t, func(f *fixture) { panic("boom") })
	if res.Status != Fail || !strings.HasPrefix(res.Reason, "panic: boom") {
		t.Errorf("panic: %+v", res)
	}
	res = runFn(t, func(f *fixture) { f.metric("dups", 7); f.Logf("hello") })
	if res.Status != Pass || res.Metrics["dups"] != 7 || len(res.Log) != 2 {
		t.Errorf("metric: %+v", res)
	}
}

func TestRunAllCancelledSkipsTheRest(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	rep := RunAll(ctx, nil, Options{Run: regexp.MustCompile(`^(RoundTrip|SizeLimit)$`)})
	if len(rep.Results) != 2 {
		t.Fatalf("%d results, want 2", len(rep.Results))
	}
	for i, name := range []string{"RoundTrip", "SizeLimit"} {
		r := rep.Results[i]
		if r.Name != name || r.Status != Skip || r.Reason != "not run: context canceled" {
			t.Errorf("result %d: %+v", i, r)
		}
	}
}

func TestTestNamesMatchTheSuite(t *testing.T) {
	names := TestNames()
	if len(names) != 18 || names[0] != "RoundTrip" || names[7] != "PerKeyOrderScaleOut" || names[17] != "BrokerRestart" {
		t.Errorf("TestNames() = %v", names)
	}
}

func testReport() Report {
	return Report{
		Adapter: "memory",
		Results: []Result{
			{Name: "RoundTrip", Status: Pass, Duration: 1234567 * time.Microsecond},
			{Name: "PerKeyOrder", Status: Fail, Reason: "key k: call 0 handled #3\nmore", Duration: 80 * time.Millisecond},
			{Name: "BrokerRestart", Status: Skip, Reason: "no restart", Metrics: map[string]int64{"duplicates": 2, "a": 1}},
		},
	}
}

func TestReportWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := testReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	want := `[
  {
    "name": "RoundTrip",
    "status": "pass",
    "reason": "",
    "duration_ms": 1234
  },
  {
    "name": "PerKeyOrder",
    "status": "fail",
    "reason": "key k: call 0 handled #3\nmore",
    "duration_ms": 80
  },
  {
    "name": "BrokerRestart",
    "status": "skip",
    "reason": "no restart",
    "duration_ms": 0,
    "metrics": {
      "a": 1,
      "duplicates": 2
    }
  }
]
`
	if b.String() != want {
		t.Errorf("WriteJSON:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestReportWriteMatrix(t *testing.T) {
	var b bytes.Buffer
	rep := testReport()
	if err := rep.WriteMatrix(&b); err != nil {
		t.Fatal(err)
	}
	want := `TEST           STATUS  TIME    REASON
RoundTrip      pass    1.235s  
PerKeyOrder    fail    80ms    key k: call 0 handled #3
BrokerRestart  skip    0s      no restart [a=1 duplicates=2]
1 passed, 1 failed, 1 skipped
`
	if b.String() != want {
		t.Errorf("WriteMatrix:\n%q\nwant:\n%q", b.String(), want)
	}
	if !rep.Failed() {
		t.Error("Failed() = false with a failed test")
	}
	if r, ok := rep.Result("PerKeyOrder"); !ok || r.Status != Fail {
		t.Errorf("Result(PerKeyOrder) = %+v, %t", r, ok)
	}
}

func TestWriteCapabilities(t *testing.T) {
	var b bytes.Buffer
	err := WriteCapabilities(&b,
		message.Capabilities{Name: "memory", OrderPerKey: true, OrderPerKeyScaleOut: true, Rebalance: 2 * time.Second, Nack: true, MaxMessageSize: 1 << 20},
		message.Capabilities{Name: "sqs", MaxNackDelay: 12 * time.Hour, Persistent: true},
	)
	if err != nil {
		t.Fatal(err)
	}
	want := `CAPABILITY                 memory     sqs
order per key              yes        no
order per key, scaled out  yes        no
rebalance within           2s         -
consumer groups            no         no
fan-out                    no         no
retained                   no         no
nack                       yes        no
nack delay                 no         no
max nack delay             none       12h0m0s
attempt count              no         no
max message size           1048576 B  none
native dead letter         no         no
persistent                 no         yes
`
	if b.String() != want {
		t.Errorf("WriteCapabilities:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestURLHarnessNames(t *testing.T) {
	h := URLHarness("mem://")
	valid := regexp.MustCompile(`^[a-z0-9-]+$`)
	seen := map[string]bool{}
	for range 100 {
		n := h.Name("topic")
		if !valid.MatchString(n) || seen[n] {
			t.Fatalf("name %q: invalid or repeated", n)
		}
		seen[n] = true
	}
	// mem:// without a name gets one, so that every client shares a broker.
	if u := h.(*urlHarness).url; !strings.HasPrefix(u, "mem://conformance-") {
		t.Errorf("URL %q, want a named mem:// broker", u)
	}
	if u := URLHarness("mem://shared").(*urlHarness).url; u != "mem://shared" {
		t.Errorf("named URL rewritten to %q", u)
	}
}

func TestWatchAwait(t *testing.T) {
	var w watch
	var mu sync.Mutex
	n := 0
	go func() {
		for range 3 {
			mu.Lock()
			n++
			mu.Unlock()
			w.notify()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if !w.await(ctx, func() bool { mu.Lock(); defer mu.Unlock(); return n == 3 }) {
		t.Fatal("await gave up before the condition held")
	}
	short, cancel2 := context.WithCancel(t.Context())
	cancel2()
	if w.await(short, func() bool { return false }) {
		t.Fatal("await reported a condition that never held")
	}
	if !errors.Is(short.Err(), context.Canceled) {
		t.Fatal(short.Err())
	}
}
