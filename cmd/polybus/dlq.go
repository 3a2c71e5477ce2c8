package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
)

// DefaultDLQGroup is the consumer group whose acks mark dead letters
// handled.
const defaultDLQGroup = "polybus-dlq"

type dlqFlags struct {
	topic   string
	group   string
	wait    time.Duration
	max     int
	filters []string
	json    bool
}

const dlqLong = `Inspect, replay and purge the dead letters of a dead-letter topic: the
messages that the DLQ middleware published there (by default to the topic's
name plus ".dlq") with the reason, the error, the original topic and group and
the attempt count in polybus-dlq-* metadata.

Pending: a dead letter is pending until the consumer group polybus-dlq
(--group) acks it. replay acks it once it is republished, purge acks it
without republishing; depth counts the pending ones. On a log broker (NATS
JetStream, Kafka, the memory broker) the topic keeps every dead letter: the
group's acks are what mark one handled.

Reading without consuming: every dlq command reads the group's pending dead
letters and holds each one unacked until none has arrived for --wait (or it
holds --max). ls, show and depth then hand them all back (a nack): nothing is
consumed and the next command sees them again. replay and purge ack only the
dead letters that they replayed or purged and hand back the rest. While one
command holds them, another dlq command of the same group does not see them.
Each read counts as a delivery to the group (the attempt in --json output).

The group starts at the oldest retained dead letter the first time it is
used. On a broker whose new groups do not read old messages (see Retained in
the conformance capability table), create it before dead letters arrive: run
"polybus dlq depth" once.

Filters (--filter, repeatable, all must match): reason=VALUE (permanent,
max-attempts), topic=VALUE (the original topic), group=VALUE (the group that
failed), key=VALUE, id=VALUE, attempts=N, meta.NAME=VALUE (any metadata).`

func (a *app) dlqCommand() *cobra.Command {
	var f dlqFlags
	cmd := &cobra.Command{
		Use:   "dlq ls|show|replay|purge|depth --topic TOPIC.dlq",
		Short: "List, show, replay, purge and count dead letters",
		Long:  dlqLong,
		Example: `  polybus dlq ls --topic orders.dlq
  polybus dlq show --topic orders.dlq 0199a5c3-7c1e-7b1a-9d7e-2f3c4b5a6d7e
  polybus dlq replay --topic orders.dlq --filter reason=max-attempts --dry-run
  polybus dlq purge --topic orders.dlq --filter meta.tenant=acme --yes
  polybus dlq depth --topic orders.dlq --threshold 100 || page-someone`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.topic, "topic", "", "dead-letter topic, such as orders.dlq (required)")
	pf.StringVar(&f.group, "group", defaultDLQGroup, "consumer group whose acks mark dead letters handled")
	pf.DurationVar(&f.wait, "wait", time.Second, "stop reading once no dead letter has arrived for this long")
	pf.IntVar(&f.max, "max", 10000, "read at most this many dead letters")
	_ = cmd.MarkPersistentFlagRequired("topic")

	cmd.AddCommand(a.dlqLs(&f), a.dlqShow(&f), a.dlqReplay(&f), a.dlqPurge(&f), a.dlqDepth(&f))
	return cmd
}

func (f *dlqFlags) check() error {
	if f.topic == "" {
		return usagef("--topic is empty")
	}
	return checkScan(f.group, f.wait, f.max)
}

// checkScan checks the flags that every scan of held messages takes
// (dlq's, trace's): --group, --wait, --max.
func checkScan(group string, wait time.Duration, max int) error {
	switch {
	case group == "":
		return usagef("--group is empty")
	case wait <= 0:
		return usagef("--wait must be above 0")
	case max <= 0:
		return usagef("--max must be above 0")
	}
	return nil
}

func (f *dlqFlags) options() scanOptions {
	return scanOptions{topic: f.topic, group: f.group, idle: f.wait, max: f.max}
}

// withDLQ checks the flags, opens the broker and runs a scan.
func (a *app) withDLQ(ctx context.Context, f *dlqFlags, decide func(context.Context, *polybus.Client, scanResult) ([]bool, error)) error {
	if err := f.check(); err != nil {
		return err
	}
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer a.closeClient(c)
	return scanDLQ(ctx, c, f.options(), func(ctx context.Context, res scanResult) ([]bool, error) {
		return decide(ctx, c, res)
	})
}

// selection picks dead letters by ID (when ids is not empty) and filters.
type selection struct {
	ids     map[string]bool
	filters []filter
}

func newSelection(ids []string, filterArgs []string) (selection, error) {
	fs, err := parseFilters(filterArgs)
	if err != nil {
		return selection{}, err
	}
	s := selection{filters: fs}
	if len(ids) > 0 {
		s.ids = map[string]bool{}
		for _, id := range ids {
			s.ids[id] = true
		}
	}
	return s, nil
}

func (s selection) match(m *message.Message) bool {
	if s.ids != nil && !s.ids[m.ID] {
		return false
	}
	for _, f := range s.filters {
		if !f.match(m) {
			return false
		}
	}
	return true
}

// missing returns the requested IDs that msgs lack, as an error.
func (s selection) missing(msgs []*message.Message, topic, group string) error {
	if s.ids == nil {
		return nil
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[m.ID] = true
	}
	var miss []string
	for id := range s.ids {
		if !seen[id] {
			miss = append(miss, id)
		}
	}
	if len(miss) == 0 {
		return nil
	}
	return message.Errorf(message.NotFound, "dlq", "no pending dead letter with ID %s in %s (group %s)", strings.Join(miss, ", "), topic, group)
}

// filter is one --filter FIELD=VALUE.
type filter struct {
	field, value string
}

var filterFields = map[string]string{
	"reason":   message.KeyDLQReason,
	"topic":    message.KeyDLQTopic,
	"group":    message.KeyDLQGroup,
	"attempts": message.KeyDLQAttempts,
}

func parseFilters(args []string) ([]filter, error) {
	var fs []filter
	for _, arg := range args {
		field, value, ok := strings.Cut(arg, "=")
		if !ok || field == "" {
			return nil, usagef("--filter %q: want FIELD=VALUE", arg)
		}
		_, known := filterFields[field]
		if !known && field != "key" && field != "id" && !(strings.HasPrefix(field, "meta.") && len(field) > len("meta.")) {
			return nil, usagef("--filter %q: unknown field %q (known: reason, topic, group, key, id, attempts, meta.NAME)", arg, field)
		}
		fs = append(fs, filter{field, value})
	}
	return fs, nil
}

func (f filter) match(m *message.Message) bool {
	switch {
	case f.field == "key":
		return m.Key == f.value
	case f.field == "id":
		return m.ID == f.value
	case strings.HasPrefix(f.field, "meta."):
		v, ok := m.Metadata[strings.TrimPrefix(f.field, "meta.")]
		return ok && v == f.value
	}
	return m.Metadata.Get(filterFields[f.field]) == f.value
}

// pendingNote tells people how many dead letters a scan saw, on stderr.
func (a *app) pendingNote(f *dlqFlags, n int, res scanResult, what string) {
	more := ""
	if res.full {
		more = fmt.Sprintf(" (stopped at --max %d: there may be more)", f.max)
	}
	fmt.Fprintf(a.stderr, "%d %s in %s (group %s)%s\n", n, what, f.topic, f.group, more)
}

func (a *app) dlqLs(f *dlqFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ls --topic TOPIC.dlq [--filter FIELD=VALUE ...] [--json]",
		Short: "List pending dead letters without consuming them",
		Long: `List the pending dead letters, oldest first: ID, key, reason, attempts, original
topic and group, last failure and the first line of the error. Nothing is
consumed (see polybus dlq --help). The count goes to stderr.`,
		Example: `  polybus dlq ls --topic orders.dlq
  polybus dlq ls --topic orders.dlq --filter reason=permanent --json`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			sel, err := newSelection(nil, f.filters)
			if err != nil {
				return err
			}
			return a.withDLQ(cmd.Context(), f, func(_ context.Context, _ *polybus.Client, res scanResult) ([]bool, error) {
				var picked []*message.Message
				for _, m := range res.msgs {
					if sel.match(m) {
						picked = append(picked, m)
					}
				}
				if f.json {
					for _, m := range picked {
						if err := writeJSON(a.stdout, m, false); err != nil {
							return nil, err
						}
					}
				} else if len(picked) > 0 {
					writeTable(a.stdout, picked)
				}
				a.pendingNote(f, len(picked), res, "dead letters pending")
				return nil, nil
			})
		}),
	}
	cmd.Flags().StringArrayVar(&f.filters, "filter", nil, "show only dead letters that match FIELD=VALUE (see polybus dlq --help)")
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON lines (the format of polybus sub --json)")
	return cmd
}

// writeTable prints dead letters as a table.
func writeTable(w io.Writer, msgs []*message.Message) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKEY\tREASON\tATTEMPTS\tTOPIC\tGROUP\tLAST FAILURE\tERROR")
	for _, m := range msgs {
		md := m.Metadata
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, dash(m.Key), dash(md.Get(message.KeyDLQReason)),
			dash(md.Get(message.KeyDLQAttempts)), dash(md.Get(message.KeyDLQTopic)), dash(md.Get(message.KeyDLQGroup)),
			dash(shortTime(md.Get(message.KeyDLQLastFailure))), dash(firstLine(md.Get(message.KeyDLQError), 60)))
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortTime cuts an RFC 3339 time to seconds.
func shortTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

// firstLine returns the first line of s, cut to n runes.
func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if utf8.RuneCountInString(s) > n {
		r := []rune(s)
		s = string(r[:n-1]) + "…"
	}
	return s
}

func (a *app) dlqShow(f *dlqFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show --topic TOPIC.dlq ID",
		Short: "Show a pending dead letter in full",
		Long: `Show a pending dead letter in full: its dead-letter metadata, the error, its
other metadata and its payload. Nothing is consumed. Exit status 5 when no
pending dead letter has that ID.`,
		Example: `  polybus dlq show --topic orders.dlq 0199a5c3-7c1e-7b1a-9d7e-2f3c4b5a6d7e`,
		Args:    cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			sel, _ := newSelection(args, nil)
			return a.withDLQ(cmd.Context(), f, func(_ context.Context, _ *polybus.Client, res scanResult) ([]bool, error) {
				for _, m := range res.msgs {
					if !sel.match(m) {
						continue
					}
					var err error
					if f.json {
						err = writeJSON(a.stdout, m, false)
					} else {
						err = writeDeadLetter(a.stdout, m)
					}
					if err != nil {
						return nil, err
					}
				}
				return nil, sel.missing(res.msgs, f.topic, f.group)
			})
		}),
	}
	cmd.Flags().BoolVar(&f.json, "json", false, "print a JSON line (the format of polybus sub --json)")
	return cmd
}

// writeDeadLetter prints one dead letter for people.
func writeDeadLetter(w io.Writer, m *message.Message) error {
	md := m.Metadata
	var b strings.Builder
	row := func(name, value string) { fmt.Fprintf(&b, "%-15s %s\n", name+":", value) }
	row("id", m.ID)
	row("key", quoteIfNeeded(m.Key))
	row("time", m.Time.UTC().Format(time.RFC3339Nano))
	row("reason", dash(md.Get(message.KeyDLQReason)))
	row("attempts", dash(md.Get(message.KeyDLQAttempts)))
	row("topic", dash(md.Get(message.KeyDLQTopic)))
	row("group", dash(md.Get(message.KeyDLQGroup)))
	row("first failure", dash(md.Get(message.KeyDLQFirstFailure)))
	row("last failure", dash(md.Get(message.KeyDLQLastFailure)))
	other := false
	for _, k := range sortedKeys(md) {
		if isDLQKey(k) {
			continue
		}
		if !other {
			b.WriteString("metadata:\n")
			other = true
		}
		fmt.Fprintf(&b, "  %s=%s\n", quoteIfNeeded(k), quoteIfNeeded(md[k]))
	}
	b.WriteString("error:\n")
	b.WriteString(indent(dash(md.Get(message.KeyDLQError))))
	b.WriteString("payload:\n")
	b.WriteString(indent(payloadBlock(m.Payload)))
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	return "  " + strings.ReplaceAll(s, "\n", "\n  ") + "\n"
}

// payloadBlock renders a payload over several lines where it has them.
func payloadBlock(p []byte) string {
	if utf8.Valid(p) && !strings.ContainsFunc(string(p), func(r rune) bool { return r < ' ' && r != '\n' && r != '\t' }) {
		return string(p)
	}
	return payloadText(p)
}

// isDLQKey reports whether k is dead-letter metadata, which replay removes.
func isDLQKey(k string) bool {
	return strings.HasPrefix(k, message.MetadataPrefix+"dlq-")
}

// errNoPrompt refuses a purge that cannot be confirmed.
var errNoPrompt = usagef("purge: not confirmed (no answer on stdin); pass --yes to purge without a prompt")
