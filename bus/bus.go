package bus

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
)

// Metadata keys that the buses set, under message.MetadataPrefix.
const (
	// KeyType is the message's type name (TypeName).
	KeyType = message.KeyType
	// KeyKind is "event", "command", "query" or "reply".
	KeyKind = message.MetadataPrefix + "kind"
	// KeyContentType is the codec's content type.
	KeyContentType = message.MetadataPrefix + "content-type"
	// KeyReplyTo is the topic that the reply to a query, or the outcome
	// of a command, is published to.
	KeyReplyTo = message.MetadataPrefix + "reply-to"
	// KeyReplyFor is, on a reply, the ID of the query or command that it
	// answers: the correlation ID of a request and its reply.
	KeyReplyFor = message.MetadataPrefix + "reply-for"
	// KeyOutcome is, on a reply, "ok" or "error".
	KeyOutcome = message.MetadataPrefix + "outcome"
	// KeyError is, on an "error" reply, the handler's error text.
	KeyError = message.MetadataPrefix + "error"
	// KeyErrorCode is, on an "error" reply, the handler error's
	// message.Code as a decimal number.
	KeyErrorCode = message.MetadataPrefix + "error-code"
	// KeyCausationChain lists, comma-separated and oldest first, the IDs
	// of the messages that led to this one, its direct cause
	// (message.KeyCausationID) last; at most MaxCausationChain IDs, the
	// oldest dropped first.
	KeyCausationChain = message.MetadataPrefix + "causation-chain"
)

// MaxCausationChain bounds KeyCausationChain.
const MaxCausationChain = 32

// The kinds of message, the values of KeyKind.
const (
	KindEvent   = "event"
	KindCommand = "command"
	KindQuery   = "query"
	KindReply   = "reply"
)

// Options configures a Bus. The zero value is valid except for Service,
// which command and query handlers need.
type Options struct {
	// Service names this process's service in the command registry
	// (Registry). Required to handle commands. Letters, digits, '_', '-'
	// and inner dots.
	Service string
	// Prefix is put before every topic name the bus uses. Default "".
	// Same alphabet as Service, plus a trailing dot.
	Prefix string
	// Codec encodes payloads. Default JSON.
	Codec Codec
	// Registry records which service handles each command type, so that
	// Send can refuse a command that no service ever registered for. Nil
	// leaves that to the broker: see the package documentation.
	Registry Registry
	// QueryTimeout bounds an Ask whose context has no earlier deadline.
	// Default 10s.
	QueryTimeout time.Duration
	// InstanceID names this Bus's reply topic (Prefix+"reply."+InstanceID)
	// and its group. Default a fresh random ID; set a stable one (such as
	// the host name) so that a restarted process reuses its reply topic
	// rather than leaving one behind on the broker.
	InstanceID string
	// Subscribe holds options for every handler subscription (such as
	// subscriber.Concurrency). The bus sets the group itself.
	Subscribe []subscriber.Option
	// Middleware wraps every handler, inside the bus's own Correlation;
	// the first is the outermost. Put middleware.Retry here for
	// in-process retries of command handlers.
	Middleware []subscriber.Middleware
	// Logger receives the bus's own events (a reply that could not be
	// published). Default slog.Default().
	Logger *slog.Logger
	// Validate, when set, checks every event, command and query that
	// Publish, Send and Ask build, before it is published; an error fails
	// the call with InvalidArgument and nothing is sent. Use
	// (*schema.Registry).ValidateMessage to validate against JSON Schemas
	// (the message's type is in KeyType; give its version with
	// WithHeader(message.KeySchemaVersion, "2")). Default nil.
	Validate func(*message.Message) error
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$`)

// Bus carries typed events, commands and queries over one polybus client.
// Register handlers (Subscribe, HandleCommand, HandleQuery), then Start;
// publish (Publish, Send, Ask) at any time. Close stops it. A Bus is safe
// for concurrent use.
type Bus struct {
	c     *polybus.Client
	pub   *publisher.Publisher
	sub   *subscriber.Subscriber
	opts  Options
	log   *slog.Logger
	corr  subscriber.Middleware
	group string // the reply subscription's group
	ctype string // the codec's content type

	mu       sync.Mutex
	handlers []*registration
	seen     map[string]bool // kind/type/group already registered
	started  bool
	closed   bool
	stop     context.CancelFunc
	wg       sync.WaitGroup
	errs     []error
	known    map[string]bool // command types found in the registry
	replies  *replies
	stopOnce sync.Once
}

// registration is one handler subscription.
type registration struct {
	kind, typ, topic, group string
	h                       subscriber.Handler
}

// New returns a Bus over c. It opens nothing: handler subscriptions start
// with Start, the reply subscription with the first Ask. Errors:
// InvalidArgument for a nil client or a bad option.
func New(c *polybus.Client, opts Options) (*Bus, error) {
	const op = "bus: new"
	if c == nil {
		return nil, message.Errorf(message.InvalidArgument, op, "nil client")
	}
	if opts.Service != "" && !nameRE.MatchString(opts.Service) {
		return nil, message.Errorf(message.InvalidArgument, op, "service %q: want letters, digits, '_', '-' and inner dots", opts.Service)
	}
	if opts.Prefix != "" && !nameRE.MatchString(strings.TrimSuffix(opts.Prefix, ".")) {
		return nil, message.Errorf(message.InvalidArgument, op, "prefix %q: want letters, digits, '_', '-' and dots", opts.Prefix)
	}
	if opts.QueryTimeout < 0 {
		return nil, message.Errorf(message.InvalidArgument, op, "negative query timeout")
	}
	if opts.QueryTimeout == 0 {
		opts.QueryTimeout = 10 * time.Second
	}
	if opts.Codec == nil {
		opts.Codec = JSON
	}
	if opts.InstanceID == "" {
		opts.InstanceID = message.NewID()
	}
	if !nameRE.MatchString(opts.InstanceID) {
		return nil, message.Errorf(message.InvalidArgument, op, "instance ID %q: want letters, digits, '_', '-' and inner dots", opts.InstanceID)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	corr, _ := middleware.Correlation(middleware.CorrelationConfig{})
	return &Bus{c: c, pub: c.Publisher(), sub: c.Subscriber(), opts: opts, log: log, corr: corr,
		group: "reply-" + opts.InstanceID, ctype: contentType(opts.Codec), seen: map[string]bool{}, known: map[string]bool{}}, nil
}

// Topic returns the topic that messages of kind ("event", "command" or
// "query") and type typ travel on: Prefix+kind+"."+typ.
func (b *Bus) Topic(kind, typ string) string { return b.opts.Prefix + kind + "." + typ }

// ReplyTopic returns this Bus's reply topic.
func (b *Bus) ReplyTopic() string { return b.opts.Prefix + "reply." + b.opts.InstanceID }

// Client returns the client the bus runs on.
func (b *Bus) Client() *polybus.Client { return b.c }

// Codec returns the bus's codec.
func (b *Bus) Codec() Codec { return b.opts.Codec }

// register adds a handler subscription, refusing a second one for the
// same kind, type and group.
func (b *Bus) register(r *registration) error {
	op := "bus: register " + r.kind
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return message.Errorf(message.Closed, op, "bus is closed")
	case b.started:
		return message.Errorf(message.InvalidArgument, op, "bus is started: register handlers before Start")
	}
	id := r.kind + "/" + r.typ + "/" + r.group
	if b.seen[id] {
		if r.kind == KindEvent {
			return message.Errorf(message.InvalidArgument, op, "a second handler for event %s in group %q", r.typ, r.group)
		}
		return message.Errorf(message.InvalidArgument, op, "a second handler for %s %s in service %q: a %s has exactly one handler", r.kind, r.typ, b.opts.Service, r.kind)
	}
	b.seen[id] = true
	b.handlers = append(b.handlers, r)
	return nil
}

// Start records this service's command types in the Registry and starts
// one subscription per registered handler. Subscriptions run until Close.
// Errors: Conflict when the Registry has another service for one of this
// service's command types; the Registry's errors; InvalidArgument on a
// second Start; Closed after Close.
func (b *Bus) Start(ctx context.Context) error {
	const op = "bus: start"
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return message.Errorf(message.Closed, op, "bus is closed")
	case b.started:
		b.mu.Unlock()
		return message.Errorf(message.InvalidArgument, op, "bus already started")
	}
	b.started = true
	handlers := append([]*registration(nil), b.handlers...)
	b.mu.Unlock()
	if b.opts.Registry != nil {
		for _, r := range handlers {
			if r.kind == KindCommand {
				if err := b.opts.Registry.Register(ctx, r.typ, b.opts.Service); err != nil {
					b.mu.Lock()
					b.started = false // nothing runs yet: Start may be called again
					b.mu.Unlock()
					return err
				}
			}
		}
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	b.mu.Lock()
	b.stop = stop
	for _, r := range handlers {
		opts := append(append([]subscriber.Option(nil), b.opts.Subscribe...), subscriber.Group(r.group))
		h := subscriber.Chain(append([]subscriber.Middleware{b.corr}, b.opts.Middleware...)...)(r.h)
		b.spawn(runCtx, r.topic, h, opts)
	}
	b.mu.Unlock()
	return nil
}

// spawn runs one Subscribe call until runCtx ends; b.mu is held.
func (b *Bus) spawn(runCtx context.Context, topic string, h subscriber.Handler, opts []subscriber.Option) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if err := b.sub.Subscribe(runCtx, topic, h, opts...); err != nil && runCtx.Err() == nil {
			b.log.Error("polybus: bus: subscription ended", "topic", topic, "err", err)
			b.mu.Lock()
			b.errs = append(b.errs, err)
			b.mu.Unlock()
		}
	}()
}

// Close stops every subscription of the bus (handlers and replies),
// waits for their in-flight handlers and returns the errors that ended
// any subscription early. It does not close the client. Calls after
// Close fail with Closed. Close is idempotent.
func (b *Bus) Close(ctx context.Context) error {
	b.stopOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		stop := b.stop
		r := b.replies
		b.mu.Unlock()
		if stop != nil {
			stop()
		}
		if r != nil {
			r.close()
		}
	})
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return errors.Join(b.errs...)
}

func (b *Bus) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}
