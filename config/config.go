// Package config is polybus's configuration: which broker to open and how
// long to wait for it, read from a YAML file with named profiles, the
// environment and flags, in the same order of precedence as the polybus
// command. Go programs use it to open the broker that the command would
// open:
//
//	cfg, err := config.Resolve("", "", "") // $POLYBUS_URL, polybus.yaml, default
//	if err != nil { ... }
//	c, err := config.Open(ctx, cfg)
//
// Only the adapters that the program imports can be opened: import
// github.com/polybus/polybus/adapters/nats for embedded:// and nats://.
//
// # Semantics
//
// The broker URL comes from the first of these that gives one:
//
//  1. the --url flag (Resolve's flagURL);
//  2. the environment variable POLYBUS_URL;
//  3. the config file: the selected profile's url, else the file's
//     top-level url;
//  4. DefaultURL, embedded:// (an in-process NATS JetStream server storing
//     its data in ./.polybus).
//
// The config file is the path given (the --config flag), else polybus.yaml
// in the working directory when it exists. The profile is the one given
// (--profile), else $POLYBUS_PROFILE, else the file's top-level "profile"
// key; none means the top-level settings alone. A profile's settings
// override the top-level ones field by field:
//
//	# polybus.yaml
//	url: embedded://./.polybus      # used when no profile is selected
//	connect_timeout: 5s
//	profile: dev                    # the profile used when none is selected
//	profiles:
//	  dev:
//	    url: mem://dev
//	  prod:
//	    url: nats://app:secret@nats.internal:4222
//	    connect_timeout: 10s
//
// # Errors
//
// Every error is a *message.Error. A config file that does not parse,
// has a field that this package does not know (misspellings are errors,
// not silently ignored), a malformed URL or a negative timeout, and an
// unknown profile are message.ErrInvalidArgument, and the message names
// the file and the line. An explicitly named file that does not exist is
// message.ErrNotFound. Open's errors are those of polybus.Open, and
// message.ErrUnavailable when the broker does not answer within
// Config.ConnectTimeout. Passwords in URLs are redacted in every error.
package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
)

// Defaults and the names that Resolve reads.
const (
	// DefaultURL is the broker of a program given no URL: an in-process
	// NATS JetStream server storing its data in ./.polybus.
	DefaultURL = "embedded://"
	// DefaultFile is the config file read from the working directory when
	// no path is given.
	DefaultFile = "polybus.yaml"
	// DefaultConnectTimeout bounds Open when Config.ConnectTimeout is 0.
	DefaultConnectTimeout = 5 * time.Second
	// EnvURL names the environment variable that overrides the file's URL.
	EnvURL = "POLYBUS_URL"
	// EnvProfile names the environment variable that selects a profile.
	EnvProfile = "POLYBUS_PROFILE"
)

// Config is the configuration of one broker connection.
type Config struct {
	// URL names the broker, such as "embedded://./data", "mem://" or
	// "nats://host:4222"; each adapter documents its URL and query
	// parameters. Empty means DefaultURL.
	URL string `yaml:"url"`
	// ConnectTimeout bounds Open: a broker that does not answer within it
	// is an Unavailable error. 0 means DefaultConnectTimeout. YAML takes
	// a Go duration such as "5s" or "1m30s".
	ConnectTimeout time.Duration `yaml:"connect_timeout"`

	// Source says where URL came from, for messages to people: "--url",
	// "$POLYBUS_URL", the file and profile ("polybus.yaml profile dev"),
	// or "default". Load and Resolve set it; it is not read from YAML.
	Source string `yaml:"-"`
}

// file is the config file's layout: the top-level settings, the default
// profile and the profiles.
type file struct {
	Config   `yaml:",inline"`
	Profile  string            `yaml:"profile"`
	Profiles map[string]Config `yaml:"profiles"`
}

// knownFields lists what a config file may hold, for error messages.
const knownFields = "url, connect_timeout, profile, profiles"

// Load reads the config file at path and returns the settings of profile.
//
// An empty path reads DefaultFile from the working directory, and finding
// none there is not an error: Load then returns an empty Config (every
// field at its default) with Source "default". An empty profile selects
// the file's top-level "profile" key, and when that is empty too, the
// top-level settings alone. Load does not read the environment: Resolve
// does.
func Load(path, profile string) (Config, error) {
	const op = "config: load"
	explicit := path != ""
	if !explicit {
		path = DefaultFile
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !explicit {
			if profile != "" {
				return Config{}, message.Errorf(message.InvalidArgument, op,
					"profile %q selected but there is no %s in the working directory (name the file with --config)", profile, DefaultFile)
			}
			return Config{Source: "default"}, nil
		}
		if errors.Is(err, os.ErrNotExist) {
			return Config{}, message.Errorf(message.NotFound, op, "config file %s does not exist", path)
		}
		return Config{}, message.Errorf(message.InvalidArgument, op, "reading config file: %w", err)
	}
	return parse(path, data, profile)
}

// parse decodes a config file strictly and selects profile.
func parse(path string, data []byte, profile string) (Config, error) {
	const op = "config: load"
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, message.Errorf(message.InvalidArgument, op, "%s: %s", path, yamlMessage(err))
	}
	// A second document in the file would be ignored: say so instead.
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return Config{}, message.Errorf(message.InvalidArgument, op, "%s: line %d: a second YAML document; a config file holds one", path, extra.Line)
	}
	cfg := f.Config
	cfg.Source = path
	if profile == "" {
		profile = f.Profile
	}
	if profile != "" {
		p, ok := f.Profiles[profile]
		if !ok {
			return Config{}, message.Errorf(message.InvalidArgument, op, "%s: no profile %q (profiles: %s)", path, profile, profileNames(f.Profiles))
		}
		if p.URL != "" {
			cfg.URL = p.URL
		}
		if p.ConnectTimeout != 0 {
			cfg.ConnectTimeout = p.ConnectTimeout
		}
		cfg.Source = path + " profile " + profile
	}
	// Check every profile, not only the selected one, so that a mistake
	// in prod's settings shows up when dev is in use.
	if err := check(path, "", f.Config); err != nil {
		return Config{}, err
	}
	for _, name := range sortedNames(f.Profiles) {
		if err := check(path, name, f.Profiles[name]); err != nil {
			return Config{}, err
		}
	}
	return cfg, nil
}

// check validates one set of settings.
func check(path, profile string, c Config) error {
	const op = "config: load"
	where := path
	if profile != "" {
		where += " profile " + profile
	}
	if c.URL != "" {
		if _, err := polybus.ParseURL(c.URL); err != nil {
			return message.Errorf(message.InvalidArgument, op, "%s: url: %v", where, err)
		}
	}
	if c.ConnectTimeout < 0 {
		return message.Errorf(message.InvalidArgument, op, "%s: connect_timeout %s is negative", where, c.ConnectTimeout)
	}
	return nil
}

var notFoundField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// yamlMessage turns a yaml.v3 error into one line that keeps its line
// numbers and names the fields a config file may hold.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	var parts []string
	if errors.As(err, &te) {
		parts = te.Errors
	} else {
		parts = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	for i, p := range parts {
		p = notFoundField.ReplaceAllString(p, fmt.Sprintf("unknown field %s (known: %s)", "$1", knownFields))
		p = strings.ReplaceAll(p, "time.Duration", "duration (such as 5s)")
		parts[i] = p
	}
	return strings.Join(parts, "; ")
}

func profileNames(m map[string]Config) string {
	if len(m) == 0 {
		return "none defined"
	}
	return strings.Join(sortedNames(m), ", ")
}

func sortedNames(m map[string]Config) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Resolve returns the configuration that the polybus command uses:
// flagURL when not empty, else $POLYBUS_URL when set, else the URL of
// the config file at path (see Load) and of profile (else
// $POLYBUS_PROFILE), else DefaultURL. The file is read even when flagURL
// or the environment gives the URL, for its other settings, and so a
// broken file is an error whatever the URL's source.
func Resolve(flagURL, path, profile string) (Config, error) {
	if profile == "" {
		profile = os.Getenv(EnvProfile)
	}
	cfg, err := Load(path, profile)
	if err != nil {
		return Config{}, err
	}
	if env := os.Getenv(EnvURL); env != "" {
		cfg.URL, cfg.Source = env, "$"+EnvURL
	}
	if flagURL != "" {
		cfg.URL, cfg.Source = flagURL, "--url"
	}
	if cfg.URL == "" {
		cfg.URL, cfg.Source = DefaultURL, "default"
	}
	if _, err := polybus.ParseURL(cfg.URL); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// lateClose is how long Open waits, past its deadline, for an adapter
// whose Opener does not honour its context, before giving up on it.
const lateClose = time.Second

// Open opens the broker of cfg (DefaultURL when cfg.URL is empty), waiting
// at most cfg.ConnectTimeout (DefaultConnectTimeout when 0) for it.
//
// A broker that does not answer in time is message.ErrUnavailable naming
// the (redacted) URL and the timeout. Open returns by then even if the
// adapter does not honour its context; a client that such an adapter
// opens later is closed at once.
func Open(ctx context.Context, cfg Config, opts ...polybus.OpenOption) (*polybus.Client, error) {
	const op = "open"
	raw := cfg.URL
	if raw == "" {
		raw = DefaultURL
	}
	timeout := cfg.ConnectTimeout
	if timeout == 0 {
		timeout = DefaultConnectTimeout
	}
	if timeout < 0 {
		return nil, message.Errorf(message.InvalidArgument, op, "negative connect timeout %s", timeout)
	}
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	type result struct {
		c   *polybus.Client
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := polybus.Open(octx, raw, opts...)
		done <- result{c, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-octx.Done():
		t := time.NewTimer(lateClose)
		select {
		case r = <-done:
			t.Stop()
		case <-t.C:
			// The adapter ignores its context: let it finish on its own
			// and close what it opens.
			go func() {
				if late := <-done; late.c != nil {
					_ = late.c.Close(context.Background())
				}
			}()
			r.err = octx.Err()
		}
	}
	if r.err != nil {
		if ctx.Err() == nil && octx.Err() != nil && message.CodeOf(r.err) != message.InvalidArgument {
			// Our deadline ended the attempt: say so with our timeout,
			// which the adapter's message may not know.
			e := message.Errorf(message.Unavailable, op, "no answer from %s within %s", polybus.Redact(raw), timeout)
			e.Err = r.err
			return nil, e
		}
		return nil, r.err
	}
	return r.c, nil
}
