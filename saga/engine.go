package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
)

// storeRetry is the redelivery delay of a message whose handling failed
// on the store (or lost a version race): soon, but not in a hot loop.
const storeRetry = 200 * time.Millisecond

// handle handles one message of the saga's topic: a run message, a
// command's reply or a timeout. It loads the saga, applies the message
// and runs the saga on as far as it can go without waiting.
func (s *Saga[D]) handle(ctx context.Context, m *message.Message) error {
	ctx = bus.ContextWithMessage(ctx, m) // commands sent here continue m's causation chain
	st, err := s.cfg.Store.Load(ctx, m.Key)
	if errors.Is(err, message.ErrNotFound) {
		s.log.Warn("polybus: saga: message for an unknown saga", append(message.LogArgs(m), "saga", s.def.Name)...)
		return nil
	}
	if err != nil {
		return message.RetryAfter(err, storeRetry)
	}
	if st.Status.Final() {
		return nil
	}
	dirty := false
	switch {
	case m.Metadata.Get(bus.KeyKind) == bus.KindReply:
		dirty = s.onReply(st, m)
	case m.Metadata.Get(keyOp) == opTimeout:
		dirty = s.onTimeout(st, m)
	}
	if err := s.advance(ctx, st, m, dirty); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return message.RetryAfter(err, storeRetry)
	}
	return nil
}

// phase returns the record of step i's action, or its compensation.
func phase(st *State, i int, undo bool) *Phase {
	if undo {
		return &st.Steps[i].Compensation
	}
	return &st.Steps[i].Action
}

func phaseName(undo bool) string {
	if undo {
		return phaseUndo
	}
	return phaseDo
}

// key is the idempotency key of step i's action or compensation.
func (s *Saga[D]) key(id string, i int, undo bool) string {
	return id + "/" + s.def.Steps[i].Name + "/" + phaseName(undo)
}

// onReply applies a command's reply to the phase that awaits it, and
// reports whether it changed st. A reply that no started or waiting phase
// awaits (a repeat, or one that came after a timeout) changes nothing.
func (s *Saga[D]) onReply(st *State, m *message.Message) bool {
	for i := range s.def.Steps {
		for _, undo := range []bool{false, true} {
			ph := phase(st, i, undo)
			if s.key(st.ID, i, undo) != m.Metadata.Get(bus.KeyReplyFor) || (ph.Outcome != Started && ph.Outcome != Waiting) {
				continue
			}
			if (st.Status == Compensating) != undo || st.Step != i {
				return false
			}
			if err := bus.ReplyError("saga: reply", m); err != nil {
				s.finish(st, i, undo, Failed, err)
			} else {
				s.finish(st, i, undo, Done, nil)
			}
			return true
		}
	}
	return false
}

// onTimeout applies a due timer to the phase it was set for, when that
// phase still waits.
func (s *Saga[D]) onTimeout(st *State, m *message.Message) bool {
	i, err := strconv.Atoi(m.Metadata.Get(keyStep))
	undo := m.Metadata.Get(keyPhase) == phaseUndo
	if err != nil || i < 0 || i >= len(st.Steps) || st.Step != i || (st.Status == Compensating) != undo {
		return false
	}
	ph := phase(st, i, undo)
	if ph.Outcome != Waiting {
		return false
	}
	s.finish(st, i, undo, TimedOut, fmt.Errorf("no reply within %s", ph.Deadline.Sub(ph.Started).Round(time.Millisecond)))
	return true
}

// finish records the outcome of step i's phase and moves the saga on:
// to the next step, to compensation (an action failed or timed out; a
// timed-out step is compensated too, since its command may have taken
// effect after all), or to Stuck (a compensation failed).
func (s *Saga[D]) finish(st *State, i int, undo bool, out Outcome, err error) {
	ph := phase(st, i, undo)
	ph.Outcome, ph.Ended = out, time.Now()
	if err != nil {
		ph.Error = err.Error()
	}
	name := s.def.Steps[i].Name
	switch {
	case out == Done && !undo:
		st.Step = i + 1
	case out == Done:
		st.Step = i - 1
	case !undo:
		st.Status = Compensating
		st.Error = fmt.Sprintf("step %s: %s: %s", name, out, ph.Error)
		st.Step = i - 1
		if out == TimedOut {
			st.Step = i
		} else {
			// A failed action left nothing to undo.
			st.Steps[i].Compensation.Outcome = Skipped
		}
	default:
		st.Status = Stuck
		st.Error += fmt.Sprintf("; compensating step %s: %s: %s", name, out, ph.Error)
	}
}

// advance runs the saga from its current step as far as it goes without
// waiting for a reply, saving after every change.
func (s *Saga[D]) advance(ctx context.Context, st *State, trigger *message.Message, dirty bool) error {
	for {
		switch {
		case st.Status == Running && st.Step >= len(s.def.Steps):
			st.Status, dirty = Completed, true
		case st.Status == Compensating && st.Step < 0:
			st.Status, dirty = Compensated, true
		}
		if st.Status.Final() {
			if dirty {
				return s.save(ctx, st)
			}
			return nil
		}
		i, undo := st.Step, st.Status == Compensating
		step := s.def.Steps[i]
		fn := step.Action
		if undo {
			fn = step.Compensate
		}
		ph := phase(st, i, undo)
		if ph.Outcome == Pending && fn == nil || undo && ph.Outcome == Pending && st.Steps[i].Action.Outcome != Done && st.Steps[i].Action.Outcome != TimedOut {
			if undo {
				ph.Outcome, st.Step = Skipped, i-1
			} else {
				s.finish(st, i, false, Done, nil)
			}
			dirty = true
			continue
		}
		switch ph.Outcome {
		case Waiting:
			if !ph.Deadline.IsZero() && !time.Now().Before(ph.Deadline) {
				// The timer was lost (or is late): the deadline is in
				// the state too.
				s.finish(st, i, undo, TimedOut, errors.New("deadline passed"))
				dirty = true
				continue
			}
			if dirty {
				return s.save(ctx, st)
			}
			return nil
		case Pending, Started:
			if dirty {
				// The last step's outcome is saved on its own, before
				// the next step starts.
				if err := s.save(ctx, st); err != nil {
					return err
				}
			}
			if err := s.run(ctx, st, i, undo, fn, trigger); err != nil {
				return err
			}
			dirty = false
		default:
			return message.Errorf(message.Unknown, "saga: advance", "saga %s: step %s's %s is %s", st.ID, step.Name, phaseName(undo), ph.Outcome)
		}
	}
}

// run runs step i's action or compensation: it saves Started (so a crash
// from here on is seen by the next run: Exec.Runs), calls fn under the
// retry middleware and the phase's deadline, and saves the outcome: Done,
// Waiting (a command was sent; a timer is set first when there is a
// deadline), Failed or TimedOut.
func (s *Saga[D]) run(ctx context.Context, st *State, i int, undo bool, fn func(context.Context, *Exec[D]) error, trigger *message.Message) error {
	ph := phase(st, i, undo)
	step := s.def.Steps[i]
	now := time.Now()
	timeout := step.Timeout
	if timeout == 0 {
		timeout = s.cfg.StepTimeout
	}
	if ph.Deadline.IsZero() && timeout > 0 {
		ph.Deadline = now.Add(timeout)
	}
	if !ph.Deadline.IsZero() && !now.Before(ph.Deadline) {
		s.finish(st, i, undo, TimedOut, errors.New("deadline passed before the run"))
		return s.save(ctx, st)
	}
	ph.Outcome = Started
	ph.Runs++
	if ph.Started.IsZero() {
		ph.Started = now
	}
	if err := s.save(ctx, st); err != nil {
		return err
	}
	var data D
	if err := json.Unmarshal(st.Data, &data); err != nil {
		s.finish(st, i, undo, Failed, fmt.Errorf("decoding the saga's data: %w", err))
		return s.save(ctx, st)
	}
	x := &Exec[D]{SagaID: st.ID, Step: step.Name, Compensating: undo, IdempotencyKey: s.key(st.ID, i, undo),
		Runs: ph.Runs, Data: &data, replyTo: s.topic}
	actx, cancel := ctx, context.CancelFunc(func() {})
	if !ph.Deadline.IsZero() {
		actx, cancel = context.WithDeadline(ctx, ph.Deadline)
	}
	err := s.retry(func(ctx context.Context, _ *message.Message) (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = message.PermanentError(fmt.Errorf("panic: %v", v))
			}
		}()
		x.Attempt++
		x.awaited = false
		return fn(ctx, x)
	})(actx, trigger)
	timedOut := actx.Err() != nil
	cancel()
	ph.Attempts = x.Attempt
	if ctx.Err() != nil {
		// The subscription is stopping: the phase stays Started, and runs
		// again (Runs+1) when the message comes back.
		return ctx.Err()
	}
	if err == nil {
		raw, merr := json.Marshal(data)
		if merr != nil {
			err = message.PermanentError(fmt.Errorf("encoding the saga's data: %w", merr))
		} else {
			st.Data = raw
		}
	}
	var ex *middleware.ExhaustedError
	switch {
	case err == nil && x.awaited:
		if !ph.Deadline.IsZero() {
			if err := s.setTimer(ctx, st.ID, i, undo, ph); err != nil {
				return err
			}
		}
		ph.Outcome = Waiting
	case err == nil:
		s.finish(st, i, undo, Done, nil)
	case timedOut:
		s.finish(st, i, undo, TimedOut, err)
	case errors.As(err, &ex):
		s.finish(st, i, undo, Failed, fmt.Errorf("after %d attempts: %w", ex.Attempts, ex.Err))
	default:
		s.finish(st, i, undo, Failed, unmark(err))
	}
	return s.save(ctx, st)
}

// unmark drops the "permanent: " that message.PermanentError adds to the
// text: a failed phase is permanent by definition.
func unmark(err error) error {
	if message.IsPermanent(err) {
		if u := errors.Unwrap(err); u != nil && strings.HasPrefix(err.Error(), "permanent: ") {
			return u
		}
	}
	return err
}

// setTimer publishes the timer of a waiting phase: due at its deadline,
// on the timer topic, keyed by its own ID so that timers never hold each
// other up on brokers that hold a nacked message's key.
func (s *Saga[D]) setTimer(ctx context.Context, id string, i int, undo bool, ph *Phase) error {
	tid := s.key(id, i, undo) + ".timer." + strconv.Itoa(ph.Runs)
	return s.pub.Publish(ctx, s.timer, &message.Message{ID: tid, Key: tid, Metadata: message.Metadata{
		keyOp: opTimer, keySagaID: id, keyStep: strconv.Itoa(i), keyPhase: phaseName(undo),
		keyDue: strconv.FormatInt(ph.Deadline.UnixMilli(), 10), message.KeyCorrelationID: id}})
}

// save writes st and reports it to Config.OnSave.
func (s *Saga[D]) save(ctx context.Context, st *State) error {
	st.Updated = time.Now()
	if err := s.cfg.Store.Save(ctx, st); err != nil {
		return err
	}
	s.saved(st)
	return nil
}
