package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/polybus/polybus/bench"
	"github.com/polybus/polybus/config"
)

type benchFlags struct {
	urls      []string
	w         bench.Workload
	phases    []string
	rounds    int
	chain     bool
	unordered bool
	jsonFile  string
	htmlFile  string
	memory    bool
}

func (a *app) benchCommand() *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench [--url URL ...] [flags]",
		Short: "Measure throughput and latency on one or more brokers, side by side",
		Long: `Run the same workload on each broker named by --url (repeat it; default
embedded:// in a temporary directory, then mem://): N messages of S bytes
from P publishers to C consumers of one group over K keys, in three
phases:

  publish  send N messages as fast as the broker confirms them
  consume  fresh consumers drain them (first to last delivery)
  steady   end to end at a fixed open-loop rate (--rate; default
           0.5/(1/publish + 1/consume): half of what the two phases
           above would sustain together), latency from each message's
           due time to its handler, so a publisher that falls behind
           shows as latency (no coordinated omission)

Each phase reports messages/s, MB/s, latency percentiles (p50, p90, p99,
p99.9; HDR histogram), this process's CPU time and heap allocations per
message (for mem:// and embedded:// the broker is in this process too),
duplicates and per-key reorderings. A progress bar shows on a terminal.
--rounds repeats the URLs interleaved (A B A B ...); the table gives
medians, the spread and the ratio to the first URL. --json writes every
result; --html a self-contained page with the charts (no network needed).

Ctrl-C stops the run and prints what was measured so far (exit 130). An
unreachable broker fails within --connect-timeout (exit 3).`,
		Example: `  polybus bench
  polybus bench --url kafka://localhost:9092 --url nats://localhost:4222 -n 200000 --html bench.html
  polybus bench --url mem:// --size 4096 --consumers 4 --keys 0 --rounds 5 --json bench.json`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.bench(cmd.Context(), f)
		}),
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.urls, "url", nil, "broker URL; repeat for several (default embedded:// and mem://)")
	fl.IntVarP(&f.w.Messages, "messages", "n", 100_000, "N: messages of the publish and consume phases")
	fl.IntVar(&f.w.Size, "size", 256, "S: payload bytes (at least 16)")
	fl.IntVar(&f.w.Publishers, "publishers", 8, "P: publishing goroutines")
	fl.IntVar(&f.w.Consumers, "consumers", 1, "C: consumers in the group")
	fl.IntVar(&f.w.Keys, "keys", 64, "K: keys (0: keyless messages)")
	fl.IntVar(&f.w.Batch, "batch", 1, "messages per publish call in the publish phase")
	fl.Float64Var(&f.w.Rate, "rate", 0, "steady phase rate, messages/s (default 0.5/(1/publish + 1/consume) of the phases above)")
	fl.IntVar(&f.w.SteadyMessages, "steady-messages", 0, "messages of the steady phase (default N)")
	fl.StringSliceVar(&f.phases, "phases", []string{"publish", "consume", "steady"}, "phases to run")
	fl.IntVar(&f.rounds, "rounds", 1, "repeat every URL this many times, interleaved")
	fl.BoolVar(&f.chain, "chain", false, "wrap the handler in middleware.DefaultChain")
	fl.BoolVar(&f.unordered, "unordered", false, "turn per-key order off in the subscriber")
	fl.DurationVar(&f.w.Timeout, "phase-timeout", 10*time.Minute, "longest time a phase may take")
	fl.BoolVar(&f.memory, "memory", false, "after the table, print each phase's heap and RSS trend (first and last quarter, peak)")
	fl.StringVar(&f.jsonFile, "json", "", "write the report as JSON to FILE")
	fl.StringVar(&f.htmlFile, "html", "", "write the report as a self-contained HTML page to FILE")
	return cmd
}

func (a *app) bench(ctx context.Context, f *benchFlags) error {
	if f.rounds < 1 {
		return usagef("--rounds %d: want at least 1", f.rounds)
	}
	f.w.Phases = nil
	for _, p := range f.phases {
		f.w.Phases = append(f.w.Phases, bench.Phase(strings.TrimSpace(p)))
	}
	if err := f.w.Validate(); err != nil {
		return usageError{err} // checked before anything is opened
	}
	urls := f.urls
	if len(urls) == 0 {
		dir, err := os.MkdirTemp("", "polybus-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		urls = []string{"embedded://" + dir, "mem://"}
	}
	base, err := a.resolve()
	if err != nil {
		return err
	}
	out := redactWriter{a, a.stdout}
	rep := bench.NewReport("polybus bench", f.w)
	rep.Notes = append(rep.Notes, fmt.Sprintf("rounds=%d chain=%v unordered=%v", f.rounds, f.chain, f.unordered))
	names := make([]string, len(urls))
	for i, u := range urls {
		names[i] = a.redactURL(u)
	}
	bar := a.progressBar()
	var runErr error
rounds:
	for round := 1; round <= f.rounds; round++ {
		for i, u := range urls {
			cfg := base
			cfg.URL, cfg.Source = u, "--url"
			res, err := a.benchOne(ctx, cfg, names[i], f, bar)
			for j := range res {
				if f.rounds > 1 {
					res[j].Round = round
				}
			}
			rep.Add(res...)
			if err != nil {
				runErr = err
				break rounds
			}
		}
	}
	bar.done()
	if len(rep.Results) > 0 {
		if err := rep.WriteTable(out); err != nil {
			return err
		}
		if f.memory {
			if err := rep.WriteMemory(out); err != nil {
				return err
			}
		}
	}
	for _, w := range []struct {
		file  string
		write func(*os.File) error
	}{
		{f.jsonFile, func(fh *os.File) error { return rep.WriteJSON(fh) }},
		{f.htmlFile, func(fh *os.File) error { return rep.WriteHTML(fh) }},
	} {
		if w.file == "" {
			continue
		}
		fh, err := os.Create(w.file)
		if err != nil {
			return err
		}
		err = errors.Join(w.write(fh), fh.Close())
		if err != nil {
			return err
		}
	}
	return runErr
}

// benchOne runs the workload once on cfg's broker.
func (a *app) benchOne(ctx context.Context, cfg config.Config, name string, f *benchFlags, bar *benchBar) ([]bench.Result, error) {
	c, err := a.open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	scheme, _, _ := strings.Cut(cfg.URL, "://")
	client := bench.FromClient(c, bench.PolybusOptions{Chain: f.chain, Unordered: f.unordered, Cleanup: cleanupFor(scheme)})
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		client.Close(cctx)
	}()
	return bench.Run(ctx, name, client, f.w, bar.update)
}

// benchBar is the progress bar: one line, redrawn per phase; nothing when
// stdout is not a terminal.
type benchBar struct {
	bar   *progressbar.ProgressBar
	phase string
}

func (a *app) progressBar() *benchBar {
	f, ok := a.stdout.(*os.File)
	if !ok || !isTerminal(f) {
		return &benchBar{}
	}
	return &benchBar{bar: progressbar.NewOptions64(1,
		progressbar.OptionSetWriter(a.stderr),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("msg"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)}
}

func (b *benchBar) update(p bench.Progress) {
	if b.bar == nil {
		return
	}
	if ph := p.Target + " " + string(p.Phase); ph != b.phase {
		b.phase = ph
		b.bar.Reset()
		b.bar.ChangeMax(p.Total)
		b.bar.Describe(fmt.Sprintf("%-30s", ph))
	}
	b.bar.Set(p.Done)
}

func (b *benchBar) done() {
	if b.bar != nil {
		b.bar.Finish()
	}
}
