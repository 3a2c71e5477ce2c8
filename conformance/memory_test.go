package conformance_test

import (
	"testing"

	"go.uber.org/goleak"

	_ "github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/conformance"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestMemory runs the suite against the in-process broker, opened by URL as
// `polybus conformance --url mem://` does.
func TestMemory(t *testing.T) {
	conformance.Run(t, conformance.URLHarness("mem://"))
}
