package outbox

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/polybus/polybus/message"
)

// Publisher publishes messages; *publisher.Publisher (a polybus.Client's
// Publisher()) is one.
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...*message.Message) error
}

// RelayConfig configures a relay. Only Publisher is required; every other
// field documents its default.
type RelayConfig struct {
	// Publisher receives the messages. Required.
	Publisher Publisher
	// BatchSize is the most rows one claim takes. Default 100.
	BatchSize int
	// Interval is how long an idle relay waits before it looks again
	// (Notify wakes it sooner), and how long it backs off after an error.
	// Default 100ms.
	Interval time.Duration
	// Lease is how long a claim keeps other relays off its keys; a relay
	// that dies mid-batch delays its keys by up to Lease. Default 30s.
	Lease time.Duration
	// Retention is how long published rows are kept before Prune deletes
	// them. Default 24h.
	Retention time.Duration
	// PruneEvery is how often Run prunes; negative disables pruning.
	// Default 1m.
	PruneEvery time.Duration
	// OnError, when set, is called with each error Run meets (Run itself
	// keeps going). Default: errors are dropped.
	OnError func(error)
	// AfterClaim, when set, is called after a batch is claimed and before
	// it is published, with the number of rows. For tests (a crash between
	// the two).
	AfterClaim func(n int)
}

// Relay publishes an outbox's rows. Several relays, in one process or
// many, may run on one outbox at once.
type Relay struct {
	o     *Outbox
	cfg   RelayConfig
	owner string
	wake  chan struct{}

	headSQL, rowsSQL string
}

// Relay returns a relay of o's rows.
func (o *Outbox) Relay(cfg RelayConfig) (*Relay, error) {
	const op = "outbox: relay"
	if cfg.Publisher == nil {
		return nil, message.Errorf(message.InvalidArgument, op, "nil publisher")
	}
	if cfg.BatchSize < 0 || cfg.Interval < 0 || cfg.Lease < 0 || cfg.Retention < 0 {
		return nil, message.Errorf(message.InvalidArgument, op, "negative batch size or duration")
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 100
	}
	if cfg.Interval == 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.Lease == 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.Retention == 0 {
		cfg.Retention = 24 * time.Hour
	}
	if cfg.PruneEvery == 0 {
		cfg.PruneEvery = time.Minute
	}
	r := &Relay{o: o, cfg: cfg, owner: message.NewID(), wake: make(chan struct{}, 1)}
	// A head is the oldest unpublished row of its key; a key is free when
	// its head carries no live lease.
	// Only the oldest pending rows are candidates, so that a claim costs
	// the same however long the backlog: a key whose head is further back
	// waits for the rows before it.
	r.headSQL = "SELECT o.id, o.order_key FROM " + o.table + " o WHERE o.id IN (SELECT id FROM " + o.table +
		" WHERE published_ms IS NULL ORDER BY id LIMIT $3) AND o.published_ms IS NULL" +
		" AND (o.lease_until IS NULL OR o.lease_until <= $1)" +
		" AND NOT EXISTS (SELECT 1 FROM " + o.table + " p WHERE p.order_key = o.order_key AND p.published_ms IS NULL AND p.id < o.id)" +
		" ORDER BY o.id LIMIT $2"
	if o.d == Postgres {
		r.headSQL += " FOR UPDATE OF o SKIP LOCKED"
	}
	r.rowsSQL = "SELECT id, msg_id, topic, msg_key, payload, metadata, msg_time FROM " + o.table +
		" WHERE published_ms IS NULL AND order_key IN (%s) ORDER BY id LIMIT $1"
	return r, nil
}

// Notify wakes an idle Run at once (after a commit that added rows, say).
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run relays until ctx ends, then returns nil. Errors go to OnError and
// are retried after Interval.
func (r *Relay) Run(ctx context.Context) error {
	nextPrune := time.Now()
	for {
		if r.cfg.PruneEvery > 0 && !time.Now().Before(nextPrune) {
			if _, err := r.o.Prune(ctx, r.cfg.Retention); err != nil && ctx.Err() == nil {
				r.report(err)
			}
			nextPrune = time.Now().Add(r.cfg.PruneEvery)
		}
		n, err := r.Once(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			r.report(err)
		}
		if err == nil && n > 0 {
			continue
		}
		t := time.NewTimer(r.cfg.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

func (r *Relay) report(err error) {
	if r.cfg.OnError != nil {
		r.cfg.OnError(err)
	}
}

type row struct {
	id    int64
	topic string
	msg   *message.Message
}

// Once claims one batch, publishes it and marks it published. It returns
// how many messages it published.
func (r *Relay) Once(ctx context.Context) (int, error) {
	rows, err := r.claim(ctx)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	if r.cfg.AfterClaim != nil {
		r.cfg.AfterClaim(len(rows))
	}
	done := 0
	for done < len(rows) {
		end := done + 1
		for end < len(rows) && rows[end].topic == rows[done].topic {
			end++
		}
		run := rows[done:end]
		msgs := make([]*message.Message, len(run))
		for i, rw := range run {
			msgs[i] = rw.msg
		}
		if err := r.cfg.Publisher.Publish(ctx, run[0].topic, msgs...); err != nil {
			// Hand the rest back now rather than at the lease's end; the
			// failed run may have been partly published: its rows go
			// again, with their IDs.
			r.release(rows[done:])
			return done, err
		}
		if err := r.mark(ctx, run); err != nil {
			r.release(rows[end:])
			return end, err
		}
		done = end
	}
	return done, nil
}

func ids(rows []row) (string, []any) {
	ph := make([]string, len(rows))
	args := make([]any, len(rows))
	for i, rw := range rows {
		ph[i] = "$" + strconv.Itoa(i+1)
		args[i] = rw.id
	}
	return strings.Join(ph, ", "), args
}

func (r *Relay) claim(ctx context.Context) (out []row, err error) {
	const op = "outbox: claim"
	tx, err := r.o.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, message.Wrap(message.Unavailable, op, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
			out = nil
			err = message.Wrap(message.Unavailable, op, err)
		}
	}()
	now := r.o.now()
	hrows, err := tx.QueryContext(ctx, r.headSQL, now.UnixMilli(), r.cfg.BatchSize, 10*r.cfg.BatchSize)
	if err != nil {
		return nil, err
	}
	var keys []any
	for hrows.Next() {
		var id int64
		var k string
		if err := hrows.Scan(&id, &k); err != nil {
			hrows.Close()
			return nil, err
		}
		keys = append(keys, k)
	}
	hrows.Close()
	if err := hrows.Err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, tx.Commit()
	}
	ph := make([]string, len(keys))
	for i := range keys {
		ph[i] = "$" + strconv.Itoa(i+2)
	}
	q := strings.Replace(r.rowsSQL, "%s", strings.Join(ph, ", "), 1)
	rs, err := tx.QueryContext(ctx, q, append([]any{r.cfg.BatchSize}, keys...)...)
	if err != nil {
		return nil, err
	}
	for rs.Next() {
		var rw row
		var md string
		var t int64
		m := &message.Message{}
		if err := rs.Scan(&rw.id, &m.ID, &rw.topic, &m.Key, &m.Payload, &md, &t); err != nil {
			rs.Close()
			return nil, err
		}
		if md != "{}" {
			if err := json.Unmarshal([]byte(md), &m.Metadata); err != nil {
				rs.Close()
				return nil, err
			}
		}
		m.Time = time.Unix(0, t)
		rw.msg = m
		out = append(out, rw)
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return nil, err
	}
	in, args := ids(out)
	n := len(args)
	args = append(args, r.owner, now.Add(r.cfg.Lease).UnixMilli())
	if _, err := tx.ExecContext(ctx, "UPDATE "+r.o.table+" SET lease_owner = $"+strconv.Itoa(n+1)+
		", lease_until = $"+strconv.Itoa(n+2)+" WHERE id IN ("+in+")", args...); err != nil {
		return nil, err
	}
	return out, tx.Commit()
}

func (r *Relay) mark(ctx context.Context, rows []row) error {
	// The messages are out: record it even when the relay is stopping,
	// else they go again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	in, args := ids(rows)
	args = append(args, r.o.now().UnixMilli())
	_, err := r.o.db.ExecContext(ctx, "UPDATE "+r.o.table+" SET published_ms = $"+strconv.Itoa(len(args))+
		", lease_owner = NULL, lease_until = NULL WHERE id IN ("+in+")", args...)
	return message.Wrap(message.Unavailable, "outbox: mark published", err)
}

// release hands rows back, best effort (their lease expires anyway).
func (r *Relay) release(rows []row) {
	if len(rows) == 0 {
		return
	}
	in, args := ids(rows)
	args = append(args, r.owner)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = r.o.db.ExecContext(ctx, "UPDATE "+r.o.table+" SET lease_owner = NULL, lease_until = NULL WHERE id IN ("+in+
		") AND lease_owner = $"+strconv.Itoa(len(args)), args...)
}
