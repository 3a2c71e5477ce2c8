package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/goleak"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/sqs"
	"github.com/polybus/polybus/conformance"
)

func (a *app) conformanceCommand() *cobra.Command {
	var (
		runExpr     string
		stress      int
		jsonFile    string
		timeout     time.Duration
		noLeakCheck bool
	)
	cmd := &cobra.Command{
		Use:   "conformance --url URL [--run REGEX] [--stress N] [--json FILE]",
		Short: "Run the conformance suite against a live broker",
		Long: `Run polybus's conformance suite against the broker that --url names (or
$POLYBUS_URL, or the config file): every delivery guarantee that the adapter
declares is tested with fresh topics and groups, and what it does not declare
is skipped with the reason. Prints one row per test and the adapter's
capability table; --json writes the results as a JSON array.

Exit status 0 when no test failed, 1 when any did. With no URL configured at
all, the suite runs on embedded:// in a fresh temporary directory.`,
		Example: `  polybus conformance --url nats://localhost:4222
  polybus conformance --url mem:// --run 'Order|Nack' --stress 5
  polybus conformance --url embedded://./data --json results.json`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			opts := conformance.Options{Stress: stress, Timeout: timeout, NoLeakCheck: noLeakCheck}
			if runExpr != "" {
				re, err := regexp.Compile(runExpr)
				if err != nil {
					return usagef("--run %q: %v", runExpr, err)
				}
				opts.Run = re
			}
			if stress < 0 || timeout < 0 {
				return usagef("--stress and --timeout must not be negative")
			}
			return a.conformance(cmd.Context(), opts, jsonFile)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&runExpr, "run", "", "run only the tests whose name matches this regular expression")
	fl.IntVar(&stress, "stress", 0, "run the selected tests N times, the rounds in parallel, to flush out flakes")
	fl.StringVar(&jsonFile, "json", "", "write the results as JSON to FILE")
	fl.DurationVar(&timeout, "timeout", 0, "bound each test (default 2m, plus 1m per --stress round beyond the first)")
	fl.BoolVar(&noLeakCheck, "no-leak-check", false, "skip the goroutine leak check of the close-and-cancel test")
	return cmd
}

func (a *app) conformance(ctx context.Context, opts conformance.Options, jsonFile string) error {
	cfg, err := a.resolve()
	if err != nil {
		return err
	}
	if cfg.Source == "default" {
		dir, err := os.MkdirTemp("", "polybus-conformance-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.URL = "embedded://" + dir
	}
	// Open once first, so that a bad URL or an unreachable broker is one
	// clear error (exit 2 or 3) rather than every test failing.
	c, err := a.open(ctx, cfg)
	if err != nil {
		return err
	}
	name := c.Capabilities().Name
	a.closeClient(c)
	if opts.Cleanup == nil {
		opts.Cleanup = cleanupFor(name)
	}

	out := redactWriter{a, a.stdout}
	fmt.Fprintf(out, "conformance suite: adapter %s at %s\n\n", name, a.redactURL(cfg.URL))
	report := conformance.RunAll(ctx, cliHarness{conformance.URLHarness(cfg.URL)}.withRestart(), opts)
	if err := report.WriteMatrix(out); err != nil {
		return err
	}
	fmt.Fprintln(out)
	if err := conformance.WriteCapabilities(out, report.Capabilities); err != nil {
		return err
	}
	if jsonFile != "" {
		f, err := os.Create(jsonFile)
		if err != nil {
			return err
		}
		werr := report.WriteJSON(redactWriter{a, f})
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("writing %s: %w", jsonFile, werr)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if report.Failed() {
		passed, failed, skipped := report.Counts()
		return exitError{exitFailure, fmt.Sprintf("polybus: conformance: %d failed (%d passed, %d skipped)", failed, passed, skipped)}
	}
	return nil
}

// cliHarness is the URL harness, told to ignore the command's own signal
// goroutine in the suite's leak check.
type cliHarness struct{ conformance.Harness }

func (h cliHarness) IgnoreGoroutines() []goleak.Option {
	var opts []goleak.Option
	if f, ok := h.Harness.(conformance.GoroutineFilter); ok {
		opts = f.IgnoreGoroutines()
	}
	return append(opts, goleak.IgnoreAnyFunction("main.signalLoop"))
}

// restartHarness keeps the URL harness's Restart, where it has one.
type restartHarness struct {
	cliHarness
	conformance.Restarter
}

func (h cliHarness) withRestart() conformance.Harness {
	if r, ok := h.Harness.(conformance.Restarter); ok {
		return restartHarness{h, r}
	}
	return h
}

// cleanupFor returns how the run removes what its topics leave on the
// broker of the adapter named name: SQS keeps a queue per topic and group
// for good, so the run deletes them; other brokers' topics are left (their
// retention ages them out, and NATS's embedded directory is temporary).
func cleanupFor(name string) func(context.Context, *polybus.Client, []string) error {
	if strings.HasPrefix(name, "sqs") {
		return sqs.DeleteTopics
	}
	return nil
}
