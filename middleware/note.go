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
