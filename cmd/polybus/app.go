package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/config"
	"github.com/polybus/polybus/message"
)

// app holds one run of the command line: its files, the global flags and
// what the redaction of its output must hide.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	url            string
	configPath     string
	profile        string
	connectTimeout time.Duration
	verbose        bool

	// running is set when a command's own code starts: an error before
	// that is the command line's (a flag, an argument), exit code 2.
	running bool
	// failed is the path of the command that ran or failed to parse, for
	// the usage hint.
	failed string
	// secrets are strings that never reach the output: passwords and
	// tokens of the broker URLs in play.
	secrets []string
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *app {
	return &app{stdin: stdin, stdout: stdout, stderr: stderr, failed: "polybus"}
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "polybus",
		Short: "Publish, consume and inspect messages on any polybus broker",
		Long: `polybus publishes, consumes and inspects messages on any broker that polybus
supports, runs the order-flow demo, and proves a broker's delivery semantics
with the conformance suite.

Broker: --url, else $POLYBUS_URL, else the config file (--config FILE, or
polybus.yaml in the working directory; profile from --profile, else
$POLYBUS_PROFILE, else the file's "profile" key), else embedded://, an
in-process NATS JetStream server that stores its data in ./.polybus.

Config file (polybus.yaml):
  url: embedded://./.polybus
  connect_timeout: 5s
  profiles:
    dev:  {url: "mem://dev"}
    prod: {url: "nats://app:secret@nats.internal:4222", connect_timeout: 10s}

Schemes built in: ` + strings.Join(polybus.Schemes(), ", ") + `. Passwords and tokens in URLs are
shown as xxxxx in every line polybus prints.

` + exitCodesHelp,
		Example: `  polybus demo
  polybus pub --topic orders --key ord-1 '{"total":42}'
  polybus sub --topic orders --group audit --count 1 --json
  POLYBUS_URL=nats://localhost:4222 polybus dlq ls --topic orders.dlq`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			a.failed = cmd.CommandPath()
			level := slog.LevelWarn
			if a.verbose {
				level = slog.LevelDebug
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(redactWriter{a, a.stderr}, &slog.HandlerOptions{Level: level})))
			return nil
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		a.failed = c.CommandPath()
		return usageError{err}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.url, "url", "", "broker URL (default $POLYBUS_URL, then the config file, then embedded://)")
	pf.StringVar(&a.configPath, "config", "", "config file (default ./polybus.yaml when it exists)")
	pf.StringVar(&a.profile, "profile", "", "config file profile (default $POLYBUS_PROFILE, then the file's profile key)")
	pf.DurationVar(&a.connectTimeout, "connect-timeout", 0, "how long to wait for the broker to answer (default 5s, or the config file's connect_timeout)")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "log polybus's info and debug lines to stderr")

	root.AddCommand(a.demoCommand(), a.pubCommand(), a.subCommand(), a.dlqCommand(), a.conformanceCommand(), a.eventsCommand(), a.sagaCommand(), a.benchCommand(), a.schemaCommand())
	return root
}

// runE wraps a command's code, marking the start of its run: errors after
// it are the command's own, not the command line's.
func (a *app) runE(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.running = true
		a.failed = cmd.CommandPath()
		if a.connectTimeout < 0 {
			return usagef("--connect-timeout %s is negative", a.connectTimeout)
		}
		return f(cmd, args)
	}
}

// resolve returns the configuration of this run (see package config) and
// remembers the credentials of every URL involved, to redact them.
func (a *app) resolve() (config.Config, error) {
	a.hide(a.url)
	a.hide(os.Getenv(config.EnvURL))
	cfg, err := config.Resolve(a.url, a.configPath, a.profile)
	if err != nil {
		// A config file or profile that is missing or wrong is a usage
		// error, whatever code package config gives it.
		return cfg, usageError{err}
	}
	a.hide(cfg.URL)
	if a.connectTimeout > 0 {
		cfg.ConnectTimeout = a.connectTimeout
	}
	return cfg, nil
}

// connect resolves this run's configuration and opens its broker.
func (a *app) connect(ctx context.Context) (*polybus.Client, error) {
	cfg, err := a.resolve()
	if err != nil {
		return nil, err
	}
	return a.open(ctx, cfg)
}

// open opens the broker of cfg within its connect timeout. Its errors
// name the (redacted) URL and where it came from, since the adapter's may
// name only a host, or nothing.
func (a *app) open(ctx context.Context, cfg config.Config) (*polybus.Client, error) {
	a.hide(cfg.URL)
	c, err := config.Open(ctx, cfg)
	if err == nil {
		return c, nil
	}
	what := "broker URL"
	if message.CodeOf(err) == message.Unavailable {
		what = "cannot reach the broker"
	}
	where := a.redactURL(cfg.URL)
	if strings.Contains(a.redact(err.Error()), where) {
		where = "" // already named
	} else {
		where += " "
	}
	return nil, prefixed{fmt.Sprintf("%s %s(from %s): ", what, where, cfg.Source), err}
}

// prefixed is an error with context in front, without repeating the
// "polybus: " of the error it wraps.
type prefixed struct {
	prefix string
	err    error
}

func (p prefixed) Error() string {
	return p.prefix + strings.TrimPrefix(p.err.Error(), "polybus: ")
}

func (p prefixed) Unwrap() error { return p.err }

// closeClient closes c, giving in-flight work a bounded time.
func (a *app) closeClient(c *polybus.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		fmt.Fprintln(a.stderr, a.redact("polybus: closing the client: "+err.Error()))
	}
}

// hide remembers the secrets of rawURL: its password, a user name given
// without a password (NATS reads nats://TOKEN@host as a token), and the
// values of query parameters that name credentials.
func (a *app) hide(rawURL string) {
	if rawURL == "" {
		return
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// Unparsable: hide what sits between "://" and "@".
		if i := strings.Index(rawURL, "://"); i >= 0 {
			if j := strings.LastIndex(rawURL, "@"); j > i+3 {
				a.addSecret(rawURL[i+3 : j])
			}
		}
		return
	}
	if u.User != nil {
		if pw, ok := u.User.Password(); ok {
			a.addSecret(pw)
		} else {
			a.addSecret(u.User.Username())
		}
	}
	for k, vs := range u.Query() {
		lk := strings.ToLower(k)
		if strings.Contains(lk, "pass") || strings.Contains(lk, "token") || strings.Contains(lk, "secret") || strings.Contains(lk, "credential") {
			for _, v := range vs {
				a.addSecret(v)
			}
		}
	}
}

func (a *app) addSecret(s string) {
	// Very short strings would blank out ordinary words.
	if len(s) < 3 {
		return
	}
	a.secrets = append(a.secrets, s, url.QueryEscape(s), url.PathEscape(s), url.UserPassword("", s).String()[1:])
}

// redact hides the remembered secrets in s.
func (a *app) redact(s string) string {
	for _, sec := range a.secrets {
		if len(sec) >= 3 {
			s = strings.ReplaceAll(s, sec, "xxxxx")
		}
	}
	return s
}

// redactURL returns rawURL fit to print.
func (a *app) redactURL(rawURL string) string {
	a.hide(rawURL)
	if u, err := url.Parse(rawURL); err == nil && u.User == nil {
		// As written: url.URL.String would turn mem:// into mem:.
		return a.redact(rawURL)
	}
	return a.redact(polybus.Redact(rawURL))
}

// redactWriter redacts what goes through it: the library's log lines.
type redactWriter struct {
	a *app
	w io.Writer
}

func (r redactWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(r.w, r.a.redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
