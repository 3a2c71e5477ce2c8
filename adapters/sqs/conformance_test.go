package sqs_test

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"github.com/polybus/polybus"
	polysqs "github.com/polybus/polybus/adapters/sqs"
	"github.com/polybus/polybus/conformance"
)

// The suite runs against the ElasticMQ of scripts/brokers, with a
// visibility timeout of 10s (a message whose receive a closing subscriber
// cut short comes back within the test's deadline) and a group refresh of
// 200ms (publishers see a new group's queue quickly) and a long-polling
// wait of 1s (a closing subscription waits for its calls in flight).
const conformanceQuery = "visibility_timeout=10s&group_refresh=200ms&wait_time=1s"

// TestConformance runs the suite on standard queues. Its BrokerRestart test
// restarts the shared ElasticMQ with `scripts/brokers restart sqs` only
// when POLYBUS_SQS_RESTART=1: a restart would upset other packages' tests
// running against it at the same time.
func TestConformance(t *testing.T) {
	conformance.Run(t, harness(t, sqsURL(t, conformanceQuery)), options(t))
}

// TestConformanceFIFO runs the suite on FIFO queues (fifo=true): per-key
// order, across subscribers too, is declared and tested. With
// POLYBUS_SQS_FULL=1 every test runs; without it, all but the two longest.
func TestConformanceFIFO(t *testing.T) {
	o := options(t)
	if os.Getenv("POLYBUS_SQS_FULL") != "1" && o.Run == nil {
		// The two longest tests (ConcurrentPublishers, 16,000 messages one
		// per call, takes 1-2 minutes on ElasticMQ's FIFO queues, more
		// under -race on a loaded machine; PerKeyOrderRebalance waits out
		// the declared rebalance bound twice) run with POLYBUS_SQS_FULL=1,
		// so that the package's default run stays within a few minutes.
		// The standard suite runs ConcurrentPublishers on the same
		// publisher code.
		o.Run = regexp.MustCompile(`^(RoundTrip|DurablePublish|AckIsFinal|NackRedelivers|NackDelay|CrashRecovery|PerKeyOrder|PerKeyOrderScaleOut|CompetingConsumers|FanOut|TopicIsolation|SizeLimit|CloseAndCancel|DeadLetter|Dedupe|BrokerRestart)$`)
	}
	conformance.Run(t, harness(t, sqsURL(t, conformanceQuery+"&fifo=true")), o)
}

// options runs POLYBUS_SQS_STRESS rounds of the suite at once, when set,
// and deletes the queues of the run's topics when it ends.
func options(t *testing.T) conformance.Options {
	o := conformance.Options{Cleanup: polysqs.DeleteTopics}
	if v := os.Getenv("POLYBUS_SQS_STRESS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("POLYBUS_SQS_STRESS=%q: %v", v, err)
		}
		o.Stress = n
	}
	return o
}

func harness(t *testing.T, rawURL string) conformance.Harness {
	h := conformance.URLHarness(rawURL)
	if os.Getenv("POLYBUS_SQS_RESTART") != "1" || brokersScript() == "" {
		return h
	}
	return &restartHarness{Harness: h}
}

// restartHarness adds a Restarter that restarts ElasticMQ.
type restartHarness struct {
	conformance.Harness
	mu sync.Mutex
}

func (h *restartHarness) Open(ctx context.Context) (*polybus.Client, error) {
	return h.Harness.Open(ctx)
}

func (h *restartHarness) Restart(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return restartSQS(ctx)
}
