package eventstore

import (
	"context"
	"database/sql"
	"time"

	"github.com/polybus/polybus/message"
)

// Record is an event as a driver stores it: Event with the data encoded.
type Record struct {
	ID       string
	Stream   string
	Version  int64
	Position Position
	Type     string
	Data     []byte
	Metadata message.Metadata
	Time     time.Time
}

// StreamQuery selects events of one stream.
type StreamQuery struct {
	Stream string
	// From is the first version to read forward (0 or 1: from the start),
	// or the last version to read backward (0: from the end).
	From int64
	// Backward reads from From down to version 1.
	Backward bool
	// Limit caps the number of events; 0 means no limit.
	Limit int
	// MaxVersion, when > 0, ignores events after that version.
	MaxVersion int64
	// Until, when not zero, ignores events appended after it.
	Until time.Time
}

// SnapshotRecord is an aggregate's encoded state at a version of its
// stream.
type SnapshotRecord struct {
	Stream  string
	Version int64
	Type    string
	Data    []byte
	Time    time.Time
}

// Driver is what a backend implements. The [Store] validates arguments,
// assigns IDs and times, encodes and decodes; a driver stores and reads
// records. Every method is safe for concurrent use.
//
// Obligations: Append checks expected against the stream's version and
// inserts recs (IDs and times set, Version and Position not) atomically,
// numbering them from the stream's version + 1; it returns a
// *ConflictError when expected does not hold, and treats a batch whose
// every ID is already in the stream, in order, as a duplicate (AppendResult
// of the existing events, Duplicate true). ReadAll returns the events after
// a position in global order, and never one that could be followed by an
// event committing later at a lower position (gap safety). Context errors
// are returned unwrapped.
type Driver interface {
	Append(ctx context.Context, stream string, expected ExpectedVersion, recs []Record) (AppendResult, error)
	ReadStream(ctx context.Context, q StreamQuery) ([]Record, error)
	ReadAll(ctx context.Context, after Position, limit int) ([]Record, error)
	SaveSnapshot(ctx context.Context, s SnapshotRecord) error
	// LoadSnapshot returns the latest snapshot of stream at or below
	// maxVersion (0: any) and not taken after until (zero: any), and
	// false when there is none.
	LoadSnapshot(ctx context.Context, stream string, maxVersion int64, until time.Time) (SnapshotRecord, bool, error)
}

// TxDriver is a Driver on a database/sql database that can append inside
// the caller's transaction, so that the events and the caller's own writes
// (an outbox row, a read model) commit together.
type TxDriver interface {
	Driver
	AppendTx(ctx context.Context, tx *sql.Tx, stream string, expected ExpectedVersion, recs []Record) (AppendResult, error)
}
