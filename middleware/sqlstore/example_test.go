package sqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware/sqlstore"
)

// TxDedupe books a payment and its processed-mark in one transaction: a
// redelivered message books nothing.
func ExampleTxDedupe() {
	dir, err := os.MkdirTemp("", "polybus-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TABLE ledger (payment TEXT, amount INTEGER)"); err != nil {
		panic(err)
	}
	store, err := sqlstore.NewDedupeStore(db, sqlstore.Config{Dialect: sqlstore.SQLite})
	if err != nil {
		panic(err)
	}
	if err := store.Migrate(ctx); err != nil {
		panic(err)
	}
	h, err := sqlstore.TxDedupe(store, sqlstore.TxConfig{}, func(ctx context.Context, tx *sql.Tx, m *message.Message) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO ledger (payment, amount) VALUES ($1, 100)", m.ID)
		return err
	})
	if err != nil {
		panic(err)
	}
	m := &message.Message{ID: "pay-1"}
	for range 2 { // delivered twice
		if err := h(ctx, m); err != nil {
			panic(err)
		}
	}
	var rows int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM ledger").Scan(&rows); err != nil {
		panic(err)
	}
	fmt.Println("ledger rows:", rows)
	// Output: ledger rows: 1
}
