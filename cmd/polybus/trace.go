package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
)

// defaultTraceGroup is the consumer group that trace reads topics with.
const defaultTraceGroup = "polybus-trace"

type traceFlags struct {
	topics []string
	group  string
	noDLQ  bool
	wait   time.Duration
	max    int
}

const traceLong = `Show the causal chain of message ID from what the broker still holds.

trace reads every --topic (as consumer group polybus-trace, --group) and each
one's dead-letter topic TOPIC.dlq (as polybus-dlq, like the dlq commands;
--no-dlq skips them), holding what it reads unacked until nothing has arrived
for --wait, and then hands everything back: nothing is consumed.

It then walks the lineage that middleware.Correlation writes: each message's
polybus-causation-id names the message whose handler published it, and
polybus-correlation-id the flow. It prints the chain from the oldest known
cause of ID down to everything ID caused, one message per line, indented by
generation, ID marked with *; then the other messages of the same flow
(correlation) or trace. A dead letter keeps its message's ID, so a message and
its dead letter print as two lines of one generation.

Line format:   [*]ID topic=TOPIC key=KEY time=TIME [trace=TRACE] [dlq=REASON]

Only what the broker holds shows: a log broker (Kafka, NATS JetStream, the
memory broker) keeps every message for a new group, within its retention; on
RabbitMQ and SQS a new group gets only what is published after it exists, so
there trace sees dead letters (read as polybus-dlq) and what the polybus-trace
group was sent since its first use.

Exit status 5 when ID is in none of the topics read.`

func (a *app) traceCommand() *cobra.Command {
	var f traceFlags
	cmd := &cobra.Command{
		Use:   "trace ID --topic TOPIC [--topic TOPIC ...] [--no-dlq] [--wait D] [--max N]",
		Short: "Show a message's causal chain (causation and correlation IDs) from what the broker holds",
		Long:  traceLong,
		Example: `  polybus trace 0199a5c3-7c1e-7b1a-9d7e-2f3c4b5a6d7e --topic orders --topic shipping
  polybus trace ord-1-placed --topic orders --no-dlq --wait 3s`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.trace(cmd.Context(), args[0], f)
		}),
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.topics, "topic", nil, "topic to read; repeat for more (required)")
	fl.StringVar(&f.group, "group", defaultTraceGroup, "consumer group that reads the topics")
	fl.BoolVar(&f.noDLQ, "no-dlq", false, "do not read the topics' dead-letter topics (TOPIC.dlq)")
	fl.DurationVar(&f.wait, "wait", time.Second, "stop reading a topic once nothing has arrived for this long")
	fl.IntVar(&f.max, "max", 10000, "read at most this many messages of each topic")
	_ = cmd.MarkFlagRequired("topic")
	return cmd
}

func (a *app) trace(ctx context.Context, id string, f traceFlags) error {
	switch {
	case id == "":
		return usagef("the message ID is empty")
	case len(f.topics) == 0:
		return usagef("--topic is required")
	}
	if err := checkScan(f.group, f.wait, f.max); err != nil {
		return err
	}
	scans := make([]scanOptions, 0, 2*len(f.topics))
	seen := map[string]bool{}
	add := func(topic, group string) {
		if !seen[topic] {
			seen[topic] = true
			scans = append(scans, scanOptions{topic: topic, group: group, idle: f.wait, max: f.max})
		}
	}
	for _, t := range f.topics {
		if t == "" {
			return usagef("--topic is empty")
		}
		if strings.HasSuffix(t, middleware.DefaultDLQSuffix) {
			add(t, defaultDLQGroup)
			continue
		}
		add(t, f.group)
		if !f.noDLQ {
			add(t+middleware.DefaultDLQSuffix, defaultDLQGroup)
		}
	}
	c, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer a.closeClient(c)
	var all []*message.Message
	for _, s := range scans {
		msgs, err := readHeld(ctx, c, s)
		if err != nil {
			return err
		}
		all = append(all, msgs...)
	}
	l := newLineage(all)
	if len(l.byID[id]) == 0 {
		read := make([]string, len(scans))
		for i, s := range scans {
			read[i] = s.topic
		}
		return message.Errorf(message.NotFound, "trace", "message %q is in none of %s (%d messages read)", id, strings.Join(read, ", "), len(all))
	}
	return l.print(a.stdout, id)
}

// readHeld reads what s's group holds of s's topic and hands it all back.
func readHeld(ctx context.Context, c *polybus.Client, s scanOptions) ([]*message.Message, error) {
	var msgs []*message.Message
	err := scanDLQ(ctx, c, s, func(_ context.Context, res scanResult) ([]bool, error) {
		msgs = res.msgs
		return nil, nil
	})
	return msgs, err
}

// lineage indexes messages by ID and by the ID of their cause.
type lineage struct {
	byID     map[string][]*message.Message
	children map[string][]string
	order    []string // IDs in the order first read
}

func newLineage(msgs []*message.Message) *lineage {
	l := &lineage{byID: map[string][]*message.Message{}, children: map[string][]string{}}
	for _, m := range msgs {
		if len(l.byID[m.ID]) == 0 {
			l.order = append(l.order, m.ID)
			if cause := m.Metadata.Get(message.KeyCausationID); cause != "" && cause != m.ID {
				l.children[cause] = append(l.children[cause], m.ID)
			}
		}
		l.byID[m.ID] = append(l.byID[m.ID], m)
	}
	for _, kids := range l.children {
		sort.SliceStable(kids, func(i, j int) bool { return l.byID[kids[i]][0].Time.Before(l.byID[kids[j]][0].Time) })
	}
	return l
}

// root returns the oldest known cause of id: its causation chain followed
// up while the broker holds the cause.
func (l *lineage) root(id string) string {
	seen := map[string]bool{id: true}
	for {
		cause := l.byID[id][0].Metadata.Get(message.KeyCausationID)
		if cause == "" || seen[cause] || len(l.byID[cause]) == 0 {
			return id
		}
		seen[cause] = true
		id = cause
	}
}

func (l *lineage) print(w io.Writer, id string) error {
	m := l.byID[id][0]
	flow := m.Metadata.Get(message.KeyCorrelationID)
	traceID := message.TraceID(m.Metadata)
	var b strings.Builder
	fmt.Fprintf(&b, "message %s", id)
	if flow != "" {
		fmt.Fprintf(&b, " correlation=%s", quoteIfNeeded(flow))
	}
	if traceID != "" {
		fmt.Fprintf(&b, " trace=%s", traceID)
	}
	b.WriteString("\n")
	root := l.root(id)
	if cause := l.byID[root][0].Metadata.Get(message.KeyCausationID); cause != "" {
		fmt.Fprintf(&b, "caused by %s (not held by the topics read)\n", cause)
	}
	shown := map[string]bool{}
	var walk func(id string, depth int)
	walk = func(cur string, depth int) {
		if shown[cur] {
			return
		}
		shown[cur] = true
		for _, m := range l.byID[cur] {
			writeLineageLine(&b, m, depth, cur == id)
		}
		for _, kid := range l.children[cur] {
			walk(kid, depth+1)
		}
	}
	walk(root, 0)
	var others []string
	for _, oid := range l.order {
		if shown[oid] {
			continue
		}
		om := l.byID[oid][0]
		if (flow != "" && om.Metadata.Get(message.KeyCorrelationID) == flow) ||
			(traceID != "" && message.TraceID(om.Metadata) == traceID) {
			others = append(others, oid)
		}
	}
	if len(others) > 0 {
		b.WriteString("also in this flow or trace:\n")
		for _, oid := range others {
			for _, m := range l.byID[oid] {
				writeLineageLine(&b, m, 0, false)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeLineageLine(b *strings.Builder, m *message.Message, depth int, mark bool) {
	d, _ := m.Delivery()
	b.WriteString(strings.Repeat("  ", depth))
	if mark {
		b.WriteString("*")
	}
	fmt.Fprintf(b, "%s topic=%s key=%s time=%s", m.ID, quoteIfNeeded(d.Topic), quoteIfNeeded(m.Key), m.Time.UTC().Format(time.RFC3339Nano))
	if id := message.TraceID(m.Metadata); id != "" {
		fmt.Fprintf(b, " trace=%s", id)
	}
	if r := m.Metadata.Get(message.KeyDLQReason); r != "" {
		fmt.Fprintf(b, " dlq=%s", quoteIfNeeded(r))
	}
	b.WriteString("\n")
}
