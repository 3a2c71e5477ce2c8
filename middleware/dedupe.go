package middleware

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// ClaimState is the outcome of [DedupeStore.Claim].
type ClaimState int

const (
	// Claimed: the caller now holds the key's lease and must end it with
	// Complete (the message was handled) or Release (it was not).
	Claimed ClaimState = iota + 1
	// AlreadyDone: the key was completed and its mark has not expired.
	AlreadyDone
	// InProgress: another claim's lease on the key has not expired: the
	// message is being handled right now, here or in another process.
	InProgress
)

// String returns "claimed", "already-done" or "in-progress".
func (s ClaimState) String() string {
	switch s {
	case Claimed:
		return "claimed"
	case AlreadyDone:
		return "already-done"
	case InProgress:
		return "in-progress"
	}
	return "ClaimState(" + strconv.Itoa(int(s)) + ")"
}

// DedupeStore records which messages were handled, for [Dedupe]. It is a
// lease protocol, so that a message is marked only after its handler
// succeeded and two concurrent deliveries of one message cannot both run:
//
//	Claim     absent (or expired) → in progress, lease until now+lease → Claimed
//	          in progress, lease not expired                           → InProgress
//	          done, mark not expired                                   → AlreadyDone
//	Complete  → done, kept until now+ttl (whoever holds the lease: the work is done)
//	Release   in progress under this token → absent (else no change)
//
// Claim must be atomic: of concurrent claims of an absent key exactly one
// gets Claimed. The token that Claim returns identifies the claim, so that
// a Release by a holder whose lease expired and was taken over does not
// drop the new holder's claim. Implementations: [MemoryDedupeStore], and
// package middleware/sqlstore for PostgreSQL and SQLite.
type DedupeStore interface {
	// Claim tries to take key for lease. It returns the outcome and, when
	// Claimed, the claim's token.
	Claim(ctx context.Context, key string, lease time.Duration) (ClaimState, int64, error)
	// Complete marks key as done for ttl.
	Complete(ctx context.Context, key string, token int64, ttl time.Duration) error
	// Release drops the claim that token identifies, if it still holds key.
	Release(ctx context.Context, key string, token int64) error
}

// DedupeConfig configures [Dedupe]. The zero value is valid: every field
// documents its default.
type DedupeConfig struct {
	// Store records handled messages. Default: a new MemoryDedupeStore of
	// DefaultMemoryDedupeSize, which only sees this process's deliveries.
	// Share a SQL store (package middleware/sqlstore) between the
	// processes of a consumer group.
	Store DedupeStore
	// Key returns the deduplication key of a message; "" lets the message
	// through without deduplication. Default DedupeKey: the message ID
	// scoped by consumer group and topic.
	Key func(*message.Message) string
	// TTL is how long a handled message is remembered: a duplicate that
	// arrives later runs again. Default 24h.
	TTL time.Duration
	// Lease is how long a claim protects a message being handled. A
	// duplicate that arrives while the lease runs is nacked (see
	// InFlightDelay); a lease that expires, because its process crashed
	// or its handler is still running, lets the next delivery run the
	// handler. Set it above the longest handler run. Default 1m.
	Lease time.Duration
	// InFlightDelay is the redelivery delay asked for a duplicate that
	// arrives while the message is being handled. Default 1s.
	InFlightDelay time.Duration
	// OnDuplicate, when set, is called for every duplicate of a handled
	// message, which is acked without running the handler.
	OnDuplicate func(ctx context.Context, m *message.Message)
	// OnInFlight, when set, is called for every duplicate that is nacked
	// because the message is being handled.
	OnInFlight func(ctx context.Context, m *message.Message)
	// OnStoreError, when set, receives store failures that do not change
	// the message's outcome: a Complete that failed after the handler
	// succeeded (the message is acked; a later duplicate may run again),
	// or a Release that failed after the handler failed (duplicates are
	// nacked until the lease expires).
	OnStoreError func(ctx context.Context, m *message.Message, err error)

	// memory is set when Store ignores contexts: then ending a claim
	// needs no context of its own.
	memory bool
}

// contextFree is implemented by the memory stores, which never block and
// ignore their context: the middlewares skip deriving one for them (a
// timer and three allocations per message).
type contextFree interface{ ignoresContext() }

// detached returns the context for a store call that must finish even
// when the handler's context has ended (the drain deadline), bounded by
// its own timeout; for a store that ignores contexts, ctx itself.
func detached(ctx context.Context, memory bool) (context.Context, context.CancelFunc) {
	if memory {
		return ctx, func() {}
	}
	return context.WithTimeout(context.WithoutCancel(ctx), storeCallTimeout)
}

// ErrInFlight is the cause of the error that [Dedupe] returns for a
// duplicate of a message that is being handled: a deferral (Defer) that
// nacks the duplicate so that it comes back later, which Retry does not
// retry and DLQ does not dead-letter.
var ErrInFlight = message.Errorf(message.Unavailable, "dedupe", "message is being handled by another delivery")

// DedupeKey is the default deduplication key: the message ID, scoped by
// the consumer group and topic it was received on, so that groups sharing
// a store do not see each other's messages as duplicates. A message with
// no ID has no key.
func DedupeKey(m *message.Message) string {
	if m.ID == "" {
		return ""
	}
	d, ok := m.Delivery()
	if !ok {
		return m.ID
	}
	return d.Group + "/" + d.Topic + "/" + m.ID
}

// storeCallTimeout bounds the store calls made after the handler ran
// (dedupe's Complete and Release, ordering's Advance): they run on a
// context that the drain deadline does not cancel, because a lost write
// lets a duplicate run again.
const storeCallTimeout = 10 * time.Second

// Dedupe returns a middleware that makes handling idempotent: a message
// whose key was already handled successfully is acked without running
// the handler.
//
// For each message it claims the key in the store, runs the handler, and
// on success marks the key done for TTL; on failure (error or panic) it
// releases the claim so that the redelivery runs the handler again. A
// message is therefore marked only after its handler succeeded.
//
// Two concurrent deliveries of one message run the handler once: the
// second finds the first's claim and is deferred with
// Defer(ErrInFlight, InFlightDelay). When it comes back the
// first has either completed (the duplicate is then acked) or released
// (it then runs). It does not wait in place for the first's outcome: that
// would hold a handler slot on work that may be in another process, and
// under per-key ordering the wait could block the very goroutine that must
// finish first.
//
// The mark is written after the handler's effects, so a crash between the
// two leaves effects without a mark, and the redelivery runs the handler
// again once the lease expires. Where the handler's effects are database
// writes, sqlstore.TxDedupe commits them and the mark in one transaction.
//
// A failed Claim nacks the message with an Unavailable error.
func Dedupe(cfg DedupeConfig) (subscriber.Middleware, error) {
	const op = "dedupe"
	if cfg.TTL < 0 || cfg.Lease < 0 || cfg.InFlightDelay < 0 {
		return nil, message.Errorf(message.InvalidArgument, op, "negative duration in dedupe config")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.Lease == 0 {
		cfg.Lease = time.Minute
	}
	if cfg.InFlightDelay == 0 {
		cfg.InFlightDelay = time.Second
	}
	if cfg.Key == nil {
		cfg.Key = DedupeKey
	}
	if cfg.Store == nil {
		s, err := NewMemoryDedupeStore(0)
		if err != nil {
			return nil, err
		}
		cfg.Store = s
	}
	_, cfg.memory = cfg.Store.(contextFree)
	inFlight := Defer(ErrInFlight, cfg.InFlightDelay)
	return func(next subscriber.Handler) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			key := cfg.Key(m)
			if key == "" {
				return next(ctx, m)
			}
			state, token, err := cfg.Store.Claim(ctx, key, cfg.Lease)
			if err != nil {
				return codedStoreError("dedupe: claim", err)
			}
			switch state {
			case AlreadyDone:
				if n := noteFrom(ctx); n != nil {
					n.duplicate = true
				}
				if cfg.OnDuplicate != nil {
					cfg.OnDuplicate(ctx, m)
				}
				return nil
			case InProgress:
				if cfg.OnInFlight != nil {
					cfg.OnInFlight(ctx, m)
				}
				return inFlight
			case Claimed:
			default:
				return message.Errorf(message.Unknown, op, "store returned claim state %v", state)
			}
			return cfg.run(ctx, next, m, key, token)
		}
	}, nil
}

// run calls the handler under a claim and ends the claim: Complete after
// success, Release after an error or a panic (which goes on up).
func (cfg *DedupeConfig) run(ctx context.Context, next subscriber.Handler, m *message.Message, key string, token int64) error {
	ok := false
	defer func() {
		if ok {
			return
		}
		sctx, cancel := detached(ctx, cfg.memory)
		defer cancel()
		if err := cfg.Store.Release(sctx, key, token); err != nil && cfg.OnStoreError != nil {
			cfg.OnStoreError(ctx, m, codedStoreError("dedupe: release", err))
		}
	}()
	if err := next(ctx, m); err != nil {
		return err
	}
	ok = true
	sctx, cancel := detached(ctx, cfg.memory)
	defer cancel()
	if err := cfg.Store.Complete(sctx, key, token, cfg.TTL); err != nil && cfg.OnStoreError != nil {
		// The work is done: nacking now would run it again.
		cfg.OnStoreError(ctx, m, codedStoreError("dedupe: complete", err))
	}
	return nil
}

// dedupeStoreError gives a store failure a code: its own when it has one,
// else Unavailable, since a store that failed may answer next time.
// Context errors stay as they are.
func codedStoreError(op string, err error) error {
	var e *message.Error
	if errors.As(err, &e) {
		return err
	}
	return message.Wrap(message.Unavailable, op, err)
}
