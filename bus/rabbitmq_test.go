package bus_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	_ "github.com/polybus/polybus/adapters/rabbitmq"
	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
)

// TestRabbitMQ: on RabbitMQ, which refuses a message that no group
// receives, the broker itself tells a command with no handler service
// (NotFound, with no Registry); once the handler's group exists the
// command is handled once, and a query is answered over the reply
// subscription (whose pings wait for its queue).
func TestRabbitMQ(t *testing.T) {
	ctx := context.Background()
	c := open(t, brokertest.URL(t, "rabbitmq"))
	p := prefix()
	sender := newBus(t, c, bus.Options{Prefix: p})
	if err := bus.Send(ctx, sender, ShipOrder{OrderID: "o0"}); !errors.Is(err, message.ErrNotFound) {
		t.Fatalf("Send with no handler service: %v, want NotFound", err)
	}
	var s seen
	svc := newBus(t, c, bus.Options{Prefix: p, Service: "shipping"})
	_ = bus.HandleCommand(svc, func(ctx context.Context, cmd ShipOrder) error { s.add("ship", cmd.OrderID); return nil })
	_ = bus.HandleQuery(svc, func(ctx context.Context, q GetTotal) (Total, error) { return Total{len(q.OrderID)}, nil })
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Start does not wait for the groups to exist: the broker says when.
	pbtest.WaitFor(t, "the command group to exist", func() bool {
		err := bus.Send(ctx, sender, ShipOrder{OrderID: "o1"})
		if err != nil && !errors.Is(err, message.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	})
	pbtest.WaitFor(t, "the command to be handled", func() bool { return len(s.of("ship")) == 1 })
	var r Total
	pbtest.WaitFor(t, "a reply", func() bool {
		var err error
		r, err = bus.Ask[GetTotal, Total](ctx, sender, GetTotal{"abc"})
		if err != nil && !errors.Is(err, message.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	})
	if r.Amount != 3 || !slices.Equal(s.of("ship"), []string{"o1"}) {
		t.Errorf("reply %+v, handled %q", r, s.of("ship"))
	}
}
