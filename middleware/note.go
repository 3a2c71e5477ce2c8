package middleware

import (
	"context"
	"time"
)

// note is what the middlewares of this package tell each other about one
// handler call, through its context: Retry records how many calls it made
// and when the first one failed, so that DLQ can stamp them on a dead
// letter; DLQ records that it dead-lettered the message, so that Logging,
// which runs outside it, can say so. The outermost of them installs it.
//
// A note is written only by the goroutine running the handler chain, so it
// needs no lock.
type note struct {
	// attempts is the number of handler calls that Retry counted: calls in
	// this delivery (in-process mode) or the delivery attempt (redelivery
	// mode). 0 when no Retry ran.
	attempts int
	// firstFailure is when Retry saw the message fail first; zero when
	// unknown.
	firstFailure time.Time
	// deadLetter is the DLQ reason when the message was dead-lettered.
	deadLetter string
	// dlqTopic is the topic it was dead-lettered to.
	dlqTopic string
	// dlqCause is the handler error that got the message dead-lettered.
	dlqCause error
	// dlqErr is the failure of a dead-letter publish.
	dlqErr error
	// retries is how many retries Retry made: handler calls after the
	// first (in-process mode), or the redelivery it asked for (redelivery
	// mode).
	retries int
	// duplicate is set when Dedupe or Ordering acked the message as one
	// already handled, without calling the handler.
	duplicate bool
}

// Report is what this package's middlewares did with one handler call, for
// an observer outside them (package telemetry's metrics and spans).
type Report struct {
	// Attempts is the attempt number that Retry counted when the message
	// failed (see Logging's calls attribute); 0 when no Retry ran or
	// nothing failed.
	Attempts int
	// Retries is how many retries Retry made in this call: the handler
	// calls after the first (InProcess mode), or 1 when it nacked the
	// message for a redelivery (Redelivery mode).
	Retries int
	// DeadLetter is the DLQ reason (ReasonPermanent, ReasonMaxAttempts)
	// when DLQ dead-lettered the message, and DLQTopic where to.
	DeadLetter string
	DLQTopic   string
	// DLQError is the failure of a dead-letter publish, if one failed.
	DLQError error
	// Duplicate reports that Dedupe or Ordering acked the message as
	// already handled, without calling the handler.
	Duplicate bool
}

// Tracker reads the Report of one handler call; see Track.
type Tracker struct{ n *note }

// Report returns what the middlewares inside Track's context did so far:
// read it after the handler chain returned.
func (t Tracker) Report() Report {
	n := t.n
	return Report{
		Attempts: n.attempts, Retries: n.retries,
		DeadLetter: n.deadLetter, DLQTopic: n.dlqTopic, DLQError: n.dlqErr,
		Duplicate: n.duplicate,
	}
}

// Track returns ctx carrying the note that this package's middlewares
// write about the call (installing one when ctx has none: one allocation)
// and a Tracker that reads it. Call it in a middleware placed outside
// them, pass the context on, and read Tracker.Report when the chain
// returns. The deferral of a message is its error (IsDeferred), not part
// of the Report.
func Track(ctx context.Context) (context.Context, Tracker) {
	ctx, n := withNote(ctx)
	return ctx, Tracker{n}
}

type noteKey struct{}

// valueCtx does what context.WithValue does, in one allocation instead of
// two: the value lives inside the context, and Value returns a pointer to
// it for a key of type K (an empty struct type, so the type alone is the
// key). The context package still finds the cancelable parent through
// Value, so deriving contexts from it (a handler's WithTimeout) starts
// no goroutine. Notes and CorrelationInfo travel this way.
type valueCtx[K comparable, V any] struct {
	context.Context
	val V
}

func (c *valueCtx[K, V]) Value(key any) any {
	if _, ok := key.(K); ok {
		return &c.val
	}
	return c.Context.Value(key)
}

// withNote returns ctx carrying a note, installing a new one when ctx has
// none.
func withNote(ctx context.Context) (context.Context, *note) {
	if n := noteFrom(ctx); n != nil {
		return ctx, n
	}
	c := &valueCtx[noteKey, note]{Context: ctx}
	return c, &c.val
}

// noteFrom returns ctx's note, or nil.
func noteFrom(ctx context.Context) *note {
	n, _ := ctx.Value(noteKey{}).(*note)
	return n
}
