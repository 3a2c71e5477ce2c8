package middleware

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// RecovererConfig configures Recoverer. The zero value is valid.
type RecovererConfig struct {
	// Transient makes a panic a transient error (code Unknown), which
	// Retry retries and DLQ passes through. Default false: a panic is
	// permanent, since a handler that panics on a message usually panics
	// on it every time (a nil field, a malformed payload), and retrying a
	// poison message only delays its dead-lettering.
	Transient bool
	// OnPanic, when set, is called with the panic's value and stack
	// before the error is returned.
	OnPanic func(ctx context.Context, m *message.Message, value any, stack []byte)
}

// PanicError is the cause of the error that Recoverer returns for a
// handler that panicked.
type PanicError struct {
	// Value is what the handler passed to panic.
	Value any
	// Stack is the panicking goroutine's stack, from runtime/debug.Stack.
	Stack []byte
}

// Error returns the panic's value followed by the stack, so that the stack
// reaches logs and the dead letter's message.KeyDLQError.
func (e *PanicError) Error() string {
	return fmt.Sprintf("handler panicked: %v\n\n%s", e.Value, e.Stack)
}

// Unwrap returns the panic's value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Recoverer returns middleware that turns a panic of the handler into an
// error: a *message.Error of code Permanent (Unknown with
// RecovererConfig.Transient) whose cause is a *PanicError carrying the
// value and the stack. The subscriber recovers panics by itself too, but
// only to nack; Recoverer placed inside Logging, DLQ and Retry lets them see
// the panic as a classified error, so a poison message is dead-lettered
// rather than redelivered for ever.
//
// Errors: none; the error result keeps the constructor shape uniform.
func Recoverer(cfg RecovererConfig) (subscriber.Middleware, error) {
	code := message.Permanent
	if cfg.Transient {
		code = message.Unknown
	}
	return func(next subscriber.Handler) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) (err error) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				p := &PanicError{Value: v, Stack: debug.Stack()}
				if cfg.OnPanic != nil {
					cfg.OnPanic(ctx, m, v, p.Stack)
				}
				err = &message.Error{Code: code, Op: "handle", Err: p}
			}()
			return next(ctx, m)
		}
	}, nil
}
