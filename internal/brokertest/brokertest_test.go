package brokertest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// fakeTB records Skip and Fatal instead of ending the real test.
type fakeTB struct {
	testing.TB
	mu      sync.Mutex
	skipped string
	fatal   string
}

type stop struct{}

func (f *fakeTB) Helper()             {}
func (f *fakeTB) Cleanup(func())      {}
func (f *fakeTB) Logf(string, ...any) {}
func (f *fakeTB) Skip(args ...any) {
	f.mu.Lock()
	f.skipped = fmt.Sprint(args...)
	f.mu.Unlock()
	panic(stop{})
}
func (f *fakeTB) Fatal(args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprint(args...)
	f.mu.Unlock()
	panic(stop{})
}
func (f *fakeTB) Fatalf(s string, args ...any) { f.Fatal(fmt.Sprintf(s, args...)) }

func callURL(f *fakeTB, name string) (u string) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(stop); !ok {
				panic(r)
			}
		}
	}()
	return URL(f, name)
}

func TestURLFromEnv(t *testing.T) {
	t.Setenv("POLYBUS_NATS_URL", "nats://example.invalid:4222")
	t.Setenv("POLYBUS_AMQP_URL", "amqp://u:p@example.invalid:5672/")
	f := &fakeTB{TB: t}
	if got := callURL(f, "nats"); got != "nats://example.invalid:4222" {
		t.Fatalf("URL(nats) = %q", got)
	}
	if got := callURL(f, "RabbitMQ"); got != "amqp://u:p@example.invalid:5672/" {
		t.Fatalf("URL(rabbitmq) = %q", got)
	}
	if got := callURL(f, "amqp"); got != "amqp://u:p@example.invalid:5672/" {
		t.Fatalf("URL(amqp) = %q", got)
	}
}

func TestURLMissing(t *testing.T) {
	t.Setenv("POLYBUS_KAFKA_URL", "")
	// An endpoint nobody serves: the Docker path must fail fast.
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/polybus-docker.sock")

	t.Run("skip outside CI", func(t *testing.T) {
		t.Setenv("CI", "")
		f := &fakeTB{TB: t}
		callURL(f, "kafka")
		if f.fatal != "" || !strings.Contains(f.skipped, "scripts/brokers up kafka") || !strings.Contains(f.skipped, "make brokers") {
			t.Fatalf("skipped=%q fatal=%q", f.skipped, f.fatal)
		}
	})
	t.Run("fatal under CI", func(t *testing.T) {
		t.Setenv("CI", "true")
		f := &fakeTB{TB: t}
		callURL(f, "kafka")
		if f.skipped != "" || !strings.Contains(f.fatal, "POLYBUS_KAFKA_URL") {
			t.Fatalf("skipped=%q fatal=%q", f.skipped, f.fatal)
		}
	})
	t.Run("unknown broker", func(t *testing.T) {
		f := &fakeTB{TB: t}
		callURL(f, "mqtt")
		if !strings.Contains(f.fatal, "unknown broker") {
			t.Fatalf("fatal=%q", f.fatal)
		}
	})
}
