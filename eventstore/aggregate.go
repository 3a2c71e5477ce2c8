package eventstore

import (
	"context"
	"time"

	"github.com/polybus/polybus/message"
)

// Aggregate is state rebuilt from its stream's events.
type Aggregate interface {
	// Apply changes the state by one event. It must not fail for an event
	// that was validly appended; an error stops the load.
	Apply(e *Event) error
}

// Snapshotter is an aggregate whose state can be saved and restored, so
// that loading it reads only the events after its latest snapshot.
type Snapshotter interface {
	Aggregate
	// SnapshotState returns the state to save; the store encodes it with
	// its codec.
	SnapshotState() any
	// RestoreSnapshot replaces the state with a saved one; decode it with
	// the codec given.
	RestoreSnapshot(c Codec, data []byte) error
}

// LoadOptions select what Load reads.
type LoadOptions struct {
	// MaxVersion, when > 0, loads the state as of that version.
	MaxVersion int64
	// Until, when not zero, loads the state as of that time: events
	// appended after it are ignored.
	Until time.Time
	// NoSnapshot replays from the first event even when a snapshot exists.
	NoSnapshot bool
}

// Load rebuilds agg from stream: from its latest fitting snapshot when agg
// is a Snapshotter, then the events after it. It returns the stream
// version agg reflects (0 for a stream with no events: agg is untouched).
func (s *Store) Load(ctx context.Context, stream string, agg Aggregate, o LoadOptions) (int64, error) {
	const op = "eventstore: load"
	if agg == nil || stream == "" {
		return 0, message.Errorf(message.InvalidArgument, op, "nil aggregate or empty stream")
	}
	var from int64 = 1
	var version int64
	if sn, ok := agg.(Snapshotter); ok && !o.NoSnapshot {
		snap, found, err := s.d.LoadSnapshot(ctx, stream, o.MaxVersion, o.Until)
		if err != nil {
			return 0, err
		}
		if found {
			if err := sn.RestoreSnapshot(s.opts.Codec, snap.Data); err != nil {
				return 0, message.Errorf(message.Permanent, op, "restore snapshot of %q at %d: %w", stream, snap.Version, err)
			}
			version = snap.Version
			from = snap.Version + 1
		}
	}
	const page = 1000
	for {
		evs, err := s.Query(ctx, StreamQuery{Stream: stream, From: from, Limit: page, MaxVersion: o.MaxVersion, Until: o.Until})
		if err != nil {
			return 0, err
		}
		for _, e := range evs {
			if err := agg.Apply(e); err != nil {
				return 0, err
			}
			version = e.Version
		}
		if len(evs) < page {
			return version, nil
		}
		from = version + 1
	}
}

// Save appends events to stream expecting it at version (the version Load
// returned), applies them to agg, and, when Options.SnapshotEvery is set
// and agg is a Snapshotter, saves a snapshot if the new version crossed a
// multiple of it. A failed snapshot does not undo the append: Save returns
// the append's result and the snapshot's error.
func (s *Store) Save(ctx context.Context, stream string, agg Aggregate, version int64, events ...*Event) (AppendResult, error) {
	res, err := s.Append(ctx, stream, Exactly(version), events...)
	if err != nil {
		return res, err
	}
	if res.Duplicate {
		return res, nil
	}
	for _, e := range events {
		// Apply decoded copies, as a reload would see them.
		if err := agg.Apply(e); err != nil {
			return res, err
		}
	}
	if n := s.opts.SnapshotEvery; n > 0 && res.Version/n > version/n {
		if sn, ok := agg.(Snapshotter); ok {
			return res, s.Snapshot(ctx, stream, res.Version, sn)
		}
	}
	return res, nil
}

// Snapshot saves agg's state as stream's snapshot at version (the version
// agg reflects). Snapshots are an optimisation: events stay the truth.
func (s *Store) Snapshot(ctx context.Context, stream string, version int64, agg Snapshotter) error {
	const op = "eventstore: snapshot"
	if agg == nil || stream == "" || version <= 0 {
		return message.Errorf(message.InvalidArgument, op, "nil aggregate, empty stream or version %d", version)
	}
	data, err := s.opts.Codec.Marshal(agg.SnapshotState())
	if err != nil {
		return message.Errorf(message.InvalidArgument, op, "encode: %w", err)
	}
	return s.d.SaveSnapshot(ctx, SnapshotRecord{Stream: stream, Version: version, Data: data,
		Time: s.opts.Now().UTC().Truncate(time.Millisecond)})
}
