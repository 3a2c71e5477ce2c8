package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
)

// replayChunk is how many dead letters go into one Publish call.
const replayChunk = 100

func (a *app) dlqReplay(f *dlqFlags) *cobra.Command {
	var (
		to      string
		dryRun  bool
		newID   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "replay --topic TOPIC.dlq [ID ...] [--filter FIELD=VALUE ...] [--to TOPIC] [--dry-run]",
		Short: "Republish dead letters to their topic, then ack them",
		Long: `Republish pending dead letters to the topic they failed on (their
polybus-dlq-topic metadata), or to --to, oldest first. Without IDs or filters
every pending dead letter is replayed.

The republished message keeps its ID (the idempotency key), key, payload,
time and metadata, minus the dead-letter metadata (every polybus-dlq-* key).
A dead letter is acked only after the broker has accepted its republished
copy; one whose publish fails stays pending, and replay then exits 1. A dead
letter without polybus-dlq-topic metadata needs --to. --dry-run prints what
would be replayed and acks nothing.

Brokers that deduplicate by message ID (NATS JetStream: the stream's
duplicates window, 2 minutes by default) would accept a replayed copy and drop
it, if its ID was first published within that window. replay leaves such dead
letters pending and says when they can be replayed; --new-id gives the
replayed copies new IDs instead (consumers' deduplication then cannot tell
them from the original).

Output: "replayed ID key=KEY -> TOPIC" for each one, and a count on stderr.`,
		Example: `  polybus dlq replay --topic orders.dlq
  polybus dlq replay --topic orders.dlq 0199a5c3-7c1e-7b1a-9d7e-2f3c4b5a6d7e
  polybus dlq replay --topic orders.dlq --filter reason=max-attempts --dry-run
  polybus dlq replay --topic orders.dlq --filter meta.tenant=acme --to orders-retry`,
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			sel, err := newSelection(args, f.filters)
			if err != nil {
				return err
			}
			if timeout <= 0 {
				return usagef("--timeout must be above 0")
			}
			return a.withDLQ(cmd.Context(), f, func(ctx context.Context, c *polybus.Client, res scanResult) ([]bool, error) {
				return a.replay(ctx, c.Publisher(), f, res, sel, replayOptions{to: to, dryRun: dryRun, newID: newID, timeout: timeout})
			})
		}),
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.filters, "filter", nil, "replay only dead letters that match FIELD=VALUE (see polybus dlq --help)")
	fl.StringVar(&to, "to", "", "republish to this topic instead of each dead letter's own")
	fl.BoolVar(&dryRun, "dry-run", false, "print what would be replayed; publish and ack nothing")
	fl.BoolVar(&newID, "new-id", false, "give each replayed copy a new message ID (see above)")
	fl.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the broker to accept each batch of republished messages")
	return cmd
}

// replayOptions are replay's flags.
type replayOptions struct {
	to      string
	dryRun  bool
	newID   bool
	timeout time.Duration
}

// replay republishes the selected dead letters and returns which to ack.
func (a *app) replay(ctx context.Context, p *publisher.Publisher, f *dlqFlags, res scanResult, sel selection, o replayOptions) ([]bool, error) {
	ack := make([]bool, len(res.msgs))
	var errs []error
	// Destinations in order of first appearance, each with its dead
	// letters in topic order, so that a key's messages keep their order.
	var dests []string
	byDest := map[string][]int{}
	windows := map[string]time.Duration{}
	selected := 0
	for i, m := range res.msgs {
		if !sel.match(m) {
			continue
		}
		selected++
		dest := o.to
		if dest == "" {
			dest = m.Metadata.Get(message.KeyDLQTopic)
		}
		if dest == "" {
			errs = append(errs, message.Errorf(message.InvalidArgument, "dlq replay",
				"dead letter %s has no %s metadata: replay it with --to TOPIC", m.ID, message.KeyDLQTopic))
			continue
		}
		if !o.newID {
			window, ok := windows[dest]
			if !ok {
				var err error
				if window, err = dedupeWindow(ctx, p, dest); err != nil {
					return ack, err
				}
				windows[dest] = window
			}
			if err := tooSoon(m, dest, window, time.Now()); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if o.dryRun {
			fmt.Fprintf(a.stdout, "would replay %s key=%s -> %s\n", m.ID, quoteIfNeeded(m.Key), dest)
			continue
		}
		if _, ok := byDest[dest]; !ok {
			dests = append(dests, dest)
		}
		byDest[dest] = append(byDest[dest], i)
	}
	replayed := 0
	for _, dest := range dests {
		idx := byDest[dest]
		for len(idx) > 0 {
			n := min(len(idx), replayChunk)
			chunk := idx[:n]
			idx = idx[n:]
			copies, ok, err := republish(ctx, p, dest, res.msgs, chunk, o)
			for j, i := range chunk {
				if ok[j] {
					ack[i] = true
					replayed++
					as := ""
					if copies[j].ID != res.msgs[i].ID {
						as = " as " + copies[j].ID
					}
					fmt.Fprintf(a.stdout, "replayed %s%s key=%s -> %s\n", res.msgs[i].ID, as, quoteIfNeeded(res.msgs[i].Key), dest)
				}
			}
			if err != nil {
				errs = append(errs, err)
				if ctx.Err() != nil {
					break
				}
			}
		}
	}
	verb := "replayed"
	if o.dryRun {
		verb, replayed = "would replay", selected
	}
	fmt.Fprintf(a.stderr, "%s %d of %d pending dead letters in %s (group %s)\n", verb, replayed, len(res.msgs), f.topic, f.group)
	errs = append(errs, sel.missing(res.msgs, f.topic, f.group))
	return ack, errors.Join(errs...)
}

// republish publishes clean copies of msgs[idx...] to dest in one call and
// reports which ones the broker accepted.
func republish(ctx context.Context, p *publisher.Publisher, dest string, msgs []*message.Message, idx []int, o replayOptions) ([]*message.Message, []bool, error) {
	timeout := o.timeout
	copies := make([]*message.Message, len(idx))
	for j, i := range idx {
		copies[j] = replayCopy(msgs[i])
		if o.newID {
			copies[j].ID = message.NewID()
		}
	}
	ok := make([]bool, len(idx))
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := p.Publish(pctx, dest, copies...)
	var pe *publisher.PublishError
	switch {
	case err == nil:
		for j := range ok {
			ok[j] = true
		}
		return copies, ok, nil
	case errors.As(err, &pe):
		failed := map[int]bool{}
		for _, fl := range pe.Failed {
			failed[fl.Index] = true
		}
		for j := range ok {
			ok[j] = !failed[j]
		}
		return copies, ok, fmt.Errorf("replay to %s: %w", dest, err)
	case ctx.Err() == nil && pctx.Err() != nil:
		return copies, ok, message.Errorf(message.Unavailable, "dlq replay", "the broker did not accept %d messages for %s within --timeout %s; their dead letters stay pending", len(idx), dest, timeout)
	}
	return copies, ok, fmt.Errorf("replay to %s: %w", dest, err)
}

// replayCopy returns the message to republish for dead letter m: the same
// ID, key, payload, time and metadata, without the dead-letter metadata.
func replayCopy(m *message.Message) *message.Message {
	c := m.Clone()
	for k := range c.Metadata {
		if isDLQKey(k) {
			delete(c.Metadata, k)
		}
	}
	if len(c.Metadata) == 0 {
		c.Metadata = nil
	}
	return c
}

func (a *app) dlqPurge(f *dlqFlags) *cobra.Command {
	var yes, dryRun bool
	cmd := &cobra.Command{
		Use:   "purge --topic TOPIC.dlq [ID ...] [--filter FIELD=VALUE ...] [--yes] [--dry-run]",
		Short: "Ack dead letters without replaying them",
		Long: `Ack pending dead letters without republishing them: they are no longer
pending, and depth, ls and replay no longer see them. On a log broker the
messages stay in the topic until its retention removes them; only the group's
position moves. Without IDs or filters every pending dead letter is purged.

purge asks for confirmation on stdin (y or yes) after counting the dead
letters; without an answer (stdin closed or empty) it refuses, exit 2, unless
--yes is given. An answer other than yes cancels, exit 1. --dry-run lists what
would be purged and acks nothing.`,
		Example: `  polybus dlq purge --topic orders.dlq
  polybus dlq purge --topic orders.dlq --filter reason=permanent --yes
  polybus dlq purge --topic orders.dlq 0199a5c3-7c1e-7b1a-9d7e-2f3c4b5a6d7e --dry-run`,
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			sel, err := newSelection(args, f.filters)
			if err != nil {
				return err
			}
			return a.withDLQ(cmd.Context(), f, func(ctx context.Context, _ *polybus.Client, res scanResult) ([]bool, error) {
				ack := make([]bool, len(res.msgs))
				var picked []*message.Message
				for i, m := range res.msgs {
					if sel.match(m) {
						picked = append(picked, m)
						ack[i] = true
					}
				}
				missing := sel.missing(res.msgs, f.topic, f.group)
				if len(picked) == 0 {
					fmt.Fprintf(a.stderr, "nothing to purge in %s (group %s)\n", f.topic, f.group)
					return nil, missing
				}
				if dryRun {
					writeTable(a.stdout, picked)
					fmt.Fprintf(a.stderr, "would purge %d of %d pending dead letters in %s (group %s)\n", len(picked), len(res.msgs), f.topic, f.group)
					return nil, missing
				}
				if !yes {
					fmt.Fprintf(a.stderr, "Purge %d of %d pending dead letters in %s (group %s)? They will not be replayed. [y/N] ",
						len(picked), len(res.msgs), f.topic, f.group)
					answer, err := readAnswer(ctx, a.stdin)
					if err != nil {
						fmt.Fprintln(a.stderr)
						return nil, errNoPrompt
					}
					if answer != "y" && answer != "yes" {
						return nil, exitError{exitFailure, "polybus: purge cancelled; nothing purged"}
					}
				}
				for _, m := range picked {
					fmt.Fprintf(a.stdout, "purged %s key=%s\n", m.ID, quoteIfNeeded(m.Key))
				}
				fmt.Fprintf(a.stderr, "purged %d of %d pending dead letters in %s (group %s)\n", len(picked), len(res.msgs), f.topic, f.group)
				return ack, missing
			})
		}),
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.filters, "filter", nil, "purge only dead letters that match FIELD=VALUE (see polybus dlq --help)")
	fl.BoolVarP(&yes, "yes", "y", false, "purge without asking")
	fl.BoolVar(&dryRun, "dry-run", false, "list what would be purged; ack nothing")
	return cmd
}

// readAnswer reads one line from r, lower-cased and trimmed; an empty
// input is an error. It gives up when ctx ends.
func readAnswer(ctx context.Context, r interface{ Read([]byte) (int, error) }) (string, error) {
	type result struct {
		s   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		if err != nil && line == "" {
			done <- result{"", err}
			return
		}
		done <- result{strings.ToLower(strings.TrimSpace(line)), nil}
	}()
	select {
	case res := <-done:
		return res.s, res.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (a *app) dlqDepth(f *dlqFlags) *cobra.Command {
	var threshold int
	cmd := &cobra.Command{
		Use:   "depth --topic TOPIC.dlq [--threshold N] [--filter FIELD=VALUE ...]",
		Short: "Print the number of pending dead letters; exit 4 above a threshold",
		Long: `Print the number of pending dead letters (those the group has not acked; see
polybus dlq --help). Nothing is consumed. With --threshold N, the exit status
is 4 when the depth is above N, so that a cron job or health check can alert
on it; 0 otherwise.`,
		Example: `  polybus dlq depth --topic orders.dlq
  polybus dlq depth --topic orders.dlq --threshold 0 || echo "orders has dead letters"`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			sel, err := newSelection(nil, f.filters)
			if err != nil {
				return err
			}
			if threshold < -1 {
				return usagef("--threshold %d is negative", threshold)
			}
			return a.withDLQ(cmd.Context(), f, func(_ context.Context, _ *polybus.Client, res scanResult) ([]bool, error) {
				n := 0
				for _, m := range res.msgs {
					if sel.match(m) {
						n++
					}
				}
				fmt.Fprintln(a.stdout, n)
				if res.full {
					fmt.Fprintf(a.stderr, "stopped at --max %d: the depth may be higher\n", f.max)
				}
				if threshold >= 0 && n > threshold {
					return nil, exitError{exitThreshold, fmt.Sprintf("polybus: dlq depth %d of %s is above the threshold %d", n, f.topic, threshold)}
				}
				return nil, nil
			})
		}),
	}
	cmd.Flags().IntVar(&threshold, "threshold", -1, "exit 4 when the depth is above N (default: no threshold)")
	cmd.Flags().StringArrayVar(&f.filters, "filter", nil, "count only dead letters that match FIELD=VALUE (see polybus dlq --help)")
	return cmd
}
