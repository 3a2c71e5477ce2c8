package bus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/polybus/polybus"
	_ "github.com/polybus/polybus/adapters/kafka"
	_ "github.com/polybus/polybus/adapters/memory"
	_ "github.com/polybus/polybus/adapters/nats"
	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/internal/brokertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// brokers runs f on mem://, embedded:// and, when their URLs are set (see
// internal/brokertest), NATS and Kafka: the brokers on which a new group
// reads what was published before it (Retained), so a test may publish
// right after Start.
func brokers(t *testing.T, f func(t *testing.T, c *polybus.Client)) {
	for _, b := range []string{"mem", "embedded", "nats", "kafka"} {
		t.Run(b, func(t *testing.T) {
			var url string
			switch b {
			case "mem":
				url = "mem://"
			case "embedded":
				url = "embedded://" + filepath.Join(t.TempDir(), "bus")
			default:
				url = brokertest.URL(t, b)
			}
			f(t, open(t, url))
		})
	}
}

func open(t testing.TB, url string) *polybus.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := polybus.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// prefix returns a fresh topic prefix, so that tests on a shared broker
// never see each other's messages.
func prefix() string { return fmt.Sprintf("t%x.", rand.Uint64()) }

// newBus returns a Bus on c, closed when the test ends.
func newBus(t testing.TB, c *polybus.Client, opts bus.Options) *bus.Bus {
	t.Helper()
	b, err := bus.New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}
