package middleware_test

import (
	"context"
	"fmt"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
)

// A publisher stamps per-key sequence numbers; the ordering buffer runs a
// key's messages in that order whatever order they arrive in.
func ExampleOrdering() {
	seq := middleware.NewSequencer(nil) // a persistent counter in production: sqlstore
	var msgs []*message.Message
	for _, body := range []string{"created", "paid", "shipped"} {
		m := message.New([]byte(body))
		m.Key = "order-42"
		msgs = append(msgs, m)
	}
	if err := seq.Stamp(context.Background(), "orders", msgs...); err != nil {
		panic(err)
	}

	ordering, err := middleware.Ordering(middleware.OrderingConfig{})
	if err != nil {
		panic(err)
	}
	h := ordering(func(ctx context.Context, m *message.Message) error {
		fmt.Println(m.Metadata[message.KeySequence], string(m.Payload))
		return nil
	})
	// Delivered out of order: "shipped" waits until "paid" has run.
	done := make(chan error)
	go func() { done <- h(context.Background(), msgs[2]) }()
	_ = h(context.Background(), msgs[0])
	_ = h(context.Background(), msgs[1])
	<-done
	_ = h(context.Background(), msgs[1]) // a duplicate: acked, not run

	// Under a Subscriber: subscriber.Use(ordering), with
	// subscriber.Unordered() to hold out-of-order messages in memory
	// rather than give them back to the broker.
	// Output:
	// 1 created
	// 2 paid
	// 3 shipped
}

func ExampleSequencer() {
	s := middleware.NewSequencer(nil)
	a1, b1, a2 := &message.Message{Key: "a"}, &message.Message{Key: "b"}, &message.Message{Key: "a"}
	if err := s.Stamp(context.Background(), "orders", a1, b1, a2); err != nil {
		panic(err)
	}
	for _, m := range []*message.Message{a1, b1, a2} {
		fmt.Println(m.Key, m.Metadata[message.KeySequence])
	}
	// Output:
	// a 1
	// b 1
	// a 2
}
