package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// demoTimeout bounds the whole demo: a broker that loses messages makes it
// fail, not hang.
const demoTimeout = time.Minute

func (a *app) demoCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "demo [--url URL]",
		Short: "Play an order flow end to end: retry, dead letters, dedupe, ordering",
		Long: `Play an order flow end to end and narrate it.

An order service publishes OrderPlaced and OrderPaid events for four orders to
the topic "orders", keyed by order ID and stamped with per-key sequence
numbers; two OrderPaid events are deliberately published before their
OrderPlaced. Four consumers in their own groups (payment, inventory,
notification, analytics) react, each behind the same middleware:
dead-lettering, deduplication, ordering and retry. Inventory cannot handle one
order (a product missing from its catalogue): it is retried and dead-lettered
to "orders.dlq". Notification loses the ack of one message, as a consumer that
crashes after its work and before its ack would: the broker delivers it again,
and deduplication absorbs it. The ordering buffer puts the early OrderPaid
events back behind their OrderPlaced. A summary ends the run.

With no --url, $POLYBUS_URL or config file, the demo runs on embedded:// in a
fresh temporary directory (removed afterwards), so that every run starts clean
and prints the same figures. On a broker named by --url, $POLYBUS_URL or the
config file, its topics are prefixed with "demo-" and a random suffix.`,
		Example: `  polybus demo
  polybus demo --url mem://
  polybus demo --url nats://localhost:4222`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.demo(cmd.Context())
		}),
	}
}

func (a *app) demo(ctx context.Context) error {
	cfg, err := a.resolve()
	if err != nil {
		return err
	}
	where := a.redactURL(cfg.URL)
	prefix := ""
	if cfg.Source == "default" {
		dir, err := os.MkdirTemp("", "polybus-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.URL = "embedded://" + dir
		where = "embedded:// (in-process NATS JetStream, in a fresh temporary directory)"
	} else if !privateBroker(cfg.URL) {
		prefix = "demo-" + randomHex(4) + "."
	}
	c, err := a.open(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.closeClient(c)
	ctx, cancel := context.WithTimeout(ctx, demoTimeout)
	defer cancel()
	fmt.Fprintf(a.stdout, "polybus demo: an order flow on %s\n", where)
	if prefix != "" {
		fmt.Fprintf(a.stdout, "topics are prefixed %q so that this run starts clean\n", prefix)
	}
	d := newDemo(c, prefix, a.stdout, a.verbose)
	if err := d.run(ctx); err != nil {
		return err
	}
	switch {
	case cfg.Source == "default":
		fmt.Fprintf(a.stdout, "\nnext: polybus demo --url nats://HOST:4222 runs it on your broker; polybus --help lists the commands\n")
	case !privateBroker(cfg.URL):
		fmt.Fprintf(a.stdout, "\nnext: polybus dlq ls --url %s --topic %s\n", shellQuote(a.redactURL(cfg.URL)), d.dlqTopic)
	}
	return nil
}

// shellQuote quotes s for a shell when it needs it.
func shellQuote(s string) string {
	if strings.ContainsAny(s, " '\"$&;|<>()*?![]{}~#`\\") {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	return s
}

// privateBroker reports whether rawURL opens a broker of its own that no
// earlier run can have used (mem:// without a name).
func privateBroker(rawURL string) bool {
	u, err := url.Parse(rawURL)
	return err == nil && u.Scheme == "mem" && u.Host == "" && (u.Path == "" || u.Path == "/")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
