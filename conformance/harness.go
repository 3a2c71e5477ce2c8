package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync/atomic"

	"go.uber.org/goleak"

	"github.com/polybus/polybus"
)

// Harness connects the suite to the broker under test. An adapter's own
// tests implement it, or use [URLHarness].
//
// Every client that one harness opens must reach the same broker: the suite
// publishes with one client and subscribes with others, and closes a
// subscriber's client to simulate a crash.
type Harness interface {
	// Open opens a new client on the broker under test. The suite closes
	// every client it opens. Its capabilities are the declaration that
	// the suite tests.
	Open(ctx context.Context) (*polybus.Client, error)
	// Name returns a name that no earlier call returned and that is not
	// in use on the broker, valid as a topic and as a consumer group name.
	// kind is "topic" or "group", for readability only.
	Name(kind string) string
}

// Restarter is implemented by a harness that can restart the broker under
// test. Restart returns once the broker accepts connections again; clients
// opened before it must recover by themselves. The broker-restart test runs
// only against a harness that implements it.
type Restarter interface {
	Restart(ctx context.Context) error
}

// GoroutineFilter is implemented by a harness whose clients legitimately
// leave goroutines running after Close (a shared connection pool, an
// embedded server started on first use). The close-and-cancel test ignores
// the goroutines these options match when it looks for leaks.
type GoroutineFilter interface {
	IgnoreGoroutines() []goleak.Option
}

// Rebalancer is implemented by a harness whose broker may deliver a
// message again, with no failure, when a group's membership changes (Kafka
// redelivers uncommitted offsets after a rebalance). The
// competing-consumers test then counts duplicates (metric "duplicates")
// instead of failing on them; a lost message still fails it.
type Rebalancer interface {
	RedeliversOnRebalance() bool
}

// ApproximateAttempts is implemented by a harness whose broker's attempt
// count may run ahead of the deliveries a handler saw: SQS's
// ApproximateReceiveCount counts a receive whose response was lost on the
// way (the message then comes back after its visibility timeout, with the
// count raised). The suite then counts first deliveries with an attempt
// above 1 (metric "first_attempt_above_1") instead of failing on them.
type ApproximateAttempts interface {
	AttemptsApproximate() bool
}

// URLHarness returns a harness that opens every client with
// polybus.Open(ctx, rawURL), so it works with any adapter registered in the
// program. Names are "cf-<kind>-<random>-<n>": lower-case letters, digits
// and hyphens, which every supported broker accepts.
//
// A URL whose every Open would get its own in-process broker (mem:// with no
// name) is given a unique broker name, so that all the harness's clients
// share one broker, as the suite requires.
func URLHarness(rawURL string) Harness {
	h := &urlHarness{url: rawURL, prefix: randomHex(4)}
	if u, err := polybus.ParseURL(rawURL); err == nil && u.Scheme == "mem" && u.Host == "" && (u.Path == "" || u.Path == "/") {
		u.Host = "conformance-" + h.prefix
		u.Path = ""
		h.url = u.String()
	}
	return h
}

type urlHarness struct {
	url    string
	prefix string
	n      atomic.Uint64
}

func (h *urlHarness) Open(ctx context.Context) (*polybus.Client, error) {
	return polybus.Open(ctx, h.url)
}

func (h *urlHarness) Name(kind string) string {
	return fmt.Sprintf("cf-%s-%s-%d", kind, h.prefix, h.n.Add(1))
}

// String returns the harness's URL with any password redacted.
func (h *urlHarness) String() string { return polybus.Redact(h.url) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+).
	return hex.EncodeToString(b)
}
