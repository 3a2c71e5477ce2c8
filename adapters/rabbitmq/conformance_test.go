package rabbitmq_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/conformance"
	"github.com/polybus/polybus/internal/brokertest"
)

// TestConformance runs the suite against the RabbitMQ of scripts/brokers
// (POLYBUS_AMQP_URL) in the default, ordered layout. Its BrokerRestart test
// restarts that broker with `scripts/brokers restart rabbitmq` only when
// POLYBUS_RABBITMQ_RESTART=1: the broker is shared, and a restart would
// upset other packages' tests running against it at the same time. It
// keeps the default mandatory publishing: a publish that no group receives
// is ErrNotFound, which the suite's readiness probes retry.
func TestConformance(t *testing.T) {
	u := brokertest.URL(t, "rabbitmq")
	conformance.Run(t, harness(u, "reconnect_wait=200ms"))
}

// TestConformanceUnordered runs the suite in the unordered layout with
// classic queues.
func TestConformanceUnordered(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	u := brokertest.URL(t, "rabbitmq")
	conformance.Run(t, harness(u, "reconnect_wait=200ms&allow_unroutable=true&ordered=false&queue_type=classic"))
}

func harness(u, query string) conformance.Harness {
	h := conformance.URLHarness(withQuery(u, query))
	script := brokersScript()
	if script == "" || os.Getenv("POLYBUS_RABBITMQ_RESTART") != "1" {
		return h
	}
	return &restartHarness{Harness: h, restart: func(ctx context.Context) error {
		out, err := exec.CommandContext(ctx, script, "restart", "rabbitmq").CombinedOutput()
		if err != nil {
			return fmt.Errorf("scripts/brokers restart rabbitmq: %v\n%s", err, out)
		}
		return nil
	}}
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
