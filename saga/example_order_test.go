package saga_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/saga"
)

// The OrderSaga's data and commands.
type (
	Order struct {
		OrderID string
		SKU     string
		Qty     int
		Amount  int
	}
	ReserveInventory struct {
		OrderID, SKU string
		Qty          int
	}
	ReleaseInventory struct{ OrderID string }
	ChargePayment    struct {
		OrderID string
		Amount  int
	}
	RefundPayment struct{ OrderID string }
	ConfirmOrder  struct{ OrderID string }
	FailOrder     struct{ OrderID string }
)

// orderSaga is the seed's OrderSaga: reserve inventory, charge payment,
// confirm the order. Its first step only compensates: when anything
// fails, the order is failed last, after the reservation was released.
func orderSaga(b *bus.Bus) saga.Definition[Order] {
	return saga.Definition[Order]{Name: "OrderSaga", Steps: []saga.Step[Order]{
		{Name: "order", Compensate: func(ctx context.Context, x *saga.Exec[Order]) error {
			return bus.Send(ctx, b, FailOrder{x.Data.OrderID}, x.AwaitReply()...)
		}},
		{Name: "reserve",
			Action: func(ctx context.Context, x *saga.Exec[Order]) error {
				return bus.Send(ctx, b, ReserveInventory{x.Data.OrderID, x.Data.SKU, x.Data.Qty}, x.AwaitReply()...)
			},
			Compensate: func(ctx context.Context, x *saga.Exec[Order]) error {
				return bus.Send(ctx, b, ReleaseInventory{x.Data.OrderID}, x.AwaitReply()...)
			}},
		{Name: "charge",
			Action: func(ctx context.Context, x *saga.Exec[Order]) error {
				return bus.Send(ctx, b, ChargePayment{x.Data.OrderID, x.Data.Amount}, x.AwaitReply()...)
			},
			Compensate: func(ctx context.Context, x *saga.Exec[Order]) error {
				return bus.Send(ctx, b, RefundPayment{x.Data.OrderID}, x.AwaitReply()...)
			}},
		{Name: "confirm", Action: func(ctx context.Context, x *saga.Exec[Order]) error {
			return bus.Send(ctx, b, ConfirmOrder{x.Data.OrderID}, x.AwaitReply()...)
		}},
	}}
}

// services registers the three services of the OrderSaga, each a Bus of
// its own (so subscribers of its own) on c: inventory, payment (which
// declines amounts over 100 with a permanent error) and orders. apply
// does each effect; it must apply a command once however often it is
// delivered (its idempotency key is the command's ID, bus.MessageFrom).
func services(c *polybus.Client, prefix string, apply func(ctx context.Context, effect string) error) ([]*bus.Bus, error) {
	inv, err := bus.New(c, bus.Options{Service: "inventory", Prefix: prefix})
	if err != nil {
		return nil, err
	}
	pay, _ := bus.New(c, bus.Options{Service: "payment", Prefix: prefix})
	ord, _ := bus.New(c, bus.Options{Service: "orders", Prefix: prefix})
	errs := []error{
		bus.HandleCommand(inv, func(ctx context.Context, c ReserveInventory) error {
			return apply(ctx, fmt.Sprintf("reserve %s %dx%s", c.OrderID, c.Qty, c.SKU))
		}),
		bus.HandleCommand(inv, func(ctx context.Context, c ReleaseInventory) error {
			return apply(ctx, "release "+c.OrderID)
		}),
		bus.HandleCommand(pay, func(ctx context.Context, c ChargePayment) error {
			if c.Amount > 100 {
				return message.PermanentError(fmt.Errorf("card declined for %d", c.Amount))
			}
			return apply(ctx, fmt.Sprintf("charge %s %d", c.OrderID, c.Amount))
		}),
		bus.HandleCommand(pay, func(ctx context.Context, c RefundPayment) error {
			return apply(ctx, "refund "+c.OrderID)
		}),
		bus.HandleCommand(ord, func(ctx context.Context, c ConfirmOrder) error {
			return apply(ctx, "confirm "+c.OrderID)
		}),
		bus.HandleCommand(ord, func(ctx context.Context, c FailOrder) error {
			return apply(ctx, "fail "+c.OrderID)
		}),
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return []*bus.Bus{inv, pay, ord}, nil
}

// Example_orderSaga runs the seed's OrderSaga on mem:// (any broker URL
// works the same) with its state in SQLite: inventory, payment and
// orders are separate services (their own Bus and subscribers), and the
// orchestrator sends each step's command and waits for its reply. The
// first order completes; the second one's payment is declined, so its
// reservation is released and the order failed, in that order.
func Example_orderSaga() {
	ctx := context.Background()
	c, _ := polybus.Open(ctx, "mem://")
	defer c.Close(ctx)
	store, closeStore := exampleStore()
	defer closeStore()

	apply := func(ctx context.Context, effect string) error {
		fmt.Println("  ", effect)
		return nil
	}
	svcs, _ := services(c, "example.", apply)
	for _, b := range svcs {
		_ = b.Start(ctx)
		defer b.Close(ctx)
	}

	orch, _ := bus.New(c, bus.Options{Prefix: "example."})
	defer orch.Close(ctx)
	ended := make(chan saga.State, 1)
	s, err := saga.New(orderSaga(orch), saga.Config{Bus: orch, Store: store, StepTimeout: 10 * time.Second,
		OnSave: func(st saga.State) {
			if st.Status.Final() {
				ended <- st
			}
		}})
	if err != nil {
		fmt.Println(err)
		return
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- s.Run(rctx) }()

	for _, o := range []Order{{"ord-1", "sku-9", 2, 40}, {"ord-2", "sku-9", 1, 500}} {
		fmt.Println(o.OrderID + ":")
		_ = s.Start(ctx, o.OrderID, o)
		st := <-ended
		var steps []string
		for _, step := range st.Steps {
			steps = append(steps, fmt.Sprintf("%s %s/%s", step.Name, step.Action.Outcome, step.Compensation.Outcome))
		}
		fmt.Printf("  %s: %s\n", st.Status, strings.Join(steps, ", "))
	}
	stop()
	<-done
	// Output:
	// ord-1:
	//    reserve ord-1 2xsku-9
	//    charge ord-1 40
	//    confirm ord-1
	//   completed: order done/pending, reserve done/pending, charge done/pending, confirm done/pending
	// ord-2:
	//    reserve ord-2 1xsku-9
	//    release ord-2
	//    fail ord-2
	//   compensated: order done/done, reserve done/done, charge failed/skipped, confirm pending/pending
}

// exampleStore opens a saga store in a SQLite file of a new temporary
// directory; the func closes it and removes the directory.
func exampleStore() (*saga.Store, func()) {
	dir, err := os.MkdirTemp("", "saga-example-")
	if err != nil {
		panic(err)
	}
	db, err := sql.Open("sqlite", sqliteDSN(filepath.Join(dir, "sagas.db")))
	if err != nil {
		panic(err)
	}
	store, _ := saga.NewStore(db, saga.StoreConfig{Dialect: saga.SQLite})
	if err := store.Migrate(context.Background()); err != nil {
		panic(err)
	}
	return store, func() { db.Close(); os.RemoveAll(dir) }
}
