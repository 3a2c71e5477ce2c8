package projection_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/message"
	mwsql "github.com/polybus/polybus/middleware/sqlstore"
	"github.com/polybus/polybus/projection"
)

func TestMessageHandlerAppliesEachEventOnce(t *testing.T) {
	ctx := context.Background()
	e := openEnv(t, "sqlite", sqliteDSN(filepath.Join(t.TempDir(), "app.db")), "p_")
	tb := e.readModel(t, "rm")
	marks, err := mwsql.NewDedupeStore(e.db, mwsql.Config{Dialect: mwsql.SQLite})
	if err != nil {
		t.Fatal(err)
	}
	if err := marks.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	h, err := projection.MessageHandler(e.store, marks, mwsql.TxConfig{}, apply(tb))
	if err != nil {
		t.Fatal(err)
	}
	evs := e.appendN(t, 3)
	for range 2 { // every message delivered twice
		for _, ev := range evs {
			if err := h(ctx, eventstore.ToMessage(ev)); err != nil {
				t.Fatal(err)
			}
		}
	}
	exactlyOnce(t, e.applied(t, tb), evs)
	if err := h(ctx, message.New([]byte("not an event"))); !message.IsPermanent(err) {
		t.Fatalf("a message without an event: %v, want a permanent error", err)
	}
}
