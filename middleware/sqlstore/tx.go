package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
)

// TxFunc handles a message with its database work done in tx. It must not
// commit or roll back tx.
type TxFunc func(ctx context.Context, tx *sql.Tx, m *message.Message) error

// TxConfig configures TxDedupe. The zero value is valid: every field
// documents its default.
type TxConfig struct {
	// Key returns the deduplication key; "" runs the work in a
	// transaction without a mark. Default middleware.DedupeKey.
	Key func(*message.Message) string
	// TTL is how long a mark is kept. Default 24h.
	TTL time.Duration
	// InFlightDelay is the redelivery delay of a message whose key is
	// claimed, unexpired, by the lease-based middleware.Dedupe sharing
	// the table. Default 1s.
	InFlightDelay time.Duration
	// TxOptions are passed to BeginTx. Default nil: the driver's default
	// isolation level, which suffices: the mark's primary key does the
	// deduplication.
	TxOptions *sql.TxOptions
	// OnDuplicate, when set, is called for each duplicate, which is acked
	// without running the work.
	OnDuplicate func(ctx context.Context, m *message.Message)
}

// TxDedupe returns a handler that runs work exactly once per key with
// respect to the database: the processed-mark and work's writes commit in
// one transaction, or neither does.
//
// For each message it begins a transaction on the store's database and
// inserts the mark first (INSERT ... ON CONFLICT, taking over only an
// expired row). No row inserted means the message was handled: the
// transaction is rolled back and the message acked without running work.
// Otherwise work runs in the same transaction, which is then committed. A
// failing work (error or panic), a cancelled context or a failed commit
// rolls everything back, the mark included, so the redelivery runs work
// again: nothing is lost and nothing is done twice.
//
// Two concurrent deliveries of one message run work once: the second's
// insert waits on the first's uncommitted mark (a row lock in PostgreSQL,
// the write lock in SQLite) and then sees it committed, or rolled back, in
// which case it runs work itself.
//
// Only work's database writes are covered: side effects outside tx (a
// request to another service) can still happen twice.
func TxDedupe(store *DedupeStore, cfg TxConfig, work TxFunc) (subscriber.Handler, error) {
	const op = "sqlstore: tx dedupe"
	if store == nil || work == nil {
		return nil, message.Errorf(message.InvalidArgument, op, "nil store or work")
	}
	if cfg.TTL < 0 || cfg.InFlightDelay < 0 {
		return nil, message.Errorf(message.InvalidArgument, op, "negative duration")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.InFlightDelay == 0 {
		cfg.InFlightDelay = time.Second
	}
	if cfg.Key == nil {
		cfg.Key = middleware.DedupeKey
	}
	t := store.t
	markSQL := "INSERT INTO " + t.String() + " (msg_key, state, lease_token, expires_at) VALUES ($1, 2, 0, $2)" +
		" ON CONFLICT (msg_key) DO UPDATE SET state = 2, lease_token = 0, expires_at = excluded.expires_at" +
		" WHERE " + t.name + ".expires_at <= $3"
	return func(ctx context.Context, m *message.Message) (err error) {
		key := cfg.Key(m)
		tx, err := store.db.BeginTx(ctx, cfg.TxOptions)
		if err != nil {
			return wrap(op+": begin", err)
		}
		committed := false
		defer func() {
			// Also on panic: the mark goes with the work.
			if !committed {
				_ = tx.Rollback()
			}
		}()
		if key != "" {
			now := time.Now()
			res, err := tx.ExecContext(ctx, markSQL, key, millis(now.Add(cfg.TTL)), millis(now))
			if err != nil {
				return wrap(op+": mark", err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return wrap(op+": mark", err)
			}
			if n == 0 {
				var state int
				err := tx.QueryRowContext(ctx, store.stateSQL, key, millis(now)).Scan(&state)
				if err == nil && state == stateDone {
					if cfg.OnDuplicate != nil {
						cfg.OnDuplicate(ctx, m)
					}
					return nil
				}
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					return wrap(op+": read mark", err)
				}
				return middleware.Defer(middleware.ErrInFlight, cfg.InFlightDelay)
			}
		}
		if err := work(ctx, tx, m); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			// Committed or not, the redelivery finds out from the mark.
			return wrap(op+": commit", err)
		}
		committed = true
		return nil
	}, nil
}
