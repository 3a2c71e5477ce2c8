package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/polybus/polybus/message"
)

// Progress is what Run reports while a phase runs, about ten times a
// second and once at the end of each phase.
type Progress struct {
	Target string
	Phase  Phase
	// Done counts the messages published (publish phase) or handled
	// (consume and steady) so far, of Total.
	Done, Total int
}

// Run runs w's phases with c and returns one Result per phase that ran,
// named target. progress may be nil.
//
// When ctx ends, Run stops the phase under way and returns what was
// measured so far: the interrupted phase's Result has Partial set. Its
// error is then ctx's. A phase that fails (a publish error, a timeout)
// ends the run with an error; the Results so far are returned with it.
// A warm-up that gets no marker back within w.Timeout fails the run: the
// consumers never joined.
func Run(ctx context.Context, target string, c Client, w Workload, progress func(Progress)) ([]Result, error) {
	w, err := w.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &runner{target: target, c: c, w: w, keys: w.keyNames(), progress: progress}
	if cl, ok := c.(Cleaner); ok {
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if cerr := cl.Cleanup(cctx, w.Topic); cerr != nil && err == nil {
				err = fmt.Errorf("bench: cleanup of %s: %w", w.Topic, cerr)
			}
		}()
	}
	var results []Result
	add := func(res Result, perr error) error {
		results = append(results, res)
		if perr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("bench: %s: %s phase: %w", target, res.Phase, perr)
		}
		return nil
	}
	if w.has(PhasePublish) || w.has(PhaseConsume) {
		if err := r.warmUpAlone(ctx); err != nil {
			if ctx.Err() != nil {
				return results, ctx.Err()
			}
			return results, fmt.Errorf("bench: %s: warm-up: %w", target, err)
		}
	}
	var published, consumed float64
	if w.has(PhasePublish) {
		res, perr := r.publishPhase(ctx)
		if err := add(res, perr); err != nil {
			return results, err
		}
		published = res.MsgsPerSec
	}
	if w.has(PhaseConsume) {
		res, perr := r.consumePhase(ctx)
		if err := add(res, perr); err != nil {
			return results, err
		}
		consumed = res.MsgsPerSec
	}
	if w.has(PhaseSteady) {
		rate := w.Rate
		if rate == 0 {
			rate = defaultRate(published, consumed)
		}
		if rate < 1 {
			return results, fmt.Errorf("bench: %s: steady rate %g is below 1 message/s", target, rate)
		}
		res, perr := r.steadyPhase(ctx, rate)
		if err := add(res, perr); err != nil {
			return results, err
		}
	}
	return results, nil
}

// defaultRate is half of what publishing and consuming at once could
// sustain if they shared one resource (the CPU, on a small machine with
// the broker on it): 1/(1/published + 1/consumed), halved.
func defaultRate(published, consumed float64) float64 {
	if published <= 0 || consumed <= 0 {
		return 0
	}
	return math.Floor(0.5 / (1/published + 1/consumed))
}

// The payload starts with the message's sequence number and its due time
// (Unix nanoseconds; zero outside the steady phase). Markers have the
// marker bit set, their warm-up round in the bits above 32 and their index
// below.
const (
	markerBit  = uint64(1) << 63
	steadyBase = uint64(1) << 40
)

func encode(p []byte, seq uint64, due int64) {
	binary.BigEndian.PutUint64(p, seq)
	binary.BigEndian.PutUint64(p[8:], uint64(due))
}

type runner struct {
	target   string
	c        Client
	w        Workload
	keys     []string
	progress func(Progress)
	round    atomic.Uint64 // warm-up rounds, across the run
}

func (r *runner) key(j uint64) string {
	if len(r.keys) == 0 {
		return ""
	}
	return r.keys[j%uint64(len(r.keys))]
}

// tracker counts one phase's deliveries: which of its n messages arrived,
// how many twice, how many behind a later message of their key.
type tracker struct {
	base    uint64
	n       int64
	bits    []atomic.Uint64
	seen    atomic.Int64
	dups    atomic.Int64
	reorder atomic.Int64
	stray   atomic.Int64
	last    []atomic.Int64 // per key (none when keyless): the highest index handled, +1
	first   atomic.Int64   // Unix nanos of the first delivery
	end     atomic.Int64   // Unix nanos of the n-th distinct one
	done    chan struct{}

	// markers: the warm-up round this tracker waits for, and its bits
	// (all under markerMu).
	markerMu    sync.Mutex
	markerRound uint64
	markerBits  []uint64
	markerSeen  int64
	markerN     int64
	markersDone chan struct{}

	latMu sync.Mutex
	lat   *hdrhistogram.Histogram // steady phase only
}

func newTracker(base uint64, n, keys, markers int, latency bool) *tracker {
	t := &tracker{
		base:    base,
		n:       int64(n),
		bits:    make([]atomic.Uint64, (n+63)/64),
		last:    make([]atomic.Int64, keys),
		done:    make(chan struct{}),
		markerN: int64(markers),
	}
	if n == 0 {
		close(t.done)
	}
	if latency {
		// 1 µs to 10 minutes, three significant digits.
		t.lat = hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
	}
	return t
}

// expectMarkers makes t wait for the markers of round; it returns the
// channel closed when all of them have been handled.
func (t *tracker) expectMarkers(round uint64) <-chan struct{} {
	t.markerMu.Lock()
	defer t.markerMu.Unlock()
	t.markerBits = make([]uint64, (t.markerN+63)/64)
	t.markerSeen = 0
	t.markersDone = make(chan struct{})
	t.markerRound = round
	return t.markersDone
}

func (t *tracker) handle(p []byte) {
	now := time.Now().UnixNano()
	if len(p) < minSize {
		t.stray.Add(1)
		return
	}
	seq := binary.BigEndian.Uint64(p)
	if seq&markerBit != 0 {
		t.marker(seq)
		return
	}
	if seq < t.base || seq-t.base >= uint64(t.n) {
		t.stray.Add(1)
		return
	}
	j := seq - t.base
	t.first.CompareAndSwap(0, now)
	word, bit := &t.bits[j/64], uint64(1)<<(j%64)
	if word.Or(bit)&bit != 0 {
		t.dups.Add(1)
		return
	}
	if len(t.last) > 0 {
		last := &t.last[j%uint64(len(t.last))]
		for {
			l := last.Load()
			if int64(j)+1 < l {
				t.reorder.Add(1)
				break
			}
			if last.CompareAndSwap(l, int64(j)+1) {
				break
			}
		}
	}
	if t.lat != nil {
		due := int64(binary.BigEndian.Uint64(p[8:]))
		us := (now - due) / int64(time.Microsecond)
		t.latMu.Lock()
		_ = t.lat.RecordValue(max(us, 1))
		t.latMu.Unlock()
	}
	if t.seen.Add(1) == t.n {
		t.end.Store(now)
		close(t.done)
	}
}

func (t *tracker) marker(seq uint64) {
	round, i := (seq&^markerBit)>>32, int64(seq&math.MaxUint32)
	t.markerMu.Lock()
	defer t.markerMu.Unlock()
	if round != t.markerRound || i >= t.markerN || t.markerBits == nil {
		return
	}
	word, bit := &t.markerBits[i/64], uint64(1)<<(i%64)
	if *word&bit != 0 {
		return
	}
	*word |= bit
	if t.markerSeen++; t.markerSeen == t.markerN {
		close(t.markersDone)
	}
}

// warmUp publishes rounds of markers until every marker of one round has
// come back through sub's handler (t), each round given a second more
// than the one before; it fails when w.Timeout passes first.
func (r *runner) warmUp(ctx context.Context, t *tracker) error {
	ctx, cancel := context.WithTimeout(ctx, r.w.Timeout)
	defer cancel()
	pub, err := r.c.Publisher(ctx, r.w.Topic)
	if err != nil {
		return err
	}
	defer pub.Close(context.WithoutCancel(ctx))
	wait := time.Second
	for {
		round := r.round.Add(1)
		done := t.expectMarkers(round)
		msgs := make([]Message, 0, 64)
		for i := 0; i < r.w.WarmUp; i += len(msgs) {
			msgs = msgs[:0]
			for k := i; k < min(i+64, r.w.WarmUp); k++ {
				p := make([]byte, r.w.Size)
				encode(p, markerBit|round<<32|uint64(k), 0)
				msgs = append(msgs, Message{Key: r.key(uint64(k)), Payload: p})
			}
			if err := pub.Publish(ctx, msgs); err != nil {
				if message.CodeOf(err) == message.NotFound && ctx.Err() == nil {
					// The broker has no group for the topic yet (RabbitMQ
					// refuses an unroutable publish): wait for the
					// consumers to declare it, then try another round.
					break
				}
				return err
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-done:
			timer.Stop()
			return nil
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("no full round of %d markers came back within %s: %w", r.w.WarmUp, r.w.Timeout, ctx.Err())
		case <-timer.C:
			wait += time.Second
		}
	}
}

// warmUpAlone makes the group exist and catch up, then stops its
// consumers.
func (r *runner) warmUpAlone(ctx context.Context) error {
	t := newTracker(0, 0, len(r.keys), r.w.WarmUp, false)
	sub, err := r.c.Subscribe(ctx, r.w.Topic, r.w.Group, r.w.Consumers, t.handle)
	if err != nil {
		return err
	}
	werr := r.warmUp(ctx, t)
	return errors.Join(werr, closeSub(ctx, sub))
}

func closeSub(ctx context.Context, sub Subscription) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	return sub.Close(ctx)
}

// schedule is the steady phase's clock: message j is due at start+j/rate.
type schedule struct {
	start time.Time
	rate  float64
}

func (s *schedule) due(j uint64) time.Time {
	return s.start.Add(time.Duration(float64(j) / s.rate * float64(time.Second)))
}

// publish sends n messages, numbered base+j, from w.Publishers
// goroutines: publisher p sends the messages of the keys k with
// k mod P = p (keyless: j mod P = p), in order. With a schedule, each
// message is sent one at a time, when due; otherwise in batches of
// w.Batch. sent counts the messages accepted.
func (r *runner) publish(ctx context.Context, base uint64, n int, sched *schedule, sent *atomic.Int64) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	P := r.w.Publishers
	pubs := make([]Publisher, 0, P)
	defer func() {
		for _, p := range pubs {
			p.Close(context.WithoutCancel(ctx))
		}
	}()
	for range P {
		p, err := r.c.Publisher(ctx, r.w.Topic)
		if err != nil {
			return err
		}
		pubs = append(pubs, p)
	}
	batch := r.w.Batch
	if sched != nil {
		batch = 1
		sched.start = time.Now()
	}
	var wg sync.WaitGroup
	for p, pub := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := make([]Message, 0, batch)
			flush := func() bool {
				if len(msgs) == 0 {
					return true
				}
				if err := pub.Publish(ctx, msgs); err != nil {
					cancel(err)
					return false
				}
				sent.Add(int64(len(msgs)))
				msgs = msgs[:0]
				return true
			}
			for j := range r.sequence(p, n) {
				var due int64
				if sched != nil {
					at := sched.due(j)
					due = at.UnixNano()
					if d := time.Until(at); d > 0 {
						t := time.NewTimer(d)
						select {
						case <-t.C:
						case <-ctx.Done():
							t.Stop()
							return
						}
						// The publisher waited: it was not behind, so
						// the latency starts when its timer woke it (Go's
						// timers may wake up to a millisecond late; that
						// is the bench's delay, not the broker's).
						due = time.Now().UnixNano()
					}
				}
				payload := make([]byte, r.w.Size)
				encode(payload, base+j, due)
				msgs = append(msgs, Message{Key: r.key(j), Payload: payload})
				if len(msgs) == batch && !flush() {
					return
				}
			}
			flush()
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// sequence yields, in increasing order, the message numbers below n that
// publisher p sends.
func (r *runner) sequence(p, n int) func(yield func(uint64) bool) {
	P, K := r.w.Publishers, len(r.keys)
	return func(yield func(uint64) bool) {
		if K == 0 {
			for j := p; j < n; j += P {
				if !yield(uint64(j)) {
					return
				}
			}
			return
		}
		var own []int
		for k := p; k < K; k += P {
			own = append(own, k)
		}
		if len(own) == 0 {
			return
		}
		for round := 0; ; round += K {
			for _, k := range own {
				j := round + k
				if j >= n {
					return
				}
				if !yield(uint64(j)) {
					return
				}
			}
		}
	}
}

// report calls r.progress every 100ms with done's count until stop is
// closed, and once more at the end.
func (r *runner) report(phase Phase, total int, done func() int64) (stop func()) {
	if r.progress == nil {
		return func() {}
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				r.progress(Progress{Target: r.target, Phase: phase, Done: int(done()), Total: total})
			case <-quit:
				r.progress(Progress{Target: r.target, Phase: phase, Done: int(done()), Total: total})
				return
			}
		}
	}()
	return func() { close(quit); <-finished }
}

func (r *runner) publishPhase(ctx context.Context) (Result, error) {
	pctx, cancel := context.WithTimeout(ctx, r.w.Timeout)
	defer cancel()
	var sent atomic.Int64
	stop := r.report(PhasePublish, r.w.Messages, sent.Load)
	m := startMeter()
	start := time.Now()
	err := r.publish(pctx, 0, r.w.Messages, nil, &sent)
	elapsed := time.Since(start)
	stop()
	res := r.result(PhasePublish, m, int(sent.Load()), elapsed)
	return res, r.phaseErr(ctx, &res, err, int(sent.Load()), r.w.Messages)
}

// phaseErr marks res partial when the phase did not finish and words the
// error.
func (r *runner) phaseErr(ctx context.Context, res *Result, err error, got, want int) error {
	if err == nil && got == want {
		return nil
	}
	res.Partial = true
	switch {
	case ctx.Err() != nil:
		err = ctx.Err()
	case errors.Is(err, context.DeadlineExceeded) || err == nil:
		err = fmt.Errorf("%d of %d messages within the timeout of %s", got, want, r.w.Timeout)
	}
	res.Error = err.Error()
	return err
}

// consume runs consumers until t has every message or ctx ends.
func (r *runner) consume(ctx context.Context, t *tracker, body func(ctx context.Context) error) (subscribed time.Time, err error) {
	subscribed = time.Now()
	sub, err := r.c.Subscribe(ctx, r.w.Topic, r.w.Group, r.w.Consumers, t.handle)
	if err != nil {
		return subscribed, err
	}
	if body != nil {
		err = body(ctx)
	}
	if err == nil {
		select {
		case <-t.done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	return subscribed, errors.Join(err, closeSub(ctx, sub))
}

func (r *runner) consumePhase(ctx context.Context) (Result, error) {
	pctx, cancel := context.WithTimeout(ctx, r.w.Timeout)
	defer cancel()
	t := newTracker(0, r.w.Messages, len(r.keys), r.w.WarmUp, false)
	stop := r.report(PhaseConsume, r.w.Messages, t.seen.Load)
	m := startMeter()
	subscribed, err := r.consume(pctx, t, nil)
	stop()
	res := r.tracked(PhaseConsume, m, t, subscribed)
	return res, r.phaseErr(ctx, &res, err, int(t.seen.Load()), r.w.Messages)
}

func (r *runner) steadyPhase(ctx context.Context, rate float64) (Result, error) {
	n := r.w.SteadyMessages
	pctx, cancel := context.WithTimeout(ctx, r.w.Timeout)
	defer cancel()
	t := newTracker(steadyBase, n, len(r.keys), r.w.WarmUp, true)
	var m meter
	sched := &schedule{rate: rate}
	var sent atomic.Int64
	stop := func() {}
	subscribed, err := r.consume(pctx, t, func(ctx context.Context) error {
		if err := r.warmUp(ctx, t); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		stop = r.report(PhaseSteady, n, t.seen.Load)
		m = startMeter()
		return r.publish(ctx, steadyBase, n, sched, &sent)
	})
	stop()
	res := r.tracked(PhaseSteady, m, t, subscribed)
	res.Rate = rate
	res.StartupSeconds = 0 // it would count the warm-up
	// The steady phase's throughput is the rate kept: messages over the
	// time from the first due time to the last delivery.
	if !sched.start.IsZero() && t.end.Load() != 0 {
		res.Seconds = time.Unix(0, t.end.Load()).Sub(sched.start).Seconds()
		res.MsgsPerSec = float64(res.Messages) / res.Seconds
		res.MBPerSec = res.MsgsPerSec * float64(r.w.Size) / 1e6
	}
	t.latMu.Lock()
	res.Latency = latencyOf(t.lat)
	t.latMu.Unlock()
	return res, r.phaseErr(ctx, &res, err, int(t.seen.Load()), n)
}
