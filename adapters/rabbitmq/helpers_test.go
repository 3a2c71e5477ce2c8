package rabbitmq_test

import (
	"context"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/rabbitmq"
)

// declare declares group on topic, so that publishing to topic succeeds
// before any subscriber runs.
func declare(t testing.TB, c *polybus.Client, topic, group string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rabbitmq.DeclareGroup(ctx, c, topic, group); err != nil {
		t.Fatalf("declare %s/%s: %v", topic, group, err)
	}
}
