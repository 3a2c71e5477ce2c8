package saga

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
)

// Step is one step of a saga: an action and the compensation that undoes
// it.
type Step[D any] struct {
	// Name names the step in the state and in idempotency keys; unique in
	// its Definition. Letters, digits, '_', '-' and inner dots.
	Name string
	// Action does the step. It either finishes the work itself (nil: the
	// step is done) or sends one command with Exec.AwaitReply (nil: the
	// step is done when the reply comes). A permanent error
	// (message.PermanentError) fails the step at once; other errors are
	// retried (Config.Retry) and fail the step when the retries run out.
	// Nil: the step has only a compensation (the step is done at once).
	Action func(ctx context.Context, x *Exec[D]) error
	// Compensate undoes Action, in the same way (finishing itself or
	// awaiting a reply). Nil: nothing to undo.
	Compensate func(ctx context.Context, x *Exec[D]) error
	// Timeout bounds an action or compensation, from its first start to
	// its reply: ctx's deadline while it runs, and a timer message while
	// it waits. Passing it fails the phase (TimedOut). Default
	// Config.StepTimeout; 0 with no default is no bound.
	Timeout time.Duration
}

// Definition is a saga: its name and steps, run in order.
type Definition[D any] struct {
	// Name names the saga type: its topics and its rows in the store.
	// Letters, digits, '_', '-' and inner dots.
	Name  string
	Steps []Step[D]
}

// Exec is what an action or compensation gets: who it is, the saga's
// data, and how to send a command whose reply finishes it.
type Exec[D any] struct {
	// SagaID is the saga instance.
	SagaID string
	// Step is the step's name.
	Step string
	// Compensating is true in a compensation.
	Compensating bool
	// IdempotencyKey is the same for every run of this phase of this step
	// of this saga, and for no other: SagaID/Step/action (or
	// /compensate). It is the ID of the command that AwaitReply sends, so
	// a handler (or the broker's duplicate window) can tell a repeat.
	IdempotencyKey string
	// Runs is 1 on the first run of this phase; more means an earlier run
	// started and its outcome was never recorded (the process died, or
	// the orchestrator's message was redelivered): the earlier run may
	// have taken effect. Act on IdempotencyKey accordingly.
	Runs int
	// Attempt counts the calls within this run: 1, then one more per
	// retry.
	Attempt int
	// Data is the saga's data. Changes are saved when the phase
	// succeeds.
	Data *D

	replyTo string
	awaited bool
}

// AwaitReply returns the bus.PublishOptions for the one command that the
// phase sends: ID = IdempotencyKey, Key = SagaID, the saga ID as the
// correlation ID, and a reply to the orchestrator. The phase then ends
// when the command's handler replies (bus.HandleCommand does, see
// bus.WithReplyTo): "ok" is done, "error" is failed.
//
//	return bus.Send(ctx, b, ChargePayment{...}, x.AwaitReply()...)
func (x *Exec[D]) AwaitReply() []bus.PublishOption {
	x.awaited = true
	return []bus.PublishOption{bus.WithID(x.IdempotencyKey), bus.WithKey(x.SagaID),
		bus.WithHeader(message.KeyCorrelationID, x.SagaID), bus.WithReplyTo(x.replyTo)}
}

// Config configures a Saga.
type Config struct {
	// Bus carries the saga's own messages (on its client, under its
	// Prefix: Prefix+"saga."+Name and Prefix+"saga."+Name+".timers").
	// Required.
	Bus *bus.Bus
	// Store keeps the saga states. Required.
	Store *Store
	// Retry is the in-process retry of an action or compensation that
	// fails with a transient error (middleware.Retry in InProcess mode;
	// its Mode is ignored). Default MaxAttempts 3, InitialInterval 100ms.
	Retry middleware.RetryConfig
	// StepTimeout is the Timeout of a step that sets none. Default 0.
	StepTimeout time.Duration
	// Subscribe holds options for the saga's subscriptions (such as
	// subscriber.Concurrency); the group is the saga's.
	Subscribe []subscriber.Option
	// OnSave, when set, is called after every saved change of a saga,
	// with a copy of its state: for metrics, logs and tests.
	OnSave func(State)
	// Logger receives the orchestrator's events. Default slog.Default().
	Logger *slog.Logger
}

// Saga orchestrates the instances of one Definition: Start begins one,
// Run handles their messages. Several processes may Run one saga: its
// messages are keyed by saga ID, so one handler call at a time touches
// an instance, and every save expects the version it read.
type Saga[D any] struct {
	def   Definition[D]
	cfg   Config
	pub   *publisher.Publisher
	sub   *subscriber.Subscriber
	retry subscriber.Middleware
	corr  subscriber.Middleware
	topic string
	timer string
	log   *slog.Logger
	// maxDelay is the longest nack delay the broker takes (0: no limit).
	maxDelay time.Duration
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$`)

// New returns the orchestrator of def. Errors: InvalidArgument for a
// missing Bus or Store, a bad name, no steps, a duplicate step name, a
// step with neither action nor compensation, a negative timeout or a bad
// Retry.
func New[D any](def Definition[D], cfg Config) (*Saga[D], error) {
	const op = "saga: new"
	bad := func(format string, args ...any) (*Saga[D], error) {
		return nil, message.Errorf(message.InvalidArgument, op, format, args...)
	}
	switch {
	case cfg.Bus == nil || cfg.Store == nil:
		return bad("Config.Bus and Config.Store are required")
	case !nameRE.MatchString(def.Name) || len(def.Name) > 100:
		return bad("saga name %q: want letters, digits, '_', '-' and inner dots, at most 100", def.Name)
	case len(def.Steps) == 0:
		return bad("saga %s has no steps", def.Name)
	case cfg.StepTimeout < 0:
		return bad("negative step timeout")
	}
	names := map[string]bool{}
	for i, s := range def.Steps {
		switch {
		case !nameRE.MatchString(s.Name) || len(s.Name) > 100:
			return bad("step %d name %q: want letters, digits, '_', '-' and inner dots, at most 100", i, s.Name)
		case names[s.Name]:
			return bad("two steps named %q", s.Name)
		case s.Action == nil && s.Compensate == nil:
			return bad("step %q has neither action nor compensation", s.Name)
		case s.Timeout < 0:
			return bad("step %q: negative timeout", s.Name)
		}
		names[s.Name] = true
	}
	rc := cfg.Retry
	rc.Mode = middleware.InProcess
	if rc.MaxAttempts == 0 {
		rc.MaxAttempts = 3
	}
	retry, err := middleware.Retry(rc)
	if err != nil {
		return nil, err
	}
	corr, _ := middleware.Correlation(middleware.CorrelationConfig{})
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	c := cfg.Bus.Client()
	topic := cfg.Bus.Topic("saga", def.Name)
	return &Saga[D]{def: def, cfg: cfg, pub: c.Publisher(), sub: c.Subscriber(), retry: retry, corr: corr,
		topic: topic, timer: topic + ".timers", log: log, maxDelay: c.Capabilities().MaxNackDelay}, nil
}

// Name returns the saga's name.
func (s *Saga[D]) Name() string { return s.def.Name }

// Topic returns the topic of the saga's messages (starts, replies,
// timeouts), keyed by saga ID.
func (s *Saga[D]) Topic() string { return s.topic }

// Metadata keys of the saga's own messages.
const (
	keyOp      = message.MetadataPrefix + "saga-op"
	keyStep    = message.MetadataPrefix + "saga-step"
	keyPhase   = message.MetadataPrefix + "saga-phase"
	keyDue     = message.MetadataPrefix + "saga-due"
	keySagaID  = message.MetadataPrefix + "saga-id"
	opRun      = "run"
	opTimer    = "timer"
	opTimeout  = "timeout"
	phaseDo    = "action"
	phaseUndo  = "compensate"
	sagaIDMax  = 200
	groupAffix = "saga."
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:-]*$`)

// Start begins the saga id with data: it records the saga (Running, at
// its first step) and publishes the message that runs it. Start is
// idempotent: for an existing saga of this Definition it publishes the
// run message again and changes nothing else (the data of the first Start
// stays). Errors: InvalidArgument for a bad id (letters, digits, '_', '.',
// ':' and '-', at most 200) or data that does not encode; Conflict when id
// belongs to a saga of another Definition; the store's and publisher's
// errors.
func (s *Saga[D]) Start(ctx context.Context, id string, data D) error {
	const op = "saga: start"
	if len(id) > sagaIDMax || !idRE.MatchString(id) {
		return message.Errorf(message.InvalidArgument, op, "saga ID %q: want letters, digits, '_', '.', ':' and '-', at most %d", id, sagaIDMax)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return message.Errorf(message.InvalidArgument, op, "encoding the data of saga %s: %w", id, err)
	}
	now := time.Now()
	st := &State{ID: id, Name: s.def.Name, Status: Running, Data: raw, Created: now, Updated: now}
	for _, step := range s.def.Steps {
		st.Steps = append(st.Steps, StepState{Name: step.Name, Action: Phase{Outcome: Pending}, Compensation: Phase{Outcome: Pending}})
	}
	created, err := s.cfg.Store.Create(ctx, st)
	if err != nil {
		return err
	}
	if !created {
		old, err := s.cfg.Store.Load(ctx, id)
		if err != nil {
			return err
		}
		if old.Name != s.def.Name {
			return message.Errorf(message.Conflict, op, "saga %s is a %s, not a %s", id, old.Name, s.def.Name)
		}
	} else {
		s.saved(st)
	}
	return s.kick(ctx, id, id+"/start")
}

// kick publishes a run message for saga id.
func (s *Saga[D]) kick(ctx context.Context, id, msgID string) error {
	return s.pub.Publish(ctx, s.topic, &message.Message{ID: msgID, Key: id, Metadata: message.Metadata{
		keyOp: opRun, message.KeyCorrelationID: id}})
}

// Run handles the saga's messages until ctx ends: it first publishes a
// run message for every saga of this Definition that is not final (so
// that one whose last message was lost with a crashed process goes on),
// then subscribes to the saga's topic and its timer topic. It returns nil
// when ctx ends, or the first error of a subscription.
func (s *Saga[D]) Run(ctx context.Context) error {
	for _, status := range []Status{Running, Compensating} {
		sts, err := s.cfg.Store.List(ctx, Filter{Name: s.def.Name, Status: status})
		if err != nil {
			return err
		}
		for _, st := range sts {
			if err := s.kick(ctx, st.ID, message.NewID()); err != nil {
				return err
			}
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := append(slices.Clone(s.cfg.Subscribe), subscriber.Group(groupAffix+s.def.Name))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, sub := range []struct {
		topic string
		h     subscriber.Handler
	}{{s.topic, s.corr(s.handle)}, {s.timer, s.handleTimer}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.sub.Subscribe(rctx, sub.topic, sub.h, opts...); err != nil {
				errs[i] = err
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// handleTimer handles a timer: not due yet, it is nacked until it is (in
// steps of at most the broker's longest nack delay); due, it becomes a
// timeout message on the saga's topic, where the saga's other messages
// are, so that it is handled in turn with them.
func (s *Saga[D]) handleTimer(ctx context.Context, m *message.Message) error {
	ms, err := strconv.ParseInt(m.Metadata.Get(keyDue), 10, 64)
	if err != nil {
		return message.PermanentError(message.Errorf(message.InvalidArgument, "saga: timer", "timer %s has no due time", m.ID))
	}
	if wait := time.Until(time.UnixMilli(ms)); wait > 0 {
		if s.maxDelay > 0 && wait > s.maxDelay {
			wait = s.maxDelay
		}
		return message.RetryAfter(errors.New("saga: timer not due"), wait)
	}
	md := m.Metadata.Clone()
	md[keyOp] = opTimeout
	return s.pub.Publish(ctx, s.topic, &message.Message{ID: m.ID + ".due", Key: m.Metadata.Get(keySagaID), Metadata: md})
}

// saved reports a saved state to Config.OnSave.
func (s *Saga[D]) saved(st *State) {
	if s.cfg.OnSave != nil {
		c := *st
		c.Steps = slices.Clone(st.Steps)
		s.cfg.OnSave(c)
	}
}
