package brokertest_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/polybus/polybus/internal/brokertest"
)

// TestDataKeptAcrossRestart publishes one message per broker, restarts that
// broker with `scripts/brokers restart NAME`, and consumes the same message
// afterwards. It restarts shared brokers, so it runs only when asked:
// POLYBUS_RESTART_TEST=1 (make restart-check; .ci/run runs it before the
// main test run).
func TestDataKeptAcrossRestart(t *testing.T) {
	if os.Getenv("POLYBUS_RESTART_TEST") != "1" {
		t.Skip("restarts the shared brokers; set POLYBUS_RESTART_TEST=1 (or run `make restart-check`)")
	}
	script := brokersScript(t)
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			u := brokertest.URL(t, b.name)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			dest := uniqueName("restart")
			want := payloadFor(dest, b.binary)

			before := b.open(t, u, dest)
			if err := before.Setup(ctx); err != nil {
				before.Close()
				t.Fatalf("setup: %v", err)
			}
			if err := before.Publish(ctx, want); err != nil {
				before.Close()
				t.Fatalf("publish: %v", err)
			}
			before.Close()

			cmd := exec.CommandContext(ctx, script, "restart", b.name)
			out, err := cmd.CombinedOutput()
			t.Logf("scripts/brokers restart %s:\n%s", b.name, out)
			if err != nil {
				t.Fatalf("restart %s: %v", b.name, err)
			}

			after := b.open(t, u, dest)
			defer after.Close()
			defer func() {
				if err := after.Teardown(context.WithoutCancel(ctx)); err != nil {
					t.Logf("teardown: %v", err)
				}
			}()
			got, err := after.Receive(ctx)
			if err != nil {
				t.Fatalf("receive after restart: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("after restart got %q, want %q", got, want)
			}
		})
	}
}

// brokersScript finds scripts/brokers by walking up to the module root.
func brokersScript(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "scripts", "brokers")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}
