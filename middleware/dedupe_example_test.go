package middleware_test

import (
	"context"
	"fmt"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
)

// Dedupe runs a handler once per message ID; redeliveries are acked
// without running it.
func ExampleDedupe() {
	store, err := middleware.NewMemoryDedupeStore(0) // sqlstore.NewDedupeStore to share it between processes
	if err != nil {
		panic(err)
	}
	duplicates := 0
	dedupe, err := middleware.Dedupe(middleware.DedupeConfig{
		Store:       store,
		OnDuplicate: func(context.Context, *message.Message) { duplicates++ },
	})
	if err != nil {
		panic(err)
	}
	h := dedupe(func(ctx context.Context, m *message.Message) error {
		fmt.Println("charging for", m.ID)
		return nil
	})
	m := &message.Message{ID: "pay-1"}
	for range 3 {
		if err := h(context.Background(), m); err != nil {
			panic(err)
		}
	}
	fmt.Println("duplicates:", duplicates)
	// Output:
	// charging for pay-1
	// duplicates: 2
}
