package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// bin is the polybus binary that the tests drive, built once by TestMain
// (with -race when the tests run with it).
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "polybus-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "polybus")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), append(args, ".")...)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building polybus: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// result is what one run of the binary did.
type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d after %s\nstdout:\n%s\nstderr:\n%s", r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// cli runs the binary. Each run gets a clean environment (no POLYBUS_*
// variables, HOME and TMPDIR of the test's own) plus env, in dir (a new
// temporary directory when empty), with stdin as its input, and must finish
// within a minute.
type cli struct {
	t     *testing.T
	dir   string
	env   []string
	stdin string
	tmp   string
}

func newCLI(t *testing.T) *cli {
	t.Helper()
	return &cli{t: t, dir: t.TempDir(), tmp: t.TempDir()}
}

func (c *cli) run(args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = c.dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.tmp, "TMPDIR=" + c.tmp}, c.env...)
	cmd.Stdin = strings.NewReader(c.stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		c.t.Fatalf("polybus %s: %v (ctx: %v)\n%s", strings.Join(args, " "), err, ctx.Err(), r)
	}
	return r
}

// ok runs the binary and fails the test unless it exits 0.
func (c *cli) ok(args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("polybus %s:\n%s", strings.Join(args, " "), r)
	}
	return r
}

// expect runs the binary and checks its exit code and that stderr holds
// every one of want.
func (c *cli) expect(code int, want []string, args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != code {
		c.t.Errorf("polybus %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, code, r)
		return r
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			c.t.Errorf("polybus %s: stderr lacks %q\n%s", strings.Join(args, " "), w, r)
		}
	}
	return r
}

// lines splits output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}
