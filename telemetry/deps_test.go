package telemetry_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCoreImportsNoOpenTelemetry is the build check of the hooks' promise:
// an application that does not import package telemetry links none of
// OpenTelemetry. The list is every package outside telemetry that an
// application links (the CLI may, for `polybus bench --trace`).
func TestCoreImportsNoOpenTelemetry(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	core := []string{
		"github.com/polybus/polybus",
		"github.com/polybus/polybus/message",
		"github.com/polybus/polybus/publisher",
		"github.com/polybus/polybus/subscriber",
		"github.com/polybus/polybus/middleware/...",
		"github.com/polybus/polybus/adapters/...",
		"github.com/polybus/polybus/bus",
		"github.com/polybus/polybus/saga",
		"github.com/polybus/polybus/outbox",
		"github.com/polybus/polybus/projection",
		"github.com/polybus/polybus/eventstore/...",
		"github.com/polybus/polybus/config",
	}
	out, err := exec.Command("go", append([]string{"list", "-deps"}, core...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	var otel []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "go.opentelemetry.io/") {
			otel = append(otel, p)
		}
	}
	if len(otel) > 0 {
		t.Errorf("the core packages import OpenTelemetry: %s", strings.Join(otel, " "))
	}
	if !strings.Contains(string(out), "github.com/polybus/polybus/adapters/kafka\n") {
		t.Errorf("go list -deps did not list the adapters:\n%s", out)
	}
}
