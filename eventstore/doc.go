// Package eventstore keeps streams of events: a per-stream version, a
// global log in commit order, expected-version appends, idempotency by
// event ID, snapshots and as-of reads. Users hold a *Store; a backend
// implements the small [Driver] interface. Package eventstore/sqlstore is
// the driver for SQLite (the zero-set-up default) and PostgreSQL; package
// eventstore/storetest is the suite every driver passes.
//
//	d, _ := sqlstore.New(db, sqlstore.Config{Dialect: sqlstore.SQLite})
//	_ = d.Migrate(ctx)
//	store, _ := eventstore.New(d, eventstore.Options{})
//	_ = eventstore.Register[Deposited](store.Registry(), "Deposited")
//	_, err := store.Append(ctx, "account-42", eventstore.NoStream, &eventstore.Event{Data: Deposited{100}})
//
// # Semantics
//
// A stream's version is its number of events; its first event is version
// 1. Append takes an [ExpectedVersion]: [NoStream], [StreamExists],
// [Exactly](n) or [Any]. The check and the insert are one transaction, so
// of concurrent appenders expecting the same version exactly one wins.
// Every event has an ID (a UUIDv7 unless given): appending again events
// already in the stream at the same place (a retry) is a no-op that
// reports Duplicate, whatever the expected version now says.
//
// Events are typed: Data is encoded with the store's [Codec] (JSON by
// default) under the name its Go type is registered under in the
// [Registry], and decoded back to a value of that type. Events of an
// unregistered type read with Data nil and Raw set. Append stamps the
// correlation and causation IDs of the message being handled
// (middleware.Correlation) as message.KeyCorrelationID and
// message.KeyCausationID.
//
// ReadAll reads the global log in order of [Position]. It is gap-safe: it
// never returns an event while an event that will sort before it may still
// commit, so a reader that continues from the last position it saw never
// skips one (see eventstore/sqlstore for how each database ensures it).
//
// [Store.Load] rebuilds an [Aggregate] by replay, starting from its latest
// snapshot when it is a [Snapshotter]; [Store.Save] appends and, with
// Options.SnapshotEvery, snapshots every N events. LoadOptions.MaxVersion
// and LoadOptions.Until give the state as of a version or a time ("the
// balance on March 15th"): snapshots taken later are not used.
//
// # Errors
//
// Bad arguments are message.ErrInvalidArgument. A failed expectation is a
// *[ConflictError], which names the stream, the expected and the actual
// version, and matches [ErrConflict] and message.ErrConflict (reload
// and retry may succeed). Data that does not decode is message.ErrPermanent.
// Database failures are message.ErrUnavailable; context errors are returned
// as they are.
package eventstore
