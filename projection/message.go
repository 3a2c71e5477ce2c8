package projection

import (
	"context"
	"database/sql"

	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/message"
	mwsql "github.com/polybus/polybus/middleware/sqlstore"
	"github.com/polybus/polybus/subscriber"
)

// MessageHandler returns a subscriber handler that feeds a read model from
// a bus topic instead of the global log: each message carries an event
// (eventstore.ToMessage, as outbox.AppendEvents sends them), decoded with
// store and applied by h in a transaction on marks' database that also
// records the message's ID as processed (mwsql.TxDedupe). So a redelivered
// message changes nothing: one effect per event, as with the checkpoint.
// A message that carries no event, or whose data does not decode, is a
// permanent error (dead-lettered by the DLQ middleware).
//
// Per-key order on the topic (key = stream) gives per-stream order; there
// is no global order across streams, as there is with a Projector.
func MessageHandler(store *eventstore.Store, marks *mwsql.DedupeStore, cfg mwsql.TxConfig, h Handler) (subscriber.Handler, error) {
	if store == nil || h == nil {
		return nil, message.Errorf(message.InvalidArgument, "projection: message handler", "nil store or handler")
	}
	return mwsql.TxDedupe(marks, cfg, func(ctx context.Context, tx *sql.Tx, m *message.Message) error {
		e, err := store.FromMessage(m)
		if err != nil {
			return message.PermanentError(err)
		}
		return h(ctx, tx, e)
	})
}
