package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite"

	"github.com/polybus/polybus"
	_ "github.com/polybus/polybus/adapters/nats" // embedded://
	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/eventstore/sqlstore"
	"github.com/polybus/polybus/message"
	mwsql "github.com/polybus/polybus/middleware/sqlstore"
	"github.com/polybus/polybus/outbox"
)

// The order events.
type (
	OrderPlaced  struct{ Order, Customer string }
	OrderShipped struct{ Order string }
)

// The seed's order list view: OrderPlaced and OrderShipped are appended to
// the event store with their outbox rows in one transaction, relayed to
// the embedded broker, and projected into an order_list table by a
// subscriber whose writes and processed-marks commit together.
func Example_orderList() {
	dir, err := os.MkdirTemp("", "polybus-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	bus, err := polybus.Open(ctx, "embedded://"+filepath.Join(dir, "bus"))
	if err != nil {
		panic(err)
	}
	defer bus.Close(ctx)

	// The write side: an event store and an outbox in one database.
	drv, _ := sqlstore.New(db, sqlstore.Config{Dialect: sqlstore.SQLite})
	ob, _ := outbox.New(db, outbox.Config{Dialect: outbox.SQLite})
	if err := drv.Migrate(ctx); err != nil {
		panic(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		panic(err)
	}
	store, _ := eventstore.New(drv, eventstore.Options{})
	_ = eventstore.Register[OrderPlaced](store.Registry(), "OrderPlaced")
	_ = eventstore.Register[OrderShipped](store.Registry(), "OrderShipped")
	record := func(stream string, exp eventstore.ExpectedVersion, data any) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			panic(err)
		}
		if _, err := ob.AppendEvents(ctx, tx, store, stream, exp, "orders", &eventstore.Event{Data: data}); err != nil {
			panic(err)
		}
		if err := tx.Commit(); err != nil {
			panic(err)
		}
	}
	record("order-1", eventstore.NoStream, OrderPlaced{"order-1", "ada"})
	record("order-2", eventstore.NoStream, OrderPlaced{"order-2", "bob"})
	record("order-1", eventstore.Exactly(1), OrderShipped{"order-1"})

	// The read side: order_list, updated exactly once per event.
	if _, err := db.ExecContext(ctx, "CREATE TABLE order_list (id TEXT PRIMARY KEY, customer TEXT, status TEXT)"); err != nil {
		panic(err)
	}
	marks, _ := mwsql.NewDedupeStore(db, mwsql.Config{Dialect: mwsql.SQLite})
	if err := marks.Migrate(ctx); err != nil {
		panic(err)
	}
	view, err := mwsql.TxDedupe(marks, mwsql.TxConfig{}, func(ctx context.Context, tx *sql.Tx, m *message.Message) error {
		ev, err := store.FromMessage(m)
		if err != nil {
			return message.PermanentError(err)
		}
		switch d := ev.Data.(type) {
		case OrderPlaced:
			_, err = tx.ExecContext(ctx, "INSERT INTO order_list (id, customer, status) VALUES ($1, $2, 'placed')", d.Order, d.Customer)
		case OrderShipped:
			_, err = tx.ExecContext(ctx, "UPDATE order_list SET status = 'shipped' WHERE id = $1", d.Order)
		}
		return err
	})
	if err != nil {
		panic(err)
	}
	subCtx, stop := context.WithCancel(ctx)
	subDone := make(chan error, 1)
	go func() { subDone <- bus.Subscriber().Subscribe(subCtx, "orders", view) }()

	relay, _ := ob.Relay(outbox.RelayConfig{Publisher: bus.Publisher()})
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()

	// Wait (with a deadline) until the view shows the shipment.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var status string
		_ = db.QueryRowContext(ctx, "SELECT status FROM order_list WHERE id = 'order-1'").Scan(&status)
		var n int
		_ = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM order_list").Scan(&n)
		if status == "shipped" && n == 2 {
			break
		}
		if time.Now().After(deadline) {
			panic("the order list did not catch up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopRelay()
	<-relayDone
	stop()
	<-subDone

	rows, err := db.QueryContext(ctx, "SELECT id, customer, status FROM order_list ORDER BY id")
	if err != nil {
		panic(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, customer, status string
		_ = rows.Scan(&id, &customer, &status)
		fmt.Println(id, customer, status)
	}
	// Output:
	// order-1 ada shipped
	// order-2 bob placed
}
