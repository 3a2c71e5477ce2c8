package kafka_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/polybus/polybus/conformance"
)

// conformanceQuery is the suite's URL options: six partitions, so that
// competing consumers and the scale-out tests share work; the shortest
// session the broker allows by default (group.min.session.timeout.ms is
// 6s), for quick failover.
const conformanceQuery = "partitions=6&session_timeout=6s&heartbeat_interval=500ms"

// TestConformance runs the suite against the Kafka of scripts/brokers
// (POLYBUS_KAFKA_URL). Its BrokerRestart test restarts that broker with
// `scripts/brokers restart kafka` only when POLYBUS_KAFKA_RESTART=1: the
// broker is shared, and a restart would upset other tests running against
// it at the same time.
func TestConformance(t *testing.T) {
	h := &harness{Harness: conformance.URLHarness(kafkaURL(t, conformanceQuery))}
	script := brokersScript()
	if script == "" || os.Getenv("POLYBUS_KAFKA_RESTART") != "1" {
		conformance.Run(t, h)
		return
	}
	conformance.Run(t, &restartHarness{harness: h, script: script})
}

// harness is URLHarness plus conformance.Rebalancer: Kafka redelivers the
// uncommitted messages of a partition that changes owner.
type harness struct {
	conformance.Harness
}

func (h *harness) RedeliversOnRebalance() bool { return true }

// restartHarness adds a Restarter that restarts the shared broker.
type restartHarness struct {
	*harness
	mu     sync.Mutex
	script string
}

func (h *restartHarness) Restart(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	out, err := exec.CommandContext(ctx, h.script, "restart", "kafka").CombinedOutput()
	if err != nil {
		return fmt.Errorf("scripts/brokers restart kafka: %v\n%s", err, out)
	}
	return nil
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
