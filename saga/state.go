package saga

import (
	"encoding/json"
	"time"
)

// Status is where a saga is.
type Status string

// The statuses of a saga. Completed, Compensated and Stuck are final.
const (
	// Running: actions are being run, in order.
	Running Status = "running"
	// Compensating: an action failed or timed out; the compensations of
	// the steps before it (and of a timed-out step itself) are being
	// run, in reverse order.
	Compensating Status = "compensating"
	// Completed: every action succeeded.
	Completed Status = "completed"
	// Compensated: an action failed and every compensation needed
	// succeeded.
	Compensated Status = "compensated"
	// Stuck: a compensation failed (after its retries) or timed out. The
	// saga stops; State.Error says why. A person must look.
	Stuck Status = "stuck"
)

// Final reports whether s is a final status.
func (s Status) Final() bool { return s == Completed || s == Compensated || s == Stuck }

// Outcome is where an action or a compensation of one step is.
type Outcome string

// The outcomes of an action or compensation.
const (
	// Pending: not started.
	Pending Outcome = "pending"
	// Started: called and not finished. Persisted before every call, so
	// after a crash the call is known to have started (Exec.Runs > 1 on
	// the next).
	Started Outcome = "started"
	// Waiting: it sent a command (Exec.AwaitReply) and waits for the
	// reply, or for its deadline.
	Waiting Outcome = "waiting"
	// Done: succeeded.
	Done Outcome = "done"
	// Failed: returned a permanent error or failed on every retry.
	Failed Outcome = "failed"
	// TimedOut: its deadline (Step.Timeout) passed first.
	TimedOut Outcome = "timed-out"
	// Skipped: a compensation that was not needed (the step has none, or
	// its action never took effect).
	Skipped Outcome = "skipped"
)

// Phase is the record of one action or compensation.
type Phase struct {
	Outcome Outcome `json:"outcome"`
	// Runs counts the calls started, across crashes and redeliveries;
	// in-process retries within one run count in Attempts.
	Runs int `json:"runs,omitempty"`
	// Attempts is the number of calls of the last run (retries).
	Attempts int `json:"attempts,omitempty"`
	// Error is the failure, for Failed and TimedOut.
	Error string `json:"error,omitempty"`
	// Started, Ended and Deadline are zero until known.
	Started  time.Time `json:"started,omitzero"`
	Ended    time.Time `json:"ended,omitzero"`
	Deadline time.Time `json:"deadline,omitzero"`
}

// StepState is the record of one step.
type StepState struct {
	Name         string `json:"name"`
	Action       Phase  `json:"action"`
	Compensation Phase  `json:"compensation"`
}

// State is a saga as its store keeps it: written after every change of
// any of its phases.
type State struct {
	// ID names the saga instance (such as the order ID).
	ID string
	// Name is its Definition's name.
	Name   string
	Status Status
	// Step is the index of the step being run (Running) or compensated
	// (Compensating): len(Steps) once completed, -1 once compensated.
	Step int
	// Data is the saga's data (the Definition's D), as JSON.
	Data  json.RawMessage
	Steps []StepState
	// Error is the failure that started compensation, and for a stuck
	// saga also the compensation's.
	Error   string
	Created time.Time
	Updated time.Time
	// Version counts the saves; a save expects the version it loaded.
	Version int64
}
