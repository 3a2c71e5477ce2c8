package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

type subFlags struct {
	topic   string
	group   string
	from    string
	count   int
	json    bool
	trace   bool
	timeout time.Duration
}

func (a *app) subCommand() *cobra.Command {
	var f subFlags
	cmd := &cobra.Command{
		Use:   "sub --topic TOPIC --group GROUP [--count N] [--from earliest|latest] [--json] [--trace] [--timeout D]",
		Short: "Receive messages and print them as they arrive",
		Long: `Receive the messages of a topic as consumer group GROUP and print each as it
arrives, one per line; each printed message is acked. Subscribers of one group
share its messages, every group gets them all. A new group starts at the
oldest retained message (--from earliest, the default) or only takes messages
published from now on (--from latest); a group that exists continues where it
left off.

sub runs until it has printed --count messages (then exits 0), until --timeout
passes (exit 0 without --count; exit 1 when fewer than --count arrived), or
until SIGINT (exit 130). Messages received beyond --count are not acked: the
group gets them again later.

Line format:   ID key=KEY attempt=N [trace=TRACE] [NAME=VALUE ...] | PAYLOAD
  trace= (with --trace) is the W3C trace ID of the message's traceparent
  metadata (written by package telemetry), "" when it has none;
  metadata sorted by name; the payload as it is when it is one line of
  printable text, Go-quoted when it holds control characters or newlines,
  base64:... when it is not UTF-8.
JSON format (--json), one object a line:
  {"topic":"orders","group":"audit","id":"...","key":"ord-1","attempt":1,
   "time":"2026-01-02T03:04:05.123Z","metadata":{"source":"web"},
   "payload":"{\"total\":42}"}
  payload is the payload as a string when it is valid UTF-8; otherwise it is
  standard base64 and "payload_base64":true is added. --trace adds
  "trace_id" (the traceparent's trace ID, "" when none).`,
		Example: `  polybus sub --topic orders --group audit
  polybus sub --topic orders --group audit --count 10 --json | jq .payload
  polybus sub --topic orders --group probe --from latest --count 1 --timeout 30s`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.sub(cmd.Context(), f)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.topic, "topic", "", "topic to receive from (required)")
	fl.StringVar(&f.group, "group", "", "consumer group (required)")
	fl.IntVar(&f.count, "count", 0, "exit after printing N messages (default: run until interrupted)")
	fl.StringVar(&f.from, "from", "earliest", "where a new group starts: earliest or latest")
	fl.BoolVar(&f.json, "json", false, "print JSON lines")
	fl.BoolVar(&f.trace, "trace", false, "print each message's trace ID (W3C traceparent metadata)")
	fl.DurationVar(&f.timeout, "timeout", 0, "stop after this long (default: no limit)")
	_ = cmd.MarkFlagRequired("topic")
	_ = cmd.MarkFlagRequired("group")
	return cmd
}

// errSurplus nacks a message received after --count was reached, with a
// short delay: the subscription is closing, and a message redelivered to it
// at once could stay unseen until its ack deadline (see keepDelay).
var errSurplus = message.RetryAfter(errors.New("sub: --count reached; message handed back"), keepDelay)

func (a *app) sub(ctx context.Context, f subFlags) error {
	switch {
	case f.topic == "":
		return usagef("--topic is empty")
	case f.group == "":
		return usagef("--group is empty")
	case f.count < 0:
		return usagef("--count %d is negative", f.count)
	case f.timeout < 0:
		return usagef("--timeout %s is negative", f.timeout)
	}
	var start subscriber.Start
	switch f.from {
	case "earliest":
		start = subscriber.Earliest
	case "latest":
		start = subscriber.Latest
	default:
		return usagef("--from %q: want earliest or latest", f.from)
	}
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer a.closeClient(c)

	runCtx, cancel := context.WithCancel(ctx)
	if f.timeout > 0 {
		runCtx, cancel = context.WithTimeout(ctx, f.timeout)
	}
	defer cancel()

	var mu sync.Mutex
	n := 0
	var writeErr error
	h := func(_ context.Context, m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if f.count > 0 && n >= f.count || writeErr != nil {
			return errSurplus
		}
		var err error
		if f.json {
			err = writeJSON(a.stdout, m, f.trace)
		} else {
			err = writeLine(a.stdout, m, f.trace)
		}
		if err != nil {
			// stdout is gone (a closed pipe): stop, and leave the message
			// unacked.
			writeErr = err
			cancel()
			return err
		}
		n++
		if f.count > 0 && n == f.count {
			cancel()
		}
		return nil
	}
	opts := []subscriber.Option{
		subscriber.Group(f.group), subscriber.StartAt(start),
		// One at a time: lines print in delivery order, and no more
		// messages are taken than --count needs.
		subscriber.Concurrency(1),
	}
	if f.count > 0 {
		opts = append(opts, subscriber.Prefetch(min(f.count, 16)))
	}
	if err := c.Subscriber().Subscribe(runCtx, f.topic, h, opts...); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	switch {
	case writeErr != nil:
		return fmt.Errorf("writing to stdout: %w", writeErr)
	case ctx.Err() != nil:
		return ctx.Err()
	case f.count > 0 && n < f.count:
		return fmt.Errorf("sub: --timeout %s passed after %d of %d messages", f.timeout, n, f.count)
	}
	return nil
}
