package middleware

import (
	"errors"
	"time"

	"github.com/polybus/polybus/message"
)

// deferredError marks an error made by Defer.
type deferredError struct{ err error }

func (d *deferredError) Error() string { return d.err.Error() }
func (d *deferredError) Unwrap() error { return d.err }

// Defer returns an error that nacks a message for redelivery after delay
// without counting as a failure of the message: Retry passes it through
// untouched (no retry in process, no attempt counted where Retry counts),
// DLQ never dead-letters it, and Logging logs it as deferred. Middleware
// that holds a message back for a reason outside the message returns it:
// Breaker while open, for one. err stays reachable with errors.Is and
// errors.As; a nil err is treated as errors.New("deferred").
//
// Where the broker counts deliveries, a deferred delivery still raises the
// count; Retry in Redelivery mode subtracts the deferrals it has seen for
// the message (in this process, within its CounterSize).
func Defer(err error, delay time.Duration) error {
	if err == nil {
		err = errors.New("deferred")
	}
	return message.RetryAfter(&deferredError{err}, delay)
}

// IsDeferred reports whether err defers its message rather than failing
// it: an error made by Defer, or Ordering's ErrOutOfOrder and ErrGap
// nacks. A permanent error is never deferred.
func IsDeferred(err error) bool {
	if err == nil || message.IsPermanent(err) {
		return false
	}
	var d *deferredError
	return errors.As(err, &d) || errors.Is(err, ErrOutOfOrder) || errors.Is(err, ErrGap)
}
