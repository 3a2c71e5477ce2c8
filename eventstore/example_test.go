package eventstore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite"

	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/eventstore/sqlstore"
)

// The BankAccount's events.
type (
	Opened    struct{ Owner string }
	Deposited struct{ Amount int }
	Withdrawn struct{ Amount int }
)

// Account is the aggregate: its state is rebuilt from its events.
type Account struct {
	Owner   string
	Balance int
}

// Apply folds one event into the state.
func (a *Account) Apply(e *eventstore.Event) error {
	switch d := e.Data.(type) {
	case Opened:
		a.Owner = d.Owner
	case Deposited:
		a.Balance += d.Amount
	case Withdrawn:
		a.Balance -= d.Amount
	default:
		return fmt.Errorf("account: unknown event %s", e.Type)
	}
	return nil
}

// ErrInsufficientFunds is the command validation's refusal.
var ErrInsufficientFunds = errors.New("insufficient funds")

// Withdraw is a command: it validates against the current state and
// returns the event to append, or refuses.
func (a *Account) Withdraw(amount int) (*eventstore.Event, error) {
	if amount > a.Balance {
		return nil, fmt.Errorf("withdraw %d from %d: %w", amount, a.Balance, ErrInsufficientFunds)
	}
	return &eventstore.Event{Data: Withdrawn{Amount: amount}}, nil
}

// The seed's BankAccount: commands validated against the state rebuilt by
// replay, optimistic concurrency on the stream's version, and the
// temporal query "what was the balance on March 15th?".
func Example_bankAccount() {
	dir, err := os.MkdirTemp("", "polybus-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "events.db")+
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	ctx := context.Background()
	drv, err := sqlstore.New(db, sqlstore.Config{Dialect: sqlstore.SQLite})
	if err != nil {
		panic(err)
	}
	if err := drv.Migrate(ctx); err != nil {
		panic(err)
	}
	// A fixed clock, so that the dates below are the example's.
	day := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	store, err := eventstore.New(drv, eventstore.Options{Now: func() time.Time { return day }, SnapshotEvery: 100})
	if err != nil {
		panic(err)
	}
	r := store.Registry()
	for name, register := range map[string]func() error{
		"Opened":    func() error { return eventstore.Register[Opened](r, "Opened") },
		"Deposited": func() error { return eventstore.Register[Deposited](r, "Deposited") },
		"Withdrawn": func() error { return eventstore.Register[Withdrawn](r, "Withdrawn") },
	} {
		if err := register(); err != nil {
			panic(name + ": " + err.Error())
		}
	}

	const stream = "account-42"
	acc := &Account{}
	res, err := store.Save(ctx, stream, acc, 0, &eventstore.Event{Data: Opened{Owner: "Ada"}}, &eventstore.Event{Data: Deposited{Amount: 100}})
	if err != nil {
		panic(err)
	}
	day = time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
	if res, err = store.Save(ctx, stream, acc, res.Version, &eventstore.Event{Data: Deposited{Amount: 50}}); err != nil {
		panic(err)
	}
	day = time.Date(2026, 3, 20, 9, 0, 0, 0, time.UTC)
	w, err := acc.Withdraw(120)
	if err != nil {
		panic(err)
	}
	if _, err = store.Save(ctx, stream, acc, res.Version, w); err != nil {
		panic(err)
	}

	// Rebuild by replay, and validate a command against the state.
	now := &Account{}
	version, err := store.Load(ctx, stream, now, eventstore.LoadOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s's balance: %d (version %d)\n", now.Owner, now.Balance, version)
	_, err = now.Withdraw(500)
	fmt.Println("withdraw 500:", errors.Is(err, ErrInsufficientFunds))

	// A writer that loaded an old version loses the race, by a coded error.
	_, err = store.Append(ctx, stream, eventstore.Exactly(version-1), &eventstore.Event{Data: Deposited{Amount: 1}})
	fmt.Println("stale append:", errors.Is(err, eventstore.ErrConflict))

	// What was the balance on March 15th?
	then := &Account{}
	if _, err := store.Load(ctx, stream, then, eventstore.LoadOptions{Until: time.Date(2026, 3, 15, 23, 59, 59, 0, time.UTC)}); err != nil {
		panic(err)
	}
	fmt.Println("balance on March 15th:", then.Balance)
	// Output:
	// Ada's balance: 30 (version 4)
	// withdraw 500: true
	// stale append: true
	// balance on March 15th: 150
}
