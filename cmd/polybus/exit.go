package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/polybus/polybus/message"
)

// The exit codes, documented in the root command's help (exitCodesHelp).
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitUnavailable = 3
	exitThreshold   = 4
	exitNotFound    = 5
	exitInterrupted = 130
)

const exitCodesHelp = `Exit status:
  0    success
  1    failure: the operation failed (a broker error, a message not
       published, a dead letter not replayed, a conformance test failed),
       or sub --timeout passed before --count messages arrived, or schema
       check found an incompatible change or a broken contract (schema
       diff --mode: the change is incompatible under that mode)
  2    usage: unknown command or flag, bad argument, malformed URL, unknown
       scheme, unknown URL option, invalid config file or unknown profile,
       a schema directory, schema, mode or contract file that is missing
       or does not parse
  3    unavailable: the broker did not answer within --connect-timeout, or
       the connection failed
  4    dlq depth: the depth is above --threshold
  5    not found: the topic does not exist (where the broker can tell),
       or dlq show found no dead letter with that ID, or saga show no
       saga with that ID
  130  interrupted by SIGINT or SIGTERM`

// usageError is a mistake on the command line: exit code 2, and a hint to
// read the command's help.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitError carries an exit code of its own (a threshold crossed), with a
// message or none.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// codeOf maps an error to the process's exit code.
func codeOf(ctx context.Context, err error) int {
	var ue usageError
	var ee exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		return exitUsage
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	switch message.CodeOf(err) {
	case message.InvalidArgument:
		return exitUsage
	case message.Unavailable:
		return exitUnavailable
	case message.NotFound:
		return exitNotFound
	}
	if ctx.Err() != nil {
		return exitInterrupted
	}
	return exitFailure
}

// exitCode prints err (redacted) and returns the exit code.
func (a *app) exitCode(ctx context.Context, err error) int {
	code := codeOf(ctx, err)
	if err == nil {
		return code
	}
	if !a.running && code != exitInterrupted {
		// Cobra's own errors (unknown command, missing required flag,
		// wrong number of arguments) come before any command runs.
		code = exitUsage
	}
	msg := a.redact(err.Error())
	switch {
	case code == exitInterrupted:
		fmt.Fprintln(a.stderr, "polybus: interrupted")
	case msg == "":
	default:
		if !strings.HasPrefix(msg, "polybus: ") {
			msg = "polybus: " + msg
		}
		fmt.Fprintln(a.stderr, msg)
	}
	if code == exitUsage && a.failed != "" {
		fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", a.failed)
	}
	return code
}
