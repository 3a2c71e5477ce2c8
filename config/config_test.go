package config_test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/config"
	"github.com/polybus/polybus/message"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hang is an opener that ignores its context until its test releases it,
// as a badly written adapter would; hangs holds the current test's
// channels, so that the test can run more than once (-count).
type hangState struct {
	release chan struct{}
	closed  chan struct{}
	opened  atomic.Int32
}

var hangs atomic.Pointer[hangState]

func init() {
	polybus.Register("cfgtest-hang", func(ctx context.Context, u *url.URL) (*polybus.Client, error) {
		h := hangs.Load()
		<-h.release
		b, err := memory.New(memory.Options{})
		if err != nil {
			return nil, err
		}
		h.opened.Add(1)
		return b.Client(polybus.ClientOptions{Close: func() error { close(h.closed); return nil }})
	})
	polybus.Register("cfgtest-slow", func(ctx context.Context, u *url.URL) (*polybus.Client, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
}

func write(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "polybus.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const sample = `# top-level settings
url: embedded://./data
connect_timeout: 3s
profiles:
  dev:
    url: mem://dev
  prod:
    url: nats://app:s3cret@nats.internal:4222
    connect_timeout: 10s
`

func TestLoadProfiles(t *testing.T) {
	p := write(t, sample)
	for _, tc := range []struct {
		profile string
		want    config.Config
	}{
		{"", config.Config{URL: "embedded://./data", ConnectTimeout: 3 * time.Second, Source: p}},
		{"dev", config.Config{URL: "mem://dev", ConnectTimeout: 3 * time.Second, Source: p + " profile dev"}},
		{"prod", config.Config{URL: "nats://app:s3cret@nats.internal:4222", ConnectTimeout: 10 * time.Second, Source: p + " profile prod"}},
	} {
		got, err := config.Load(p, tc.profile)
		if err != nil {
			t.Fatalf("profile %q: %v", tc.profile, err)
		}
		if got != tc.want {
			t.Errorf("profile %q: got %+v, want %+v", tc.profile, got, tc.want)
		}
	}
}

func TestLoadDefaultProfileKey(t *testing.T) {
	p := write(t, "profile: dev\nurl: mem://top\nprofiles:\n  dev:\n    url: mem://dev\n")
	got, err := config.Load(p, "")
	if err != nil {
		t.Fatal(err)
	}
	if got.URL != "mem://dev" {
		t.Errorf("URL = %q, want the default profile's mem://dev", got.URL)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text, profile string
		want                []string
	}{
		{"unknown field", "url: mem://\nconect_timeout: 3s\n", "",
			[]string{"line 2", `unknown field conect_timeout`, "known: url, connect_timeout, profile, profiles"}},
		{"unknown field in profile", "profiles:\n  dev:\n    url: mem://\n    urll: x\n", "",
			[]string{"line 4", "unknown field urll"}},
		{"bad duration", "connect_timeout: soon\n", "", []string{"line 1", "duration"}},
		{"syntax", "url: [mem://\n", "", []string{"line"}},
		{"unknown profile", sample, "staging", []string{`no profile "staging"`, "profiles: dev, prod"}},
		{"malformed url in another profile", "profiles:\n  dev:\n    url: mem://\n  prod:\n    url: \"nats://a b:4222\"\n", "dev",
			[]string{"profile prod", "malformed URL"}},
		{"no scheme", "url: just-a-host\n", "", []string{"url", "no scheme"}},
		{"negative timeout", "connect_timeout: -1s\n", "", []string{"negative"}},
		{"two documents", "url: mem://\n---\nurl: mem://x\n", "", []string{"line 2", "second YAML document"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := write(t, tc.text)
			_, err := config.Load(p, tc.profile)
			if !errors.Is(err, message.ErrInvalidArgument) {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestLoadRedactsPasswordInErrors(t *testing.T) {
	p := write(t, "url: \"nats://app:s3cret@host:4222/%zz\"\n")
	_, err := config.Load(p, "")
	if err == nil {
		t.Fatal("no error for a malformed URL")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error shows the password: %v", err)
	}
}

func TestLoadMissingFiles(t *testing.T) {
	t.Chdir(t.TempDir())
	got, err := config.Load("", "")
	if err != nil || got != (config.Config{Source: "default"}) {
		t.Fatalf("no polybus.yaml: got %+v, %v; want the empty default", got, err)
	}
	if _, err := config.Load("", "dev"); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("profile without a file: err = %v, want InvalidArgument", err)
	}
	if _, err := config.Load("nope.yaml", ""); !errors.Is(err, message.ErrNotFound) {
		t.Errorf("named file missing: err = %v, want NotFound", err)
	}
}

func TestResolvePrecedence(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile(config.DefaultFile, []byte(sample), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(config.EnvURL, "")
	t.Setenv(config.EnvProfile, "")

	check := func(flagURL, profile, wantURL, wantSource string) {
		t.Helper()
		got, err := config.Resolve(flagURL, "", profile)
		if err != nil {
			t.Fatal(err)
		}
		if got.URL != wantURL || got.Source != wantSource {
			t.Errorf("Resolve(%q, %q) = %q from %q, want %q from %q", flagURL, profile, got.URL, got.Source, wantURL, wantSource)
		}
	}
	check("", "", "embedded://./data", "polybus.yaml")
	check("", "dev", "mem://dev", "polybus.yaml profile dev")
	t.Setenv(config.EnvProfile, "prod")
	check("", "", "nats://app:s3cret@nats.internal:4222", "polybus.yaml profile prod")
	check("", "dev", "mem://dev", "polybus.yaml profile dev") // the flag wins over the env
	t.Setenv(config.EnvURL, "mem://env")
	check("", "", "mem://env", "$POLYBUS_URL")
	check("mem://flag", "", "mem://flag", "--url")

	if err := os.Remove(config.DefaultFile); err != nil {
		t.Fatal(err)
	}
	t.Setenv(config.EnvURL, "")
	t.Setenv(config.EnvProfile, "")
	check("", "", config.DefaultURL, "default")

	if _, err := config.Resolve("://nope", "", ""); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("malformed flag URL: err = %v, want InvalidArgument", err)
	}
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	c, err := config.Open(ctx, config.Config{URL: "mem://"})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Capabilities().Name; got != "memory" {
		t.Errorf("opened %q, want memory", got)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	_, err = config.Open(ctx, config.Config{URL: "nosuch://x"})
	if !errors.Is(err, message.ErrInvalidArgument) || !strings.Contains(err.Error(), "mem") {
		t.Errorf("unknown scheme: err = %v, want InvalidArgument listing the known schemes", err)
	}
}

func TestOpenTimeout(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	_, err := config.Open(ctx, config.Config{URL: "cfgtest-slow://u:pw@host", ConnectTimeout: 50 * time.Millisecond})
	if !errors.Is(err, message.ErrUnavailable) {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v does not wrap the deadline", err)
	}
	if strings.Contains(err.Error(), "pw@") || !strings.Contains(err.Error(), "50ms") {
		t.Errorf("err = %q: want the timeout named and the password redacted", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Open took %s", d)
	}
}

func TestOpenGivesUpOnAnOpenerThatHangs(t *testing.T) {
	h := &hangState{release: make(chan struct{}), closed: make(chan struct{})}
	hangs.Store(h)
	_, err := config.Open(context.Background(), config.Config{URL: "cfgtest-hang://", ConnectTimeout: 20 * time.Millisecond})
	if !errors.Is(err, message.ErrUnavailable) {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	// The opener finishes later: its client must be closed, not leaked.
	close(h.release)
	select {
	case <-h.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the late client was not closed")
	}
	if n := h.opened.Load(); n != 1 {
		t.Errorf("opened %d late clients, want 1", n)
	}
}
