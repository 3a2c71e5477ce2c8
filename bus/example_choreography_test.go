package bus_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/message"
)

// The events of the choreography.
type (
	PaymentSucceeded struct{ OrderID, SKU string }
	PaymentFailed    struct{ OrderID, Reason string }
	StockReserved    struct{ OrderID string }
	OutOfStock       struct{ OrderID string }
	PaymentRefunded  struct{ OrderID string }
	OrderShipped     struct{ OrderID string }
)

// Example_choreography runs the seed's choreography: no orchestrator,
// each service reacts to the events before it. Payment answers an order
// with PaymentSucceeded or PaymentFailed; inventory answers a payment
// with StockReserved or OutOfStock; shipping ships what is reserved and
// payment refunds what is out of stock. Every event of one order carries
// the order's correlation ID, and its causation chain names every event
// before it.
func Example_choreography() {
	ctx := context.Background()
	c, _ := polybus.Open(ctx, "mem://")
	defer c.Close(ctx)
	opts := bus.Options{Prefix: "choreo."}
	newService := func() *bus.Bus {
		b, _ := bus.New(c, opts)
		return b
	}

	payment, inventory, shipping, audit := newService(), newService(), newService(), newService()
	_ = bus.Subscribe(payment, "payment", func(ctx context.Context, e OrderPlaced) error {
		if e.SKU == "" {
			return bus.Publish(ctx, payment, PaymentFailed{e.OrderID, "nothing to pay for"})
		}
		return bus.Publish(ctx, payment, PaymentSucceeded{e.OrderID, e.SKU})
	})
	_ = bus.Subscribe(payment, "payment", func(ctx context.Context, e OutOfStock) error {
		return bus.Publish(ctx, payment, PaymentRefunded{e.OrderID})
	})
	_ = bus.Subscribe(inventory, "inventory", func(ctx context.Context, e PaymentSucceeded) error {
		if e.SKU == "sold-out" {
			return bus.Publish(ctx, inventory, OutOfStock{e.OrderID})
		}
		return bus.Publish(ctx, inventory, StockReserved{e.OrderID})
	})
	_ = bus.Subscribe(shipping, "shipping", func(ctx context.Context, e StockReserved) error {
		return bus.Publish(ctx, shipping, OrderShipped{e.OrderID})
	})

	// The audit service hears how each flow ended.
	ended := make(chan string)
	report := func(ctx context.Context, what string) error {
		m, _ := bus.MessageFrom(ctx)
		ended <- fmt.Sprintf("%s: %s, correlation %s, %d events before it", bus.CorrelationID(ctx), what,
			m.Metadata.Get(message.KeyCorrelationID), len(bus.CausationChain(m)))
		return nil
	}
	_ = bus.Subscribe(audit, "audit", func(ctx context.Context, e OrderShipped) error { return report(ctx, "shipped") })
	_ = bus.Subscribe(audit, "audit", func(ctx context.Context, e PaymentRefunded) error { return report(ctx, "refunded") })
	_ = bus.Subscribe(audit, "audit", func(ctx context.Context, e PaymentFailed) error { return report(ctx, "payment failed: "+e.Reason) })

	for _, b := range []*bus.Bus{payment, inventory, shipping, audit} {
		_ = b.Start(ctx)
		defer b.Close(ctx)
	}
	for _, o := range []OrderPlaced{{OrderID: "ord-1", SKU: "sku-9"}, {OrderID: "ord-2"}, {OrderID: "ord-3", SKU: "sold-out"}} {
		// The order's ID is the flow's correlation ID.
		_ = bus.Publish(ctx, payment, o, bus.WithHeader(message.KeyCorrelationID, o.OrderID))
		fmt.Println(strings.TrimSpace(<-ended))
	}
	// Output:
	// ord-1: shipped, correlation ord-1, 3 events before it
	// ord-2: payment failed: nothing to pay for, correlation ord-2, 1 events before it
	// ord-3: refunded, correlation ord-3, 3 events before it
}
