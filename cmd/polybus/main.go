// Command polybus publishes, consumes and inspects messages on any broker
// that polybus supports, runs the order-flow demo and runs the
// conformance suite against a live broker.
//
//	polybus demo                                   the order flow on an in-process broker
//	polybus pub --topic orders '{"id":1}'          publish, print the message ID
//	polybus sub --topic orders --group g --count 1 receive and print
//	polybus dlq ls --topic orders.dlq              list dead letters without consuming them
//	polybus dlq replay --topic orders.dlq --all    republish them to their topics
//	polybus conformance --url nats://host:4222     prove a broker's delivery semantics
//	polybus schema check ./schemas                 gate CI on schema compatibility and contracts
//
// The broker comes from --url, else $POLYBUS_URL, else polybus.yaml (see
// package config), else embedded:// (an in-process NATS JetStream server
// storing its data in ./.polybus). Run polybus --help for the exit codes.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	stop := watchSignals(cancel)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	cancel()
	os.Exit(code)
}

// watchSignals cancels the command's context on SIGINT or SIGTERM, so that
// every command stops gracefully (subscriptions drain, held dead letters go
// back to the broker) and exits with exitInterrupted. A second signal
// kills the process at once. The returned function stops watching.
//
// It is a named function, rather than signal.NotifyContext, so that the
// conformance command can tell the suite's leak check to ignore its
// goroutine.
func watchSignals(cancel context.CancelFunc) (stop func()) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go signalLoop(ch, done, cancel)
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

func signalLoop(ch <-chan os.Signal, done <-chan struct{}, cancel context.CancelFunc) {
	select {
	case <-ch:
		cancel()
	case <-done:
		return
	}
	select {
	case <-ch:
		os.Exit(exitInterrupted)
	case <-done:
	}
}

// run runs the command line args and returns the exit code. Tests call it
// in process; main calls it with the process's files.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := newApp(stdin, stdout, stderr)
	root := a.rootCommand()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return a.exitCode(ctx, err)
}
