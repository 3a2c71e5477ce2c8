package nats_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/conformance"
	"github.com/polybus/polybus/internal/brokertest"
)

// TestConformanceEmbedded runs the suite against embedded://, the
// zero-setup default, as `polybus conformance --url embedded://DIR` does.
// Every client of the run shares one in-process server.
func TestConformanceEmbedded(t *testing.T) {
	conformance.Run(t, conformance.URLHarness("embedded://"+t.TempDir()))
}

// TestConformanceRestart runs the suite over nats:// against a nats-server
// that the test starts in-process with a TCP listener, and can therefore
// restart: the suite's BrokerRestart test runs.
func TestConformanceRestart(t *testing.T) {
	ns := startNATS(t)
	conformance.Run(t, &restartHarness{
		Harness: conformance.URLHarness(ns.url("reconnect_wait=50ms")),
		restart: func(context.Context) error { ns.restart(); return nil },
	})
}

// TestConformanceExternal runs the suite against the NATS server of
// scripts/brokers (POLYBUS_NATS_URL). Its BrokerRestart test restarts that
// server with `scripts/brokers restart nats` only when
// POLYBUS_NATS_RESTART=1: the server is shared, and a restart would upset
// other packages' tests running against it at the same time.
func TestConformanceExternal(t *testing.T) {
	u := brokertest.URL(t, "nats")
	h := conformance.URLHarness(withQuery(u, "reconnect_wait=100ms"))
	script := brokersScript()
	if script == "" || os.Getenv("POLYBUS_NATS_RESTART") != "1" {
		conformance.Run(t, h)
		return
	}
	conformance.Run(t, &restartHarness{Harness: h, restart: func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, script, "restart", "nats").CombinedOutput()
		if err != nil {
			return fmt.Errorf("scripts/brokers restart nats: %v\n%s", err, out)
		}
		return nil
	}})
}

// restartHarness adds a Restarter to a harness.
type restartHarness struct {
	conformance.Harness
	mu      sync.Mutex
	restart func(context.Context) error
}

func (h *restartHarness) Open(ctx context.Context) (*polybus.Client, error) {
	return h.Harness.Open(ctx)
}

func (h *restartHarness) Restart(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.restart(ctx)
}

// IgnoreGoroutines names the goroutines of the in-process nats-server,
// which outlive the suite's clients: the server is the test's, not theirs.
func (h *restartHarness) IgnoreGoroutines() []goleak.Option {
	return serverGoroutines()
}

// serverGoroutines returns options that ignore every goroutine now running
// nats-server code, by a nats-server function on its stack.
func serverGoroutines() []goleak.Option {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	const prefix = "github.com/nats-io/nats-server/v2/"
	seen := map[string]bool{}
	var opts []goleak.Option
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, line := range strings.Split(g, "\n") {
			if !strings.HasPrefix(line, prefix) {
				continue
			}
			fn := line
			if i := strings.LastIndexByte(fn, '('); i > 0 {
				fn = fn[:i]
			}
			if !seen[fn] {
				seen[fn] = true
				opts = append(opts, goleak.IgnoreAnyFunction(fn))
			}
			break
		}
	}
	return opts
}

// brokersScript returns the path of scripts/brokers, or "".
func brokersScript() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	p := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "brokers")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}
