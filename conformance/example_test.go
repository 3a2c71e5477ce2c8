package conformance_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sync/atomic"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/conformance"
)

// Run the suite without go test, as `polybus conformance --url mem://`
// does, and print each test's status. Report.WriteMatrix and
// Report.WriteJSON print the full report.
func ExampleRunAll() {
	rep := conformance.RunAll(context.Background(), conformance.URLHarness("mem://"), conformance.Options{
		Run: regexp.MustCompile(`^(RoundTrip|PerKeyOrder|BrokerRestart)$`),
	})
	for _, r := range rep.Results {
		fmt.Printf("%s: %s\n", r.Name, r.Status)
		if r.Status != conformance.Pass {
			fmt.Println("  ", r.Reason)
		}
	}
	// Output:
	// RoundTrip: pass
	// PerKeyOrder: pass
	// BrokerRestart: skip
	//    the harness does not implement conformance.Restarter
}

// myHarness is the shape of an adapter's own harness: clients on a broker
// that the test controls, and names the broker accepts. A harness that can
// restart its broker also implements conformance.Restarter.
type myHarness struct {
	broker *memory.Broker
	n      atomic.Int64
}

func (h *myHarness) Open(context.Context) (*polybus.Client, error) {
	return h.broker.Client(polybus.ClientOptions{})
}

func (h *myHarness) Name(kind string) string {
	return fmt.Sprintf("my-%s-%d", kind, h.n.Add(1))
}

// Run the suite against an adapter through a harness of its own. In a test
// file this is conformance.Run(t, h).
func ExampleHarness() {
	b, err := memory.New(memory.Options{})
	if err != nil {
		panic(err)
	}
	rep := conformance.RunAll(context.Background(), &myHarness{broker: b}, conformance.Options{
		Run: regexp.MustCompile(`^(FanOut|SizeLimit)$`),
	})
	p, f, s := rep.Counts()
	fmt.Printf("%s: %d passed, %d failed, %d skipped\n", rep.Adapter, p, f, s)
	// Output:
	// memory: 2 passed, 0 failed, 0 skipped
}

// Print a capability table of one or more adapters.
func ExampleWriteCapabilities() {
	b, err := memory.New(memory.Options{})
	if err != nil {
		panic(err)
	}
	_ = conformance.WriteCapabilities(os.Stdout, b.Capabilities())
	// Output:
	// CAPABILITY                 memory
	// order per key              yes
	// order per key, scaled out  yes
	// rebalance within           100ms
	// consumer groups            yes
	// fan-out                    yes
	// retained                   yes
	// nack                       yes
	// nack delay                 yes
	// max nack delay             none
	// attempt count              yes
	// max message size           1048576 B
	// native dead letter         no
	// persistent                 no
}
