package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
)

// Row states of the dedupe table.
const (
	stateInProgress = 1
	stateDone       = 2
)

// DedupeStore is a middleware.DedupeStore in a SQL table, which the
// processes of a consumer group can share. Its rows are
//
//	msg_key      TEXT PRIMARY KEY   the deduplication key
//	state        SMALLINT           1 in progress (claimed), 2 done
//	lease_token  BIGINT             the claim's token (0 for TxDedupe marks)
//	expires_at   BIGINT             Unix ms when the lease or the mark ends
//
// A row past expires_at counts as absent. TxDedupe writes its marks to the
// same table.
type DedupeStore struct {
	db *sql.DB
	t  table

	claimSQL, stateSQL, completeSQL, releaseSQL, purgeSQL string
}

// NewDedupeStore returns a store over db; cfg.Table defaults to
// "polybus_dedupe". It does not touch the database: call Migrate.
func NewDedupeStore(db *sql.DB, cfg Config) (*DedupeStore, error) {
	t, err := newTable(db, cfg, "polybus_dedupe", "sqlstore: dedupe store")
	if err != nil {
		return nil, err
	}
	// Both dialects: an upsert whose DO UPDATE WHERE lets a claim take
	// over only an expired row, so the claim is one atomic statement
	// and its row count says who won.
	return &DedupeStore{
		db: db, t: t,
		claimSQL: "INSERT INTO " + t.String() + " (msg_key, state, lease_token, expires_at) VALUES ($1, 1, $2, $3)" +
			" ON CONFLICT (msg_key) DO UPDATE SET state = 1, lease_token = excluded.lease_token, expires_at = excluded.expires_at" +
			" WHERE " + t.name + ".expires_at <= $4",
		stateSQL: "SELECT state FROM " + t.String() + " WHERE msg_key = $1 AND expires_at > $2",
		completeSQL: "INSERT INTO " + t.String() + " (msg_key, state, lease_token, expires_at) VALUES ($1, 2, $2, $3)" +
			" ON CONFLICT (msg_key) DO UPDATE SET state = 2, lease_token = excluded.lease_token, expires_at = excluded.expires_at",
		releaseSQL: "DELETE FROM " + t.String() + " WHERE msg_key = $1 AND lease_token = $2 AND state = 1",
		purgeSQL:   "DELETE FROM " + t.String() + " WHERE expires_at <= $1",
	}, nil
}

// Table returns the table's quoted, qualified name.
func (s *DedupeStore) Table() string { return s.t.String() }

// Migrate creates the table and its expiry index if they do not exist.
func (s *DedupeStore) Migrate(ctx context.Context) error {
	return execAll(ctx, s.db,
		"CREATE TABLE IF NOT EXISTS "+s.t.String()+" (msg_key TEXT PRIMARY KEY, state SMALLINT NOT NULL, lease_token BIGINT NOT NULL, expires_at BIGINT NOT NULL)",
		s.t.index("expires", "expires_at"),
	)
}

// Claim implements middleware.DedupeStore.
func (s *DedupeStore) Claim(ctx context.Context, key string, lease time.Duration) (middleware.ClaimState, int64, error) {
	// A row deleted between the upsert and the read (a Release, a Purge)
	// makes the read find nothing: try again, a few times.
	for range 3 {
		token := newToken()
		now := time.Now()
		res, err := s.db.ExecContext(ctx, s.claimSQL, key, token, millis(now.Add(lease)), millis(now))
		if err != nil {
			return 0, 0, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return 0, 0, err
		} else if n == 1 {
			return middleware.Claimed, token, nil
		}
		var state int
		err = s.db.QueryRowContext(ctx, s.stateSQL, key, millis(now)).Scan(&state)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			continue
		case err != nil:
			return 0, 0, err
		case state == stateDone:
			return middleware.AlreadyDone, 0, nil
		default:
			return middleware.InProgress, 0, nil
		}
	}
	// Still contended: someone is busy with the key.
	return middleware.InProgress, 0, nil
}

// Complete implements middleware.DedupeStore.
func (s *DedupeStore) Complete(ctx context.Context, key string, token int64, ttl time.Duration) error {
	_, err := s.db.ExecContext(ctx, s.completeSQL, key, token, millis(time.Now().Add(ttl)))
	return err
}

// Release implements middleware.DedupeStore.
func (s *DedupeStore) Release(ctx context.Context, key string, token int64) error {
	_, err := s.db.ExecContext(ctx, s.releaseSQL, key, token)
	return err
}

// Purge deletes expired rows (leases and marks) and returns how many.
func (s *DedupeStore) Purge(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.purgeSQL, millis(time.Now()))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// newToken returns a claim token: random, so that processes sharing the
// table need no coordination, and never 0, which TxDedupe's marks use.
func newToken() int64 {
	for {
		if t := rand.Int64(); t != 0 {
			return t
		}
	}
}

func millis(t time.Time) int64 { return t.UnixMilli() }

// wrap gives a database error the Unavailable code for errors.Is, keeping
// context errors and coded errors as they are.
func wrap(op string, err error) error {
	var e *message.Error
	if errors.As(err, &e) {
		return err
	}
	return message.Wrap(message.Unavailable, op, err)
}
