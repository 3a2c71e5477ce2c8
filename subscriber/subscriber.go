package subscriber

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/polybus/polybus/message"
)

// Handler handles one message. Returning nil acks it; returning an error
// nacks it, so the broker redelivers it (after the delay that
// message.RetryAfter asks for, else Config.NackDelay). A handler must honour
// ctx: it is cancelled when a drain's deadline passes.
//
// What a handler may rely on: ctx carries the values of Subscribe's
// context (not its cancellation) and the call's Info (InfoFrom); it is
// one context for every call of the Subscribe call, not one per message,
// so per-message values come from middleware (which derives its own
// contexts). m is the handler's for the call, but its Payload and Metadata
// may be shared with the broker's retained copy and other deliveries
// (adapters/memory does so): read them, and Clone the message to change
// it. Calls run on a pool of at most Config.Concurrency long-lived
// goroutines, so a handler must not keep goroutine-local state between
// calls.
type Handler func(ctx context.Context, m *message.Message) error

// Middleware wraps a Handler.
type Middleware func(Handler) Handler

// Chain composes middlewares into one: the first is the outermost, so
// Chain(a, b, c)(h) runs a, then b, then c, then h.
func Chain(mws ...Middleware) Middleware {
	return func(h Handler) Handler {
		for i := len(mws) - 1; i >= 0; i-- {
			if mws[i] != nil {
				h = mws[i](h)
			}
		}
		return h
	}
}

// AckMode says when a message is acked.
type AckMode int

const (
	// AtLeastOnce acks after the handler returns nil and nacks on error.
	// A crash between handling and ack redelivers. It is the default.
	AtLeastOnce AckMode = iota
	// AtMostOnce acks before the handler runs (and waits for the broker's
	// confirmation where there is one). A handler error or a crash loses
	// the message; it is never delivered twice by polybus.
	AtMostOnce
)

// DefaultGroup is the consumer group of a Subscribe call that names none.
const DefaultGroup = "default"

// Config configures one Subscribe call. The zero value is valid: every field
// documents its default. Options set its fields.
type Config struct {
	// Group is the consumer group. Default DefaultGroup.
	Group string
	// Start is where a new group begins. Default Earliest.
	Start Start
	// Concurrency is the most handler calls running at once. Default 8.
	Concurrency int
	// Prefetch is the most messages received and not yet acked or nacked.
	// Default 4 x Concurrency; it must be at least Concurrency.
	Prefetch int
	// Unordered turns per-key serialisation off. By default two handler
	// calls for one (non-empty) key never overlap and run in delivery
	// order; messages with an empty key run in parallel.
	Unordered bool
	// AckMode is AtLeastOnce by default.
	AckMode AckMode
	// NackDelay is the redelivery delay for a handler error that asks for
	// none. Default 0: redeliver at once.
	NackDelay time.Duration
	// AckDeadline is passed to the driver (how long the broker waits for
	// an ack before redelivering), where the broker lets it be chosen.
	AckDeadline time.Duration
	// DrainTimeout bounds the wait for in-flight handlers when the
	// Subscribe context ends; then their contexts are cancelled. Close
	// uses its own context's deadline instead. Default 30s.
	DrainTimeout time.Duration
	// Middleware wraps the handler; the first is the outermost.
	Middleware []Middleware
	// Hook, when set, observes each batch received (see Hook). Default nil.
	Hook Hook
}

// Option sets a field of Config.
type Option func(*Config)

// Group sets Config.Group.
func Group(name string) Option { return func(c *Config) { c.Group = name } }

// StartAt sets Config.Start.
func StartAt(s Start) Option { return func(c *Config) { c.Start = s } }

// Concurrency sets Config.Concurrency.
func Concurrency(n int) Option { return func(c *Config) { c.Concurrency = n } }

// Prefetch sets Config.Prefetch.
func Prefetch(n int) Option { return func(c *Config) { c.Prefetch = n } }

// Unordered sets Config.Unordered.
func Unordered() Option { return func(c *Config) { c.Unordered = true } }

// WithAckMode sets Config.AckMode.
func WithAckMode(m AckMode) Option { return func(c *Config) { c.AckMode = m } }

// NackDelay sets Config.NackDelay.
func NackDelay(d time.Duration) Option { return func(c *Config) { c.NackDelay = d } }

// DrainTimeout sets Config.DrainTimeout.
func DrainTimeout(d time.Duration) Option { return func(c *Config) { c.DrainTimeout = d } }

// AckDeadline sets Config.AckDeadline.
func AckDeadline(d time.Duration) Option { return func(c *Config) { c.AckDeadline = d } }

// Use appends middleware to Config.Middleware.
func Use(mws ...Middleware) Option {
	return func(c *Config) { c.Middleware = append(c.Middleware, mws...) }
}

// WithConfig replaces the whole Config; later options still apply.
func WithConfig(cfg Config) Option { return func(c *Config) { *c = cfg } }

func (c *Config) fill(caps message.Capabilities) error {
	const op = "subscribe"
	if c.Concurrency < 0 || c.Prefetch < 0 || c.NackDelay < 0 || c.DrainTimeout < 0 || c.AckDeadline < 0 {
		return message.Errorf(message.InvalidArgument, op, "negative option in subscriber config")
	}
	if c.AckMode != AtLeastOnce && c.AckMode != AtMostOnce {
		return message.Errorf(message.InvalidArgument, op, "unknown ack mode %d", c.AckMode)
	}
	if c.Start != Earliest && c.Start != Latest {
		return message.Errorf(message.InvalidArgument, op, "unknown start position %d", c.Start)
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	if c.Prefetch == 0 {
		c.Prefetch = 4 * c.Concurrency
	}
	if c.Prefetch < c.Concurrency {
		return message.Errorf(message.InvalidArgument, op, "prefetch %d is below concurrency %d", c.Prefetch, c.Concurrency)
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if max := caps.MaxNackDelay; max > 0 && c.NackDelay > max {
		return message.Errorf(message.InvalidArgument, op, "nack delay %s is over %s's limit of %s", c.NackDelay, caps.Name, max)
	}
	return nil
}

// Options configures a Subscriber.
type Options struct {
	// Logger receives the subscriber's own events (ack failures, handler
	// panics, reconnects). Default slog.Default().
	Logger *slog.Logger
}

// Subscriber receives messages through a [Driver] and runs handlers on
// them. It is safe for concurrent use; one Subscriber can run many
// Subscribe calls.
type Subscriber struct {
	d    Driver
	caps message.Capabilities
	log  *slog.Logger

	mu       sync.Mutex
	closed   bool
	closing  chan struct{} // closed when Close starts
	closeCtx context.Context
	runs     sync.WaitGroup
	once     sync.Once
	closeErr error
}

// New returns a Subscriber over d.
func New(d Driver, opts Options) (*Subscriber, error) {
	if d == nil {
		return nil, message.Errorf(message.InvalidArgument, "subscriber: new", "nil driver")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Subscriber{d: d, caps: d.Capabilities(), log: log, closing: make(chan struct{})}, nil
}

// Capabilities returns the driver's declared capabilities.
func (s *Subscriber) Capabilities() message.Capabilities { return s.caps }

// As reaches the driver's native client when the driver offers it through
// an As(any) bool method.
func (s *Subscriber) As(target any) bool {
	if a, ok := s.d.(interface{ As(any) bool }); ok {
		return a.As(target)
	}
	return false
}

// Subscribe receives messages of topic for a consumer group and runs h on
// each, until ctx ends or Close is called. It then stops receiving, waits
// for in-flight handlers (up to Config.DrainTimeout, or Close's deadline),
// settles their acks and returns nil. It returns an error when the
// subscription cannot be opened or fails for good; transient broker errors
// are retried with backoff.
func (s *Subscriber) Subscribe(ctx context.Context, topic string, h Handler, opts ...Option) error {
	const op = "subscribe"
	if topic == "" {
		return message.Errorf(message.InvalidArgument, op, "empty topic")
	}
	if h == nil {
		return message.Errorf(message.InvalidArgument, op, "nil handler")
	}
	var cfg Config
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.fill(s.caps); err != nil {
		return err
	}
	if len(cfg.Middleware) > 0 {
		h = Chain(cfg.Middleware...)(h)
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return message.Errorf(message.Closed, op, "subscriber is closed")
	}
	s.runs.Add(1)
	s.mu.Unlock()
	defer s.runs.Done()

	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-s.closing:
			stop()
		case <-stopCtx.Done():
		}
	}()

	sub, err := s.d.Open(stopCtx, topic, OpenConfig{
		Group: cfg.Group, Start: cfg.Start, Prefetch: cfg.Prefetch, AckDeadline: cfg.AckDeadline,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return s.classify(op, err)
	}
	r := newRun(s, sub, topic, h, cfg, ctx)
	return r.loop(stopCtx)
}

func (s *Subscriber) classify(op string, err error) error {
	var e *message.Error
	if errors.As(err, &e) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return message.Wrap(s.d.ErrorCode(err), op, err)
}

// Close stops every Subscribe call, drains their in-flight handlers until
// ctx ends (then cancels the handlers' contexts and waits for them to
// return), and closes the driver. No goroutine of the subscriber outlives
// Close. Close is idempotent.
func (s *Subscriber) Close(ctx context.Context) error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.closeCtx = ctx
		close(s.closing)
		s.mu.Unlock()
		s.runs.Wait()
		s.closeErr = s.d.Close()
	})
	return s.closeErr
}

// drainDeadline returns a channel that fires when the drain of a run must
// end: Close's context when Close stopped the run, else DrainTimeout after
// now, or Close's context if Close starts meanwhile, whichever ends first
// (Close's deadline bounds every drain, also one already under way). The
// returned func releases what the deadline holds.
func (s *Subscriber) drainDeadline(d time.Duration) (<-chan struct{}, func()) {
	s.mu.Lock()
	cctx := s.closeCtx
	s.mu.Unlock()
	if cctx != nil {
		return cctx.Done(), func() {}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	released := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-s.closing:
		case <-ctx.Done():
			return
		case <-released:
			return
		}
		s.mu.Lock()
		cctx := s.closeCtx
		s.mu.Unlock()
		select {
		case <-cctx.Done():
			cancel()
		case <-ctx.Done():
		case <-released:
		}
	}()
	return ctx.Done(), func() {
		close(released)
		<-watched
		cancel()
	}
}

// panicError is the error of a handler that panicked.
func panicError(v any) error {
	return message.Errorf(message.Unknown, "handle", "handler panicked: %v\n%s", v, debug.Stack())
}

// callHandler runs h and turns a panic into an error, so a handler's panic
// nacks its message and never kills the subscriber.
func callHandler(ctx context.Context, h Handler, m *message.Message) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panicError(v)
		}
	}()
	return h(ctx, m)
}
