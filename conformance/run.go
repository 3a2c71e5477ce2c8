package conformance

import (
	"context"
	"fmt"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
)

// T is the part of *testing.T that the suite's tests use. *testing.T
// implements it, and so does the runner behind [RunAll], so the same tests
// run under go test and without it.
//
// As with *testing.T, Fatalf and Skipf end the calling goroutine with
// runtime.Goexit and must be called from the test's own goroutine; Errorf,
// Logf and Failed are safe from any goroutine.
type T interface {
	Name() string
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Failed() bool
	Cleanup(func())
	// Context is cancelled when the test function returns, before its
	// cleanups run.
	Context() context.Context
}

// Options configures a run of the suite. The zero value runs every test
// once with the default timeouts.
type Options struct {
	// Run selects the tests whose name it matches (see [TestNames]);
	// nil runs them all.
	Run *regexp.Regexp
	// Stress runs the selected tests Stress times, the rounds in parallel
	// with each other, to flush out flakes. 0 and 1 run them once.
	Stress int
	// Timeout bounds each test, waits included. Default 2 minutes, plus
	// one minute for each round beyond the first when Stress runs
	// rounds in parallel (they share the broker and the machine).
	Timeout time.Duration
	// Quiet is the observation window in which a test watches for
	// deliveries that must not happen (a redelivery of an acked message,
	// a late duplicate) after the deliveries it waits for have arrived.
	// Default 200ms.
	Quiet time.Duration
	// NoLeakCheck turns off the goroutine leak check of CloseAndCancel,
	// for programs that start goroutines of their own while the suite
	// runs. Without it, CloseAndCancel runs alone: the suite's other
	// tests wait for it.
	NoLeakCheck bool
	// Cleanup, when set, is called once the run ends, with a client of
	// its own and every topic the suite made, to remove what the run
	// left on the broker (SQS queues, say: sqs.DeleteTopics). Its error
	// fails Run's test; RunAll reports it in Report.CleanupError.
	Cleanup func(ctx context.Context, c *polybus.Client, topics []string) error
}

func (o Options) withDefaults() Options {
	if o.Stress < 1 {
		o.Stress = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = 2*time.Minute + time.Duration(o.Stress-1)*time.Minute
	}
	if o.Quiet <= 0 {
		o.Quiet = 200 * time.Millisecond
	}
	return o
}

// test is one conformance test.
type test struct {
	name string
	fn   func(f *fixture)
	// alone: the test looks for leaked goroutines, so no other test of
	// the suite may run at the same time.
	alone bool
}

// tests lists the suite in the order it runs.
var tests = []test{
	{name: "RoundTrip", fn: testRoundTrip},
	{name: "DurablePublish", fn: testDurablePublish},
	{name: "AckIsFinal", fn: testAckIsFinal},
	{name: "NackRedelivers", fn: testNackRedelivers},
	{name: "NackDelay", fn: testNackDelay},
	{name: "CrashRecovery", fn: testCrashRecovery},
	{name: "PerKeyOrder", fn: testPerKeyOrder},
	{name: "PerKeyOrderScaleOut", fn: testPerKeyOrderScaleOut},
	{name: "PerKeyOrderRebalance", fn: testPerKeyOrderRebalance},
	{name: "CompetingConsumers", fn: testCompetingConsumers},
	{name: "FanOut", fn: testFanOut},
	{name: "TopicIsolation", fn: testTopicIsolation},
	{name: "ConcurrentPublishers", fn: testConcurrentPublishers},
	{name: "SizeLimit", fn: testSizeLimit},
	{name: "CloseAndCancel", fn: testCloseAndCancel, alone: true},
	{name: "DeadLetter", fn: testDeadLetter},
	{name: "Dedupe", fn: testDedupe},
	{name: "BrokerRestart", fn: testBrokerRestart},
}

// TestNames returns the names of the suite's tests, in the order they run.
func TestNames() []string {
	names := make([]string, len(tests))
	for i, tc := range tests {
		names[i] = tc.name
	}
	return names
}

// exclusive lets the leak-checking test run alone: every other test holds
// it for reading. It is process-wide because goroutines are.
var exclusive sync.RWMutex

// suite is one run of the suite against one harness.
type suite struct {
	h    Harness
	opts Options

	capsMu sync.Mutex
	caps   *message.Capabilities

	topicsMu sync.Mutex
	topics   []string // every topic name the suite took from the harness
}

// topic takes a fresh topic name from the harness and records it for
// Options.Cleanup.
func (s *suite) topic() string {
	t := s.h.Name("topic")
	s.topicsMu.Lock()
	s.topics = append(s.topics, t)
	s.topicsMu.Unlock()
	return t
}

// cleanup runs Options.Cleanup, if any, on the topics made so far.
func (s *suite) cleanup(ctx context.Context) error {
	if s.opts.Cleanup == nil {
		return nil
	}
	s.topicsMu.Lock()
	topics := slices.Clone(s.topics)
	s.topicsMu.Unlock()
	if len(topics) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	c, err := s.h.Open(ctx)
	if err != nil {
		return fmt.Errorf("cleanup: open: %w", err)
	}
	defer c.Close(context.Background())
	if err := s.opts.Cleanup(ctx, c, topics); err != nil {
		return fmt.Errorf("cleanup of %d topics: %w", len(topics), err)
	}
	return nil
}

func newSuite(h Harness, opts Options) *suite {
	return &suite{h: h, opts: opts.withDefaults()}
}

func (s *suite) selected() []test {
	var sel []test
	for _, tc := range tests {
		if s.opts.Run == nil || s.opts.Run.MatchString(tc.name) {
			sel = append(sel, tc)
		}
	}
	return sel
}

func (s *suite) capabilities() (message.Capabilities, bool) {
	s.capsMu.Lock()
	defer s.capsMu.Unlock()
	if s.caps == nil {
		return message.Capabilities{}, false
	}
	return *s.caps, true
}

func (s *suite) setCapabilities(c message.Capabilities) {
	s.capsMu.Lock()
	defer s.capsMu.Unlock()
	if s.caps == nil {
		s.caps = &c
	}
}

// runOne runs tc on t: the one place where both runners meet.
func (s *suite) runOne(t T, tc test) {
	if tc.alone && !s.opts.NoLeakCheck {
		exclusive.Lock()
		t.Cleanup(exclusive.Unlock) // first registered, so it runs last
	} else {
		exclusive.RLock()
		t.Cleanup(exclusive.RUnlock)
	}
	tc.fn(s.newFixture(t))
}

// Run runs the suite against h as subtests of t, one per test (see
// [TestNames]). Pass at most one Options; without it every test runs once.
// With Options.Stress > 1 the rounds are subtests "round-N" that run in
// parallel.
func Run(t *testing.T, h Harness, opts ...Options) {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	s := newSuite(h, o)
	t.Cleanup(func() { // after every subtest, parallel rounds included
		if err := s.cleanup(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if s.opts.Stress == 1 {
		s.runTesting(t)
		return
	}
	for i := range s.opts.Stress {
		t.Run(fmt.Sprintf("round-%d", i+1), func(t *testing.T) {
			t.Parallel()
			s.runTesting(t)
		})
	}
}

func (s *suite) runTesting(t *testing.T) {
	for _, tc := range s.selected() {
		t.Run(tc.name, func(t *testing.T) { s.runOne(t, tc) })
	}
}

// RunAll runs the suite against h without go test and reports every
// test's outcome: the programmatic runner behind `polybus conformance`.
// Each test runs in its own goroutine, so Fatalf and Skipf end just that
// test. When ctx ends, the running test sees its context cancelled and the
// tests not yet started are reported as skipped.
func RunAll(ctx context.Context, h Harness, opts Options) Report {
	s := newSuite(h, opts)
	sel := s.selected()
	rounds := make([][]Result, s.opts.Stress)
	var wg sync.WaitGroup
	for r := range s.opts.Stress {
		wg.Go(func() {
			for _, tc := range sel {
				res := s.runRT(ctx, tc)
				if s.opts.Stress > 1 {
					res.Name = fmt.Sprintf("round-%d/%s", r+1, res.Name)
				}
				rounds[r] = append(rounds[r], res)
			}
		})
	}
	wg.Wait()
	rep := Report{}
	if c, ok := s.capabilities(); ok {
		rep.Adapter = c.Name
		rep.Capabilities = c
	}
	for _, rs := range rounds {
		rep.Results = append(rep.Results, rs...)
	}
	if err := s.cleanup(context.WithoutCancel(ctx)); err != nil {
		rep.CleanupError = err.Error()
	}
	return rep
}

// runRT runs one test on the suite's own T.
func (s *suite) runRT(ctx context.Context, tc test) Result {
	if err := ctx.Err(); err != nil {
		return Result{Name: tc.name, Status: Skip, Reason: "not run: " + err.Error()}
	}
	t := newRT(ctx, tc.name)
	start := time.Now()
	done := make(chan struct{})
	go t.run(done, func(t T) { s.runOne(t, tc) })
	// A test honours its own Timeout; the grace covers its cleanups. A test
	// that overruns both is reported and abandoned, its goroutine with it.
	grace := time.NewTimer(s.opts.Timeout + time.Minute)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		t.Errorf("test did not finish within %s", s.opts.Timeout+time.Minute)
		t.cancel()
	}
	return t.result(time.Since(start))
}

// rt is the T of RunAll's runner.
type rt struct {
	name   string
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	failed   bool
	skipped  bool
	errs     []string
	skip     string
	logs     []string
	metrics  map[string]int64
	cleanups []func()
}

func newRT(parent context.Context, name string) *rt {
	ctx, cancel := context.WithCancel(parent)
	return &rt{name: name, ctx: ctx, cancel: cancel}
}

// run runs fn as the test's body in the calling goroutine, then the
// cleanups, and closes done. A panic fails the test instead of the program.
func (t *rt) run(done chan<- struct{}, fn func(T)) {
	defer close(done)
	defer t.runCleanups()
	defer func() {
		if v := recover(); v != nil {
			t.Errorf("panic: %v\n%s", v, debug.Stack())
		}
	}()
	fn(t)
}

func (t *rt) runCleanups() {
	t.cancel()
	for {
		t.mu.Lock()
		n := len(t.cleanups)
		if n == 0 {
			t.mu.Unlock()
			return
		}
		f := t.cleanups[n-1]
		t.cleanups = t.cleanups[:n-1]
		t.mu.Unlock()
		// Each cleanup in its own goroutine: one that calls Fatalf ends
		// only itself, and the rest still run.
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			defer func() {
				if v := recover(); v != nil {
					t.Errorf("panic in cleanup: %v\n%s", v, debug.Stack())
				}
			}()
			f()
		}()
		<-ended
	}
}

func (t *rt) Name() string             { return t.name }
func (t *rt) Helper()                  {}
func (t *rt) Context() context.Context { return t.ctx }

func (t *rt) Logf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.logs = append(t.logs, fmt.Sprintf(format, args...))
}

func (t *rt) Errorf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failed = true
	t.errs = append(t.errs, fmt.Sprintf(format, args...))
}

func (t *rt) Fatalf(format string, args ...any) {
	t.Errorf(format, args...)
	runtime.Goexit()
}

func (t *rt) Skipf(format string, args ...any) {
	t.mu.Lock()
	t.skipped = true
	t.skip = fmt.Sprintf(format, args...)
	t.mu.Unlock()
	runtime.Goexit()
}

func (t *rt) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

func (t *rt) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

// Metric records a figure of the test (such as duplicates delivered) in
// its Result.
func (t *rt) Metric(name string, v int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.metrics == nil {
		t.metrics = map[string]int64{}
	}
	t.metrics[name] = v
}

func (t *rt) result(d time.Duration) Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := Result{Name: t.name, Duration: d, Log: t.logs, Metrics: t.metrics}
	switch {
	case t.failed:
		r.Status = Fail
		r.Reason = strings.Join(t.errs, "\n")
	case t.skipped:
		r.Status = Skip
		r.Reason = t.skip
	default:
		r.Status = Pass
	}
	return r
}

// metric records a figure of a test: in its Result under RunAll, in the
// log under go test.
func (f *fixture) metric(name string, v int64) {
	f.Helper()
	f.Logf("metric %s = %d", name, v)
	if m, ok := f.T.(interface{ Metric(string, int64) }); ok {
		m.Metric(name, v)
	}
}
