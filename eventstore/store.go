package eventstore

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
)

// Options configures a Store. The zero value is valid.
type Options struct {
	// Codec encodes event data and snapshots. Default JSON.
	Codec Codec
	// Registry maps type names to Go types for decoding, and Go types to
	// names on append. Default: a new empty Registry (see Store.Registry).
	Registry *Registry
	// SnapshotEvery, when > 0, makes Save take a snapshot of a
	// [Snapshotter] aggregate each time its stream's version crosses a
	// multiple of it. Default 0: snapshots only on demand.
	SnapshotEvery int64
	// Now is the clock stamped on appended events. Default time.Now.
	Now func() time.Time
	// Upcaster, when set, rewrites every event read (Load, ReadStream,
	// ReadAll, Query, Decode) from the version of its type it was stored
	// at to the newest, before it is decoded, so the registered Go type
	// is always the newest version's (package schema's *Upcasters is
	// one). Stored events are never rewritten. When it also implements
	// [VersionStamper], events appended with Data get the newest
	// version's metadata. Default nil: data is decoded as stored.
	Upcaster Upcaster
}

// Upcaster brings an event's encoded data up to its type's newest
// version. It returns data and md unchanged for an event already at the
// newest version (or of a type it knows nothing of), and must not modify
// data or md in place. An error is returned by the read, with its code
// (package schema gives Permanent).
type Upcaster interface {
	Upcast(eventType string, md message.Metadata, data []byte) ([]byte, message.Metadata, error)
}

// VersionStamper is implemented by an Upcaster that also marks new
// events: Stamp returns md (a copy, when it changes it) carrying the
// version that an event of eventType encoded from its Go type has, the
// newest.
type VersionStamper interface {
	Stamp(eventType string, md message.Metadata) message.Metadata
}

// Store is an event store: typed, validated access to a Driver.
type Store struct {
	d    Driver
	opts Options
}

// MaxBatch is the most events one append may carry.
const MaxBatch = 10000

// New returns a Store on d.
func New(d Driver, opts Options) (*Store, error) {
	if d == nil {
		return nil, message.Errorf(message.InvalidArgument, "eventstore: new", "nil driver")
	}
	if opts.SnapshotEvery < 0 {
		return nil, message.Errorf(message.InvalidArgument, "eventstore: new", "negative SnapshotEvery %d", opts.SnapshotEvery)
	}
	if opts.Codec == nil {
		opts.Codec = JSON
	}
	if opts.Registry == nil {
		opts.Registry = &Registry{}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Store{d: d, opts: opts}, nil
}

// Registry returns the store's type registry.
func (s *Store) Registry() *Registry { return s.opts.Registry }

// Driver returns the store's driver.
func (s *Store) Driver() Driver { return s.d }

// Codec returns the store's codec.
func (s *Store) Codec() Codec { return s.opts.Codec }

// Append appends events to stream if expected holds, atomically: all or
// none. It fills each event's ID (when empty), Type (from the registry when
// empty), Time, Stream, Version and Raw in place (Position on the last
// event only; read the events back for the others'), and stamps the
// correlation and causation IDs of ctx's message (middleware.Correlation)
// on events that carry none.
//
// A conflict is a *ConflictError (errors.Is ErrConflict). Appending again
// events whose IDs are already in the stream, in the same order, is a
// no-op that reports Duplicate; appending some of them at another place is
// message.ErrInvalidArgument.
func (s *Store) Append(ctx context.Context, stream string, expected ExpectedVersion, events ...*Event) (AppendResult, error) {
	recs, err := s.records(ctx, stream, expected, events)
	if err != nil {
		return AppendResult{}, err
	}
	res, err := s.d.Append(ctx, stream, expected, recs)
	if err == nil {
		fill(events, recs, res)
	}
	return res, err
}

// AppendTx is Append inside tx, the caller's own transaction, so that the
// events commit with the caller's other writes (an outbox row, say). The
// driver must be a TxDriver on tx's database, else it fails with
// message.ErrUnimplemented. The caller commits tx; until then the events
// are not read by anyone else. On SQLite, begin tx with the database's
// write lock (_txlock=immediate) so that appenders queue rather than fail.
func (s *Store) AppendTx(ctx context.Context, tx *sql.Tx, stream string, expected ExpectedVersion, events ...*Event) (AppendResult, error) {
	td, ok := s.d.(TxDriver)
	if !ok {
		return AppendResult{}, message.Errorf(message.Unimplemented, "eventstore: append", "driver %T cannot append in a transaction", s.d)
	}
	if tx == nil {
		return AppendResult{}, message.Errorf(message.InvalidArgument, "eventstore: append", "nil transaction")
	}
	recs, err := s.records(ctx, stream, expected, events)
	if err != nil {
		return AppendResult{}, err
	}
	res, err := td.AppendTx(ctx, tx, stream, expected, recs)
	if err == nil {
		fill(events, recs, res)
	}
	return res, err
}

func fill(events []*Event, recs []Record, res AppendResult) {
	first := res.Version - int64(len(events)) + 1
	for i, e := range events {
		e.Stream = recs[i].Stream
		e.Version = first + int64(i)
		if i == len(events)-1 {
			e.Position = res.Position
		}
	}
}

func (s *Store) records(ctx context.Context, stream string, expected ExpectedVersion, events []*Event) ([]Record, error) {
	const op = "eventstore: append"
	if stream == "" {
		return nil, message.Errorf(message.InvalidArgument, op, "empty stream name")
	}
	if !expected.valid() {
		return nil, message.Errorf(message.InvalidArgument, op, "invalid expected version %d", int64(expected))
	}
	if len(events) == 0 {
		return nil, message.Errorf(message.InvalidArgument, op, "no events")
	}
	if len(events) > MaxBatch {
		return nil, message.Errorf(message.InvalidArgument, op, "%d events in one append, over %d", len(events), MaxBatch)
	}
	corr, hasCorr := middleware.CorrelationFromContext(ctx)
	now := s.opts.Now().UTC().Truncate(time.Millisecond)
	recs := make([]Record, len(events))
	seen := make(map[string]bool, len(events))
	for i, e := range events {
		if e == nil {
			return nil, message.Errorf(message.InvalidArgument, op, "nil event at %d", i)
		}
		if e.ID == "" {
			e.ID = message.NewID()
		}
		if seen[e.ID] {
			return nil, message.Errorf(message.InvalidArgument, op, "event ID %q twice in one append", e.ID)
		}
		seen[e.ID] = true
		if e.Type == "" {
			n, ok := s.opts.Registry.NameOf(e.Data)
			if !ok {
				return nil, message.Errorf(message.InvalidArgument, op, "event %d: no Type and %T is not registered", i, e.Data)
			}
			e.Type = n
		}
		if e.Data != nil {
			raw, err := s.opts.Codec.Marshal(e.Data)
			if err != nil {
				return nil, message.Errorf(message.InvalidArgument, op, "encode %s: %w", e.Type, err)
			}
			e.Raw = raw
			if vs, ok := s.opts.Upcaster.(VersionStamper); ok {
				e.Metadata = vs.Stamp(e.Type, e.Metadata)
			}
		}
		for k := range e.Metadata {
			if k == "" {
				return nil, message.Errorf(message.InvalidArgument, op, "event %d: empty metadata key", i)
			}
		}
		if hasCorr {
			if e.Metadata.Get(message.KeyCorrelationID) == "" && e.Metadata.Get(message.KeyCausationID) == "" {
				e.Metadata = e.Metadata.Clone()
				if e.Metadata == nil {
					e.Metadata = message.Metadata{}
				}
				e.Metadata[message.KeyCorrelationID] = corr.CorrelationID
				e.Metadata[message.KeyCausationID] = corr.MessageID
			}
		}
		e.Time = now
		e.Stream = stream
		recs[i] = Record{ID: e.ID, Stream: stream, Type: e.Type, Data: e.Raw, Metadata: e.Metadata, Time: now}
	}
	return recs, nil
}

// Decode turns a record into an Event, decoding its data into a value of
// the type registered for its Type (Data stays nil when none is).
func (s *Store) Decode(r Record) (*Event, error) {
	if s.opts.Upcaster != nil {
		data, md, err := s.opts.Upcaster.Upcast(r.Type, r.Metadata, r.Data)
		if err != nil {
			return nil, message.Wrap(message.CodeOf(err), "eventstore: decode",
				fmt.Errorf("upcast event %s (stream %q version %d) of type %q: %w", r.ID, r.Stream, r.Version, r.Type, err))
		}
		r.Data, r.Metadata = data, md
	}
	e := &Event{ID: r.ID, Stream: r.Stream, Version: r.Version, Position: r.Position, Type: r.Type,
		Raw: r.Data, Metadata: r.Metadata, Time: r.Time}
	if t, ok := s.opts.Registry.TypeOf(r.Type); ok {
		p := reflect.New(t)
		if err := s.opts.Codec.Unmarshal(r.Data, p.Interface()); err != nil {
			return nil, message.Errorf(message.Permanent, "eventstore: decode",
				"event %s (stream %q version %d) of type %q: %w", r.ID, r.Stream, r.Version, r.Type, err)
		}
		e.Data = p.Elem().Interface()
	}
	return e, nil
}

func (s *Store) decodeAll(recs []Record) ([]*Event, error) {
	out := make([]*Event, len(recs))
	for i, r := range recs {
		e, err := s.Decode(r)
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

// ReadStream reads up to limit (0: all) events of stream forward from
// version from (0 or 1: the start). A stream with no events reads as
// empty.
func (s *Store) ReadStream(ctx context.Context, stream string, from int64, limit int) ([]*Event, error) {
	return s.Query(ctx, StreamQuery{Stream: stream, From: from, Limit: limit})
}

// ReadStreamBackward reads up to limit (0: all) events of stream from
// version from (0: the last) down to the first.
func (s *Store) ReadStreamBackward(ctx context.Context, stream string, from int64, limit int) ([]*Event, error) {
	return s.Query(ctx, StreamQuery{Stream: stream, From: from, Limit: limit, Backward: true})
}

// ReadStreamAsOf reads stream as it was: its events up to version
// maxVersion (0: any) and appended no later than until (zero: any).
func (s *Store) ReadStreamAsOf(ctx context.Context, stream string, maxVersion int64, until time.Time) ([]*Event, error) {
	return s.Query(ctx, StreamQuery{Stream: stream, MaxVersion: maxVersion, Until: until})
}

// Query reads the events of a stream that q selects.
func (s *Store) Query(ctx context.Context, q StreamQuery) ([]*Event, error) {
	if q.Stream == "" {
		return nil, message.Errorf(message.InvalidArgument, "eventstore: read stream", "empty stream name")
	}
	if q.From < 0 || q.Limit < 0 || q.MaxVersion < 0 {
		return nil, message.Errorf(message.InvalidArgument, "eventstore: read stream", "negative from, limit or max version")
	}
	recs, err := s.d.ReadStream(ctx, q)
	if err != nil {
		return nil, err
	}
	return s.decodeAll(recs)
}

// ReadAll reads up to limit (0: 1000) events of every stream after
// position after, in global order. It is gap-safe: an event it has not
// returned yet never appears later at a position before the last one it
// returned, so a reader that continues from the last position it saw
// misses nothing.
func (s *Store) ReadAll(ctx context.Context, after Position, limit int) ([]*Event, error) {
	if limit < 0 {
		return nil, message.Errorf(message.InvalidArgument, "eventstore: read all", "negative limit")
	}
	if limit == 0 {
		limit = 1000
	}
	recs, err := s.d.ReadAll(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	return s.decodeAll(recs)
}

// Version returns stream's version: the number of its events, 0 when it
// has none.
func (s *Store) Version(ctx context.Context, stream string) (int64, error) {
	evs, err := s.d.ReadStream(ctx, StreamQuery{Stream: stream, Backward: true, Limit: 1})
	if err != nil || len(evs) == 0 {
		return 0, err
	}
	return evs[0].Version, nil
}
