package message

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Code classifies an error. The set is small and frozen: adapters map their
// broker's errors onto it, and callers branch on it with [CodeOf] or with
// errors.Is against the sentinel of each code.
type Code int

// The error codes. Their zero value, OK, is never the code of a non-nil error.
const (
	// OK is the code of a nil error.
	OK Code = iota
	// Unknown is an error that no adapter classified.
	Unknown
	// InvalidArgument is a caller mistake: empty topic, nil message,
	// malformed URL, unknown option, bad configuration.
	InvalidArgument
	// NotFound is a topic, queue, stream or group that does not exist.
	NotFound
	// TooLarge is a message over the broker's (declared) size limit.
	TooLarge
	// Closed is a call on a publisher, subscriber or client after Close.
	Closed
	// Unavailable is a transient failure: broker unreachable, connection
	// lost, leader moving, back-pressure. Retrying may succeed.
	Unavailable
	// Permanent is a failure that retrying cannot fix, such as a poison
	// message. Middleware dead-letters it instead of retrying.
	Permanent
	// Unimplemented is a capability the broker or adapter does not offer.
	Unimplemented
	// PermissionDenied is an authentication or authorisation failure.
	PermissionDenied
	// ResourceExhausted is a full buffer or quota that did not drain in time.
	ResourceExhausted
	// Conflict is an optimistic-concurrency failure: the state changed
	// since it was read (an event stream's expected version did not
	// hold). Reloading and retrying may succeed; retrying blindly cannot.
	Conflict
)

var codeNames = [...]string{
	OK:                "ok",
	Unknown:           "unknown",
	InvalidArgument:   "invalid argument",
	NotFound:          "not found",
	TooLarge:          "too large",
	Closed:            "closed",
	Unavailable:       "unavailable",
	Permanent:         "permanent",
	Unimplemented:     "unimplemented",
	PermissionDenied:  "permission denied",
	ResourceExhausted: "resource exhausted",
	Conflict:          "conflict",
}

// String returns the code's name, as used in error texts.
func (c Code) String() string {
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", int(c))
}

// Sentinels, one per code, for errors.Is. Every *Error of a code matches the
// sentinel of that code: errors.Is(err, message.ErrClosed).
var (
	ErrUnknown           = &Error{Code: Unknown}
	ErrInvalidArgument   = &Error{Code: InvalidArgument}
	ErrNotFound          = &Error{Code: NotFound}
	ErrTooLarge          = &Error{Code: TooLarge}
	ErrClosed            = &Error{Code: Closed}
	ErrUnavailable       = &Error{Code: Unavailable}
	ErrPermanent         = &Error{Code: Permanent}
	ErrUnimplemented     = &Error{Code: Unimplemented}
	ErrPermissionDenied  = &Error{Code: PermissionDenied}
	ErrResourceExhausted = &Error{Code: ResourceExhausted}
	ErrConflict          = &Error{Code: Conflict}
)

// Error is a polybus error: a code, the operation that failed, a message and
// the underlying (often the broker's own) error, which stays reachable with
// errors.As and errors.Unwrap.
type Error struct {
	Code Code
	// Op names the failing operation, such as "publish" or "kafka: open".
	Op string
	// Msg says what went wrong, for people.
	Msg string
	// Err is the cause, possibly nil.
	Err error
}

// Errorf returns an *Error with the given code and a formatted message. A
// %w verb in format sets the cause.
func Errorf(code Code, op, format string, args ...any) *Error {
	wrapped := fmt.Errorf(format, args...)
	return &Error{Code: code, Op: op, Msg: wrapped.Error(), Err: errors.Unwrap(wrapped)}
}

// Wrap returns an *Error with the given code around err. It returns nil for
// a nil err, and err unchanged when it is a context error, which polybus
// never re-wraps.
func Wrap(code Code, op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &Error{Code: code, Op: op, Err: err}
}

func (e *Error) Error() string {
	s := "polybus"
	if e.Op != "" {
		s += ": " + e.Op
	}
	s += ": " + e.Code.String()
	switch {
	case e.Msg != "":
		s += ": " + e.Msg
	case e.Err != nil:
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is the sentinel of e's code (or an *Error with
// the same code and no other fields set).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return t.Code == e.Code && t.Op == "" && t.Msg == "" && t.Err == nil
}

// CodeOf returns the code of err: OK for nil, the code of the outermost
// *Error in its chain, Permanent for an error marked by [PermanentError],
// and Unknown otherwise. Context errors are Unknown: compare them with
// errors.Is against context.Canceled and context.DeadlineExceeded.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var p *permanentError
	if errors.As(err, &p) {
		return Permanent
	}
	return Unknown
}

// permanentError marks a handler error that retrying cannot fix.
type permanentError struct{ err error }

func (p *permanentError) Error() string { return "permanent: " + p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }
func (p *permanentError) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t == ErrPermanent
}

// PermanentError marks err as permanent: retry middleware does not retry it
// and the dead-letter middleware dead-letters it at once. The cause stays
// reachable with errors.Is and errors.As. It returns nil for a nil err.
func PermanentError(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or any error in its chain, is permanent.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// retryError asks for redelivery after a delay.
type retryError struct {
	err   error
	delay time.Duration
}

func (r *retryError) Error() string {
	return fmt.Sprintf("retry after %s: %v", r.delay, r.err)
}
func (r *retryError) Unwrap() error { return r.err }

// RetryAfter returns an error that nacks the message with a redelivery
// delay: the broker redelivers it no sooner than delay from now (on brokers
// whose capabilities declare NackDelay; elsewhere as soon as the broker
// redelivers). A nil err is treated as errors.New("retry").
func RetryAfter(err error, delay time.Duration) error {
	if err == nil {
		err = errors.New("retry")
	}
	if delay < 0 {
		delay = 0
	}
	return &retryError{err: err, delay: delay}
}

// RetryDelay returns the redelivery delay that err asks for, and whether it
// asks for one.
func RetryDelay(err error) (time.Duration, bool) {
	var r *retryError
	if errors.As(err, &r) {
		return r.delay, true
	}
	return 0, false
}
