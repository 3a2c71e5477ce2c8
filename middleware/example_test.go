package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/polybus/polybus"
	_ "github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
)

// A message that its handler cannot process is retried through the broker
// with backoff, then lands on the dead-letter topic with the reason.
func ExampleDefaultChain() {
	ctx := context.Background()
	c, err := polybus.Open(ctx, "mem://")
	if err != nil {
		panic(err)
	}
	defer c.Close(ctx)

	mw, err := middleware.DefaultChain(middleware.ChainConfig{
		DLQ:     &middleware.DLQConfig{Publisher: c.Publisher()},
		Retry:   &middleware.RetryConfig{Mode: middleware.Redelivery, MaxAttempts: 3, InitialInterval: 10 * time.Millisecond},
		Timeout: &middleware.TimeoutConfig{Timeout: 5 * time.Second},
	})
	if err != nil {
		panic(err)
	}
	handle := func(ctx context.Context, m *message.Message) error {
		if string(m.Payload) == "not json" {
			return errors.New("cannot parse order")
		}
		return nil
	}
	dead := make(chan *message.Message, 10)
	onDead := func(ctx context.Context, m *message.Message) error {
		dead <- m
		return nil
	}

	subCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.Subscriber().Subscribe(subCtx, "orders", handle, subscriber.Use(mw)) })
	wg.Go(func() { _ = c.Subscriber().Subscribe(subCtx, "orders.dlq", onDead) })

	if err := c.Publisher().Publish(ctx, "orders", message.New([]byte("not json"))); err != nil {
		panic(err)
	}
	d := <-dead
	stop()
	wg.Wait()
	fmt.Println(string(d.Payload))
	fmt.Println(d.Metadata[message.KeyDLQReason], d.Metadata[message.KeyDLQAttempts])
	fmt.Println(d.Metadata[message.KeyDLQError])
	// Output:
	// not json
	// max-attempts 3
	// polybus: retry: gave up after 3 attempts: cannot parse order
}

// In-process retry calls the handler again after each backoff delay.
func ExampleRetry() {
	mw, err := middleware.Retry(middleware.RetryConfig{
		MaxAttempts:         4,
		InitialInterval:     time.Millisecond,
		Multiplier:          2,
		RandomizationFactor: middleware.NoJitter,
		OnRetry: func(ctx context.Context, m *message.Message, attempt int, delay time.Duration, err error) {
			fmt.Printf("attempt %d failed (%v); retrying in %v\n", attempt, err, delay)
		},
	})
	if err != nil {
		panic(err)
	}
	calls := 0
	handle := mw(func(ctx context.Context, m *message.Message) error {
		if calls++; calls < 3 {
			return errors.New("database busy")
		}
		return nil
	})
	fmt.Println("result:", handle(context.Background(), message.New([]byte("order"))))
	// Output:
	// attempt 1 failed (database busy); retrying in 1ms
	// attempt 2 failed (database busy); retrying in 2ms
	// result: <nil>
}

// Messages published while handling a message carry its correlation.
func ExamplePropagate() {
	ctx := middleware.ContextWithCorrelation(context.Background(), middleware.CorrelationInfo{
		CorrelationID: "checkout-42",
		MessageID:     "order-placed-7",
	})
	out := message.New([]byte("reserve stock"))
	middleware.Propagate(ctx, out)
	fmt.Println(out.Metadata[message.KeyCorrelationID], out.Metadata[message.KeyCausationID])
	// Output: checkout-42 order-placed-7
}
