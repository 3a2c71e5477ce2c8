package middleware

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// GapPolicy is what [Ordering] does with a message that waits behind a gap
// in its key's sequence once the gap has stayed open for GapTimeout.
type GapPolicy int

const (
	// GapNack gives the waiting messages back to the broker, each
	// deferred with Defer(ErrGap, GapTimeout), for as long as the gap stays
	// open: nothing is skipped and nothing held in memory. The key stalls
	// until the missing message arrives (for instance replayed from a
	// dead-letter topic). It is the default.
	GapNack GapPolicy = iota
	// GapDeliverAnyway skips ahead: the missing numbers are taken as lost,
	// the lowest waiting number runs next and the rest follow in order.
	// A missing message that arrives later is below the key's position and
	// is acked without running, as a duplicate would be.
	GapDeliverAnyway
	// GapDeadLetter fails the waiting messages with
	// message.PermanentError(ErrGap), so that the dead-letter middleware,
	// placed outside Ordering, dead-letters them. The key's position does
	// not move: messages beyond the gap keep going to the dead-letter
	// topic until the missing message arrives, and replaying the
	// dead-letter topic in order then resumes the key.
	GapDeadLetter
)

// String returns "nack", "deliver-anyway" or "dead-letter".
func (p GapPolicy) String() string {
	switch p {
	case GapNack:
		return "nack"
	case GapDeliverAnyway:
		return "deliver-anyway"
	case GapDeadLetter:
		return "dead-letter"
	}
	return "GapPolicy(" + strconv.Itoa(int(p)) + ")"
}

// OrderingConfig configures [Ordering]. The zero value is valid: every field
// documents its default.
type OrderingConfig struct {
	// Store keeps the last number handled per key. Default: a new
	// MemoryOrderingStore. Share one store between the Ordering
	// middlewares of a consumer group's subscribers (a SQL store from
	// package middleware/sqlstore across processes), and keep it across
	// restarts.
	Store OrderingStore
	// Key returns the ordering key of a message; "" lets the message
	// through unordered. Default OrderingKey: the message Key scoped by
	// consumer group and topic.
	Key func(*message.Message) string
	// GapTimeout is how long a gap in a key's sequence may stay open before
	// GapPolicy applies to the messages waiting behind it. Default 10s.
	GapTimeout time.Duration
	// GapPolicy applies once a gap has been open for GapTimeout. Default
	// GapNack.
	GapPolicy GapPolicy
	// MaxHeldPerKey is the most handler calls held back, blocked, for one
	// key; MaxHeld for all keys together. A message over either limit is
	// nacked with RetryDelay instead of held (back-pressure). Defaults 64
	// and 1024. The buffer also remembers up to twice as many numbers
	// that it nacked, to keep their order when it skips a gap.
	MaxHeldPerKey int
	MaxHeld       int
	// RetryDelay is the redelivery delay of a message ahead of its key's
	// position that is not held (back-pressure, or a subscriber whose
	// calls for the key cannot overlap), and how often a held message
	// re-reads the store for positions moved by other consumers. It must
	// be below GapTimeout. Default 200ms.
	RetryDelay time.Duration
	// HoldTimeout is the longest one handler call is held, blocked, in
	// a row; then the message is deferred for RetryDelay. A held message
	// stays unsettled, and a broker that hands a partition to another
	// group member only once its owner has settled what it holds (the
	// memory adapter, Kafka, RabbitMQ's single active consumer) would
	// otherwise never deliver the number the held call waits for.
	// A deferred message keeps its key's gap open: GapTimeout counts
	// from when the gap opened, across deferrals. Default 1s.
	HoldTimeout time.Duration
	// MaxKeys is how many idle keys' positions are kept in memory, to
	// spare the store a read per message; the store keeps them all.
	// Default 10000.
	MaxKeys int
	// OnDuplicate, when set, is called for every message at or below its
	// key's position, which is acked without running the handler.
	OnDuplicate func(ctx context.Context, m *message.Message)
	// OnGap, when set, is called each time GapPolicy acts on a message m
	// that waited behind a gap at number expected: before it runs
	// (GapDeliverAnyway: numbers expected..seq-1 are skipped), or before
	// it is failed (GapDeadLetter) or nacked (GapNack).
	OnGap func(ctx context.Context, m *message.Message, expected uint64)
	// OnStoreError, when set, receives a failure to record a handled
	// number (the message is acked all the same, and the position kept
	// in memory).
	OnStoreError func(ctx context.Context, m *message.Message, err error)
}

// Errors of the ordering buffer, reachable with errors.Is in the errors it
// returns.
var (
	// ErrOutOfOrder: the message is ahead of its key's position and was
	// not held (back-pressure, drain, or calls for the key cannot
	// overlap); it is deferred (Defer) for RetryDelay.
	ErrOutOfOrder = message.Errorf(message.Unavailable, "ordering", "message is ahead of its key's sequence")
	// ErrGap: the message waited behind a gap for longer than GapTimeout.
	ErrGap = message.Errorf(message.Unavailable, "ordering", "sequence gap timed out")
)

// OrderingKey is the default ordering key: the message Key, scoped by the
// consumer group and topic it was received on. A message without Key has
// no ordering key.
func OrderingKey(m *message.Message) string {
	if m.Key == "" {
		return ""
	}
	d, ok := m.Delivery()
	if !ok {
		return m.Key
	}
	return d.Group + "/" + d.Topic + "/" + m.Key
}

// Ordering returns the ordering buffer: a middleware that runs the messages
// of each key in the order of the sequence numbers that a [Sequencer]
// stamped on them, whatever order the broker delivers them in.
//
// A key's position is the last number handled (0 before the first). For
// a message numbered seq:
//
//   - seq <= position: a duplicate or a message skipped over; acked without
//     running the handler (OnDuplicate).
//   - seq == position+1: runs, unless the same number is running right now
//     (then it waits like the next case). When the handler returns nil
//     the position moves to seq and the store records it; when it fails
//     the position stays and the message is nacked as usual.
//   - seq > position+1: held: its handler call blocks, unacked, until the
//     numbers before it have run, then it runs. Past GapTimeout the
//     GapPolicy applies. Held calls are bounded by MaxHeldPerKey and
//     MaxHeld; over them a message is deferred (back-pressure).
//
// Messages without a sequence number, or without an ordering key, pass
// through. A malformed number fails with a permanent InvalidArgument error.
//
// Holding never deadlocks. A held call blocks only when another call can
// deliver the message it waits for; otherwise it is deferred with
// Defer(ErrOutOfOrder, RetryDelay) and comes back later, which holds it in
// the broker instead. Under a polybus Subscriber (which it learns from
// subscriber.InfoFrom) it is deferred, not held, when
//
//   - the subscriber serialises calls per key (the default, unless
//     subscriber.Unordered()): the message it waits for has its key, and
//     is queued behind this very call;
//   - it would leave no handler slot free: at most Concurrency-1 calls of
//     one Subscribe call are held, so the missing message can always run;
//   - the Subscribe call is stopping: nothing more will arrive;
//   - it has been held for HoldTimeout: a broker may keep the missing
//     number from this subscriber until it settles what it holds (a
//     partition moving to another member of the group).
//
// So Ordering works with any concurrency and either mode. With
// subscriber.Unordered() and Concurrency above 1 it holds in memory and
// out-of-order messages run as soon as their turn comes; with per-key
// serialisation each out-of-order message costs a redelivery after
// RetryDelay. Handler calls of one key never overlap in either mode.
// Called directly, not by a Subscriber, a held call blocks within the
// limits: the caller must keep delivering.
//
// The message of the next number that fails permanently and is
// dead-lettered leaves a gap like a lost message. Ordering assumes
// at-least-once delivery: under subscriber.AtMostOnce a nack loses the
// message.
//
// Several processes of a consumer group can share a SQL store: a held
// message re-reads the store every RetryDelay, so it sees numbers that
// another process handled. Two deliveries of one number to two processes
// at once can both run; put Dedupe outside Ordering to prevent that.
func Ordering(cfg OrderingConfig) (subscriber.Middleware, error) {
	o, err := newOrdering(cfg)
	if err != nil {
		return nil, err
	}
	return o.wrap, nil
}

func (o *ordering) wrap(next subscriber.Handler) subscriber.Handler {
	return func(ctx context.Context, m *message.Message) error {
		return o.handle(ctx, next, m)
	}
}

// ordering is the buffer's state. One mutex guards it all: every section
// under it is short, and handlers run outside it.
type ordering struct {
	cfg    OrderingConfig
	memory bool // the store ignores contexts (see contextFree)

	mu      sync.Mutex
	keys    map[string]*ordKey
	held    int                      // blocked calls, all keys
	pending int                      // remembered numbers, all keys
	byRun   map[*subscriber.Info]int // blocked calls per Subscribe call
	peak    int                      // most calls ever blocked at once
}

// ordKey is one key's state.
//
// Invariants: running means a call for last+1 is in the handler, and no
// other call for the key is. pending holds numbers above last seen and not
// yet run (held, nacked, or failed), with when they were last seen. A key
// with no refs, pending or running may be evicted: its position is in the
// store.
type ordKey struct {
	last     uint64
	running  bool
	refs     int // calls inside handle for this key
	held     int
	wake     chan struct{} // closed on every change; nil when nobody waits
	gapSince time.Time     // when the current gap was first seen; zero when none
	readAt   time.Time     // when last was last read from the store
	pending  map[uint64]*ordPending
}

type ordPending struct {
	seen    time.Time
	waiting int
}

func newOrdering(cfg OrderingConfig) (*ordering, error) {
	const op = "ordering"
	if cfg.GapTimeout < 0 || cfg.RetryDelay < 0 || cfg.HoldTimeout < 0 || cfg.MaxHeldPerKey < 0 || cfg.MaxHeld < 0 || cfg.MaxKeys < 0 {
		return nil, message.Errorf(message.InvalidArgument, op, "negative value in ordering config")
	}
	if cfg.GapPolicy < GapNack || cfg.GapPolicy > GapDeadLetter {
		return nil, message.Errorf(message.InvalidArgument, op, "unknown gap policy %d", cfg.GapPolicy)
	}
	if cfg.GapTimeout == 0 {
		cfg.GapTimeout = 10 * time.Second
	}
	if cfg.RetryDelay == 0 {
		cfg.RetryDelay = min(200*time.Millisecond, cfg.GapTimeout/2)
	}
	if cfg.RetryDelay >= cfg.GapTimeout {
		return nil, message.Errorf(message.InvalidArgument, op, "retry delay %s is not below gap timeout %s", cfg.RetryDelay, cfg.GapTimeout)
	}
	if cfg.HoldTimeout == 0 {
		cfg.HoldTimeout = time.Second
	}
	if cfg.MaxHeldPerKey == 0 {
		cfg.MaxHeldPerKey = 64
	}
	if cfg.MaxHeld == 0 {
		cfg.MaxHeld = 1024
	}
	if cfg.MaxHeldPerKey > cfg.MaxHeld {
		return nil, message.Errorf(message.InvalidArgument, op, "max held per key %d is over max held %d", cfg.MaxHeldPerKey, cfg.MaxHeld)
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = 10_000
	}
	if cfg.Key == nil {
		cfg.Key = OrderingKey
	}
	if cfg.Store == nil {
		cfg.Store = NewMemoryOrderingStore()
	}
	_, memory := cfg.Store.(contextFree)
	return &ordering{cfg: cfg, memory: memory, keys: map[string]*ordKey{}, byRun: map[*subscriber.Info]int{}}, nil
}

func (o *ordering) handle(ctx context.Context, next subscriber.Handler, m *message.Message) error {
	raw, has := m.Metadata[message.KeySequence]
	if !has {
		return next(ctx, m)
	}
	key := o.cfg.Key(m)
	if key == "" {
		return next(ctx, m)
	}
	seq, err := strconv.ParseUint(raw, 10, 64)
	if err != nil || seq == 0 {
		return message.PermanentError(message.Errorf(message.InvalidArgument, "ordering", "message %s: malformed sequence number %q", m.ID, raw))
	}
	info := subscriber.InfoFrom(ctx)

	o.mu.Lock()
	st, err := o.acquire(ctx, key)
	if err != nil {
		o.mu.Unlock()
		return codedStoreError("ordering: read position", err)
	}
	var gapAt uint64     // set when GapDeliverAnyway skipped ahead for m
	var heldAt time.Time // when m was first held
	for {
		if seq <= st.last {
			o.forget(st, seq)
			o.release(key, st)
			o.mu.Unlock()
			if n := noteFrom(ctx); n != nil {
				n.duplicate = true
			}
			if o.cfg.OnDuplicate != nil {
				o.cfg.OnDuplicate(ctx, m)
			}
			return nil
		}
		if seq == st.last+1 && !st.running {
			st.running = true
			o.forget(st, seq)
			o.mu.Unlock()
			if gapAt != 0 && o.cfg.OnGap != nil {
				o.cfg.OnGap(ctx, m, gapAt)
			}
			return o.run(ctx, next, m, key, st, seq)
		}
		// Out of turn from here on: the slow path, which reads the clock
		// (the in-order path above does not).
		now := time.Now()
		ahead := seq > st.last+1 && !st.running
		if ahead && now.Sub(st.readAt) >= o.cfg.RetryDelay {
			// Another consumer sharing the store may have moved on.
			if o.refresh(ctx, key, st, now) {
				continue
			}
		}
		o.see(st, seq, now)
		if ahead {
			if st.gapSince.IsZero() {
				st.gapSince = now
			}
			if now.Sub(st.gapSince) >= o.cfg.GapTimeout {
				expected := st.last + 1
				switch o.cfg.GapPolicy {
				case GapDeliverAnyway:
					if o.lowest(st, seq) == seq {
						st.last = seq - 1
						st.gapSince = time.Time{}
						o.prune(st)
						o.broadcast(st)
						gapAt = expected
						continue
					}
					// A lower number is on its way: wait for it.
				case GapDeadLetter:
					o.forget(st, seq)
					o.release(key, st)
					o.mu.Unlock()
					if o.cfg.OnGap != nil {
						o.cfg.OnGap(ctx, m, expected)
					}
					return message.PermanentError(message.Errorf(message.Unavailable, "ordering",
						"message %s: key %q waits for number %d, got %d: %w", m.ID, m.Key, expected, seq, ErrGap))
				case GapNack:
					o.release(key, st)
					o.mu.Unlock()
					if o.cfg.OnGap != nil {
						o.cfg.OnGap(ctx, m, expected)
					}
					return Defer(message.Errorf(message.Unavailable, "ordering",
						"message %s: key %q waits for number %d, got %d: %w", m.ID, m.Key, expected, seq, ErrGap), o.cfg.GapTimeout)
				}
			}
		}
		if heldAt.IsZero() {
			heldAt = now
		}
		holdLeft := o.cfg.HoldTimeout - now.Sub(heldAt)
		if holdLeft <= 0 || !o.mayBlock(info, m, st) {
			o.release(key, st)
			o.mu.Unlock()
			return Defer(ErrOutOfOrder, o.cfg.RetryDelay)
		}
		if err := o.block(ctx, info, st, seq, now, holdLeft); err != nil {
			o.release(key, st)
			o.mu.Unlock()
			return err
		}
	}
}

// acquire returns key's state, loading its position from the store when
// it is not in memory, and counts the caller in its refs. Called and
// returns with o.mu held; the store is read without it.
func (o *ordering) acquire(ctx context.Context, key string) (*ordKey, error) {
	st := o.keys[key]
	if st == nil {
		o.mu.Unlock()
		last, err := o.cfg.Store.Last(ctx, key)
		now := time.Now()
		o.mu.Lock()
		if err != nil {
			return nil, err
		}
		if st = o.keys[key]; st == nil {
			o.evictIdle()
			st = &ordKey{last: last, readAt: now}
			o.keys[key] = st
		} else {
			o.moveTo(st, last)
		}
	}
	st.refs++
	return st, nil
}

// release uncounts a caller that leaves handle. With o.mu held.
func (o *ordering) release(key string, st *ordKey) {
	st.refs--
	if o.idle(st) && len(o.keys) > o.cfg.MaxKeys {
		delete(o.keys, key)
	}
}

func (o *ordering) idle(st *ordKey) bool {
	return st.refs == 0 && !st.running && len(st.pending) == 0
}

// evictIdle makes room for a new key when MaxKeys are in memory, dropping
// idle keys (about a tenth of the limit, so the scan is paid rarely).
// Keys that are busy stay, even over the limit.
func (o *ordering) evictIdle() {
	if len(o.keys) < o.cfg.MaxKeys {
		return
	}
	target := o.cfg.MaxKeys / 10
	for k, st := range o.keys {
		if target <= 0 {
			return
		}
		if o.idle(st) {
			delete(o.keys, k)
			target--
		}
	}
}

// refresh re-reads key's position from the store, and reports whether it
// moved. Called and returns with o.mu held.
func (o *ordering) refresh(ctx context.Context, key string, st *ordKey, now time.Time) bool {
	st.readAt = now
	o.mu.Unlock()
	last, err := o.cfg.Store.Last(ctx, key)
	o.mu.Lock()
	if err != nil || last <= st.last {
		// A failed read only delays what another consumer did.
		return false
	}
	o.moveTo(st, last)
	return true
}

// moveTo moves st's position forward to last (never back) and wakes the
// waiters. With o.mu held.
func (o *ordering) moveTo(st *ordKey, last uint64) {
	if last <= st.last {
		return
	}
	st.last = last
	o.prune(st)
	o.regap(st)
	o.broadcast(st)
}

// regap restarts the gap clock after the position moved: a gap remains
// when numbers above the next one are waiting.
func (o *ordering) regap(st *ordKey) {
	st.gapSince = time.Time{}
	for n := range st.pending {
		if n > st.last+1 {
			st.gapSince = time.Now()
			return
		}
	}
}

// see remembers that seq was seen now, within the limits. With o.mu held.
func (o *ordering) see(st *ordKey, seq uint64, now time.Time) {
	if p := st.pending[seq]; p != nil {
		p.seen = now
		return
	}
	if len(st.pending) >= 2*o.cfg.MaxHeldPerKey || o.pending >= 2*o.cfg.MaxHeld {
		return
	}
	if st.pending == nil {
		st.pending = map[uint64]*ordPending{}
	}
	st.pending[seq] = &ordPending{seen: now}
	o.pending++
}

// forget drops seq from the remembered numbers unless calls wait on it.
func (o *ordering) forget(st *ordKey, seq uint64) {
	if p := st.pending[seq]; p != nil && p.waiting == 0 {
		delete(st.pending, seq)
		o.pending--
	}
}

// prune drops remembered numbers at or below the position, and those not
// seen for longer than GapTimeout: they went elsewhere (another consumer,
// a dead-letter topic). Held numbers stay.
func (o *ordering) prune(st *ordKey) {
	if len(st.pending) == 0 {
		return
	}
	now := time.Now()
	for n, p := range st.pending {
		if p.waiting == 0 && (n <= st.last || now.Sub(p.seen) > o.cfg.GapTimeout) {
			delete(st.pending, n)
			o.pending--
		}
	}
}

// lowest returns the lowest number above the position that is known to be
// on its way: seq, a held one, or one nacked or failed within GapTimeout.
func (o *ordering) lowest(st *ordKey, seq uint64) uint64 {
	o.prune(st)
	low := seq
	for n := range st.pending {
		if n > st.last && n < low {
			low = n
		}
	}
	return low
}

func (o *ordering) broadcast(st *ordKey) {
	if st.wake != nil {
		close(st.wake)
		st.wake = nil
	}
}

// mayBlock reports whether a call for m may block waiting for its turn,
// which is when the message it waits for can still reach the handler and
// the limits allow. With o.mu held.
func (o *ordering) mayBlock(info *subscriber.Info, m *message.Message, st *ordKey) bool {
	if st.held >= o.cfg.MaxHeldPerKey || o.held >= o.cfg.MaxHeld {
		return false
	}
	if info == nil {
		return true
	}
	select {
	case <-info.Stopping():
		return false
	default:
	}
	if info.Ordered && m.Key != "" {
		return false
	}
	return o.byRun[info] < info.Concurrency-1
}

// block waits, as a held call for seq, until st changes, the gap times out,
// RetryDelay passes (to re-read the store), holdLeft passes, ctx ends or
// the Subscribe call stops. It returns nil to re-evaluate, or the error to
// return. Called and returns with o.mu held.
func (o *ordering) block(ctx context.Context, info *subscriber.Info, st *ordKey, seq uint64, now time.Time, holdLeft time.Duration) error {
	wait := min(o.cfg.RetryDelay, holdLeft)
	if !st.gapSince.IsZero() && seq > st.last+1 && !st.running {
		// Wake when the gap times out; once it has, only changes (or
		// the store re-read) can help.
		if left := o.cfg.GapTimeout - now.Sub(st.gapSince); left > 0 && left < wait {
			wait = left
		}
	}
	var stopping <-chan struct{}
	if info != nil {
		stopping = info.Stopping()
		o.byRun[info]++
	}
	st.held++
	o.held++
	o.peak = max(o.peak, o.held)
	p := st.pending[seq]
	if p == nil {
		// Over the memory limit of remembered numbers: hold it anyway
		// (mayBlock checked the held limits), just unremembered.
		p = &ordPending{}
	}
	p.waiting++
	if st.wake == nil {
		st.wake = make(chan struct{})
	}
	wake := st.wake
	o.mu.Unlock()

	t := time.NewTimer(wait)
	var err error
	select {
	case <-wake:
	case <-t.C:
	case <-ctx.Done():
		err = ctx.Err()
	case <-stopping:
		err = Defer(ErrOutOfOrder, o.cfg.RetryDelay)
	}
	t.Stop()

	o.mu.Lock()
	p.waiting--
	p.seen = time.Now()
	st.held--
	o.held--
	if info != nil {
		if o.byRun[info]--; o.byRun[info] == 0 {
			delete(o.byRun, info)
		}
	}
	return err
}

// run calls the handler for the key's next number and moves the position
// when it succeeds. A failure or a panic leaves the position, and the
// number is remembered as on its way back.
func (o *ordering) run(ctx context.Context, next subscriber.Handler, m *message.Message, key string, st *ordKey, seq uint64) error {
	ok := false
	defer func() {
		o.mu.Lock()
		st.running = false
		if ok {
			if seq > st.last {
				st.last = seq
			}
			o.prune(st)
			o.regap(st)
		} else {
			o.see(st, seq, time.Now())
		}
		o.broadcast(st)
		o.release(key, st)
		o.mu.Unlock()
	}()
	if err := next(ctx, m); err != nil {
		return err
	}
	sctx, cancel := detached(ctx, o.memory)
	defer cancel()
	if err := o.cfg.Store.Advance(sctx, key, seq); err != nil && o.cfg.OnStoreError != nil {
		o.cfg.OnStoreError(ctx, m, codedStoreError("ordering: record position", err))
	}
	ok = true
	return nil
}
