package nats_test

import (
	"context"
	"fmt"
	"os"

	polynats "github.com/polybus/polybus/adapters/nats"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// Open an embedded broker from Go, publish a message and handle it.
func ExampleOpen() {
	dir, err := os.MkdirTemp("", "polybus-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	c, err := polynats.Open(ctx, polynats.Config{Embedded: true, StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer c.Close(ctx)

	m := message.New([]byte("hello"))
	m.Key = "ord-1"
	m.Metadata = message.Metadata{"tenant": "acme"}
	if err := c.Publisher().Publish(ctx, "orders.created", m); err != nil {
		panic(err)
	}

	sctx, stop := context.WithCancel(ctx)
	err = c.Subscriber().Subscribe(sctx, "orders.created", func(_ context.Context, m *message.Message) error {
		d, _ := m.Delivery()
		fmt.Println(string(m.Payload), m.Key, m.Metadata["tenant"], d.Attempt)
		stop()
		return nil
	}, subscriber.Group("billing"))
	if err != nil {
		panic(err)
	}
	// Output: hello ord-1 acme 1
}

// A URL fills the same Config.
func ExampleConfigFromURL() {
	cfg, err := polynats.ConfigFromURL("nats://user:secret@n1:4222,n2:4222?replicas=3&ack_wait=1m")
	if err != nil {
		panic(err)
	}
	fmt.Println(cfg.Servers, cfg.User, cfg.Replicas, cfg.AckWait)
	// Output: [nats://n1:4222 nats://n2:4222] user 3 1m0s
}
