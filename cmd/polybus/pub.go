package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/polybus/polybus/config"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
)

// pubChunk is how many lines of --lines go into one Publish call.
const pubChunk = 100

// maxLine bounds one line of --lines input.
const maxLine = 16 << 20

type pubFlags struct {
	topic   string
	key     string
	id      string
	headers []string
	lines   bool
	timeout time.Duration
}

func (a *app) pubCommand() *cobra.Command {
	var f pubFlags
	cmd := &cobra.Command{
		Use:   "pub --topic TOPIC [--key KEY] [--header NAME=VALUE ...] [--lines] [DATA | -]",
		Short: "Publish messages and print their IDs",
		Long: `Publish one message whose payload is DATA, or stdin when DATA is - or absent
(the whole input is one message). With --lines, every non-empty line of the
input is a message of its own (a trailing \r is dropped), published in order.

pub prints the ID of each message that the broker accepted, one per line.
It returns once the broker has durably accepted every message, or fails.
--id sets the message ID of a single message (the idempotency key that
deduplication uses); by default every message gets a new UUIDv7.`,
		Example: `  polybus pub --topic orders --key ord-1 --header source=web '{"total":42}'
  echo '{"total":42}' | polybus pub --topic orders
  printf 'a\nb\nc\n' | polybus pub --topic letters --lines
  polybus pub --topic orders --id order-1-placed --key ord-1 placed`,
		Args: cobra.MaximumNArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.pub(cmd.Context(), f, args)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.topic, "topic", "", "topic to publish to (required)")
	fl.StringVar(&f.key, "key", "", "message key: orders and partitions, usually an entity ID")
	fl.StringVar(&f.id, "id", "", "message ID of a single message (default: a new UUIDv7)")
	fl.StringArrayVar(&f.headers, "header", nil, "metadata NAME=VALUE; repeat for more")
	fl.BoolVar(&f.lines, "lines", false, "publish each non-empty input line as a message")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up when the broker has not accepted the messages by then")
	_ = cmd.MarkFlagRequired("topic")
	return cmd
}

func (a *app) pub(ctx context.Context, f pubFlags, args []string) error {
	if f.topic == "" {
		return usagef("--topic is empty")
	}
	if f.timeout <= 0 {
		return usagef("--timeout must be above 0")
	}
	md, err := parseHeaders(f.headers)
	if err != nil {
		return err
	}
	if f.id != "" && f.lines {
		return usagef("--id names one message; it cannot be used with --lines")
	}
	var input io.Reader
	if len(args) == 1 && args[0] != "-" {
		if f.lines {
			input = strings.NewReader(args[0])
		} else {
			return a.publishAll(ctx, f, []*message.Message{newMessage(f, md, []byte(args[0]))})
		}
	} else {
		if isTerminal(a.stdin) {
			return usagef("nothing to publish: give DATA, or pipe the payload into stdin (DATA -)")
		}
		input = a.stdin
	}
	cfg, err := a.resolve()
	if err != nil {
		return err
	}
	if !f.lines {
		data, err := io.ReadAll(input)
		if err != nil {
			return fmt.Errorf("reading stdin: %w", err)
		}
		return a.publishWith(ctx, cfg, f, []*message.Message{newMessage(f, md, data)})
	}
	return a.publishLines(ctx, cfg, f, md, input)
}

func newMessage(f pubFlags, md message.Metadata, payload []byte) *message.Message {
	return &message.Message{ID: f.id, Key: f.key, Payload: payload, Metadata: md.Clone()}
}

// parseHeaders reads --header NAME=VALUE flags.
func parseHeaders(hs []string) (message.Metadata, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	md := message.Metadata{}
	for _, h := range hs {
		name, value, ok := strings.Cut(h, "=")
		if !ok || name == "" {
			return nil, usagef("--header %q: want NAME=VALUE", h)
		}
		md[name] = value
	}
	return md, nil
}

func (a *app) publishAll(ctx context.Context, f pubFlags, msgs []*message.Message) error {
	cfg, err := a.resolve()
	if err != nil {
		return err
	}
	return a.publishWith(ctx, cfg, f, msgs)
}

func (a *app) publishWith(ctx context.Context, cfg config.Config, f pubFlags, msgs []*message.Message) error {
	c, err := a.open(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.closeClient(c)
	return a.publishChunk(ctx, c.Publisher(), f, msgs)
}

// publishLines publishes the input's lines in chunks, printing the IDs of
// each chunk once the broker has accepted it.
func (a *app) publishLines(ctx context.Context, cfg config.Config, f pubFlags, md message.Metadata, input io.Reader) error {
	c, err := a.open(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.closeClient(c)
	sc := bufio.NewScanner(input)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var chunk []*message.Message
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" {
			continue
		}
		chunk = append(chunk, newMessage(f, md, []byte(line)))
		if len(chunk) == pubChunk {
			if err := a.publishChunk(ctx, c.Publisher(), f, chunk); err != nil {
				return err
			}
			chunk = nil
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return usagef("an input line is longer than %d bytes", maxLine)
		}
		return fmt.Errorf("reading input: %w", err)
	}
	return a.publishChunk(ctx, c.Publisher(), f, chunk)
}

// publishChunk publishes msgs in one call and prints the IDs that the
// broker accepted.
func (a *app) publishChunk(ctx context.Context, p *publisher.Publisher, f pubFlags, msgs []*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	err := p.Publish(pctx, f.topic, msgs...)
	var pe *publisher.PublishError
	switch {
	case err == nil:
		for _, m := range msgs {
			fmt.Fprintln(a.stdout, m.ID)
		}
		return nil
	case errors.As(err, &pe):
		failed := map[int]bool{}
		for _, fl := range pe.Failed {
			failed[fl.Index] = true
		}
		for i, m := range msgs {
			if !failed[i] {
				fmt.Fprintln(a.stdout, m.ID)
			}
		}
		return err
	case ctx.Err() == nil && pctx.Err() != nil:
		return message.Errorf(message.Unavailable, "publish", "the broker did not accept the messages within --timeout %s (they may still be published)", f.timeout)
	}
	return err
}

// isTerminal reports whether r is an interactive terminal, where reading
// a payload would wait for typing that the user may not mean to do.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	if err != nil {
		return false
	}
	// A character device that is not /dev/null: a terminal, in practice.
	return st.Mode()&os.ModeCharDevice != 0 && f.Name() != os.DevNull && !isDevNull(st)
}

func isDevNull(st os.FileInfo) bool {
	dn, err := os.Stat(os.DevNull)
	return err == nil && os.SameFile(st, dn)
}
