package eventstore

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/polybus/polybus/message"
)

// Position is a place in the global log. The log is ordered by Commit, then
// by Seq: Commit is the committing transaction's ID on PostgreSQL (0 on
// SQLite, whose writers are serialised) and Seq is the event's unique,
// increasing row number. The zero Position is before the first event.
type Position struct {
	Commit uint64
	Seq    int64
}

// Less reports whether p comes before q in the global log.
func (p Position) Less(q Position) bool {
	if p.Commit != q.Commit {
		return p.Commit < q.Commit
	}
	return p.Seq < q.Seq
}

// IsZero reports whether p is the start of the log.
func (p Position) IsZero() bool { return p == Position{} }

// String returns "commit/seq".
func (p Position) String() string {
	return strconv.FormatUint(p.Commit, 10) + "/" + strconv.FormatInt(p.Seq, 10)
}

// ParsePosition parses the text of [Position.String]; a plain number is
// read as Seq with Commit 0.
func ParsePosition(s string) (Position, error) {
	var p Position
	c, q, ok := cut(s)
	if !ok {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return p, message.Errorf(message.InvalidArgument, "eventstore: parse position", "position %q is not commit/seq", s)
		}
		return Position{Seq: n}, nil
	}
	cm, err1 := strconv.ParseUint(c, 10, 64)
	sq, err2 := strconv.ParseInt(q, 10, 64)
	if err1 != nil || err2 != nil || sq < 0 {
		return p, message.Errorf(message.InvalidArgument, "eventstore: parse position", "position %q is not commit/seq", s)
	}
	return Position{Commit: cm, Seq: sq}, nil
}

func cut(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// Event is one event of a stream. On append the caller sets Data (and
// optionally ID, Type and Metadata); the store fills in the rest.
type Event struct {
	// ID identifies the event and makes its append idempotent: appending an
	// event whose ID is already in the stream, at the same place, is a
	// no-op. Default: a new UUIDv7.
	ID string
	// Stream is the stream the event belongs to, such as "account-42".
	Stream string
	// Version is the event's number in its stream: 1 for the first.
	Version int64
	// Position is the event's place in the global log.
	Position Position
	// Type names the event's type: the name it was registered under
	// (Registry), or a name given on append.
	Type string
	// Data is the decoded event: a value of the type registered for Type,
	// or nil when Type is not registered (Raw still holds it). On append,
	// Data is encoded with the store's codec unless it is nil, in which
	// case Raw is stored as it is.
	Data any
	// Raw is the encoded event.
	Raw []byte
	// Metadata holds the event's headers: message.KeyCorrelationID,
	// message.KeyCausationID and any of the application's own.
	Metadata message.Metadata
	// Time is when the event was appended (the appender's clock,
	// millisecond precision).
	Time time.Time
}

// CorrelationID returns the event's message.KeyCorrelationID metadata.
func (e *Event) CorrelationID() string { return e.Metadata.Get(message.KeyCorrelationID) }

// CausationID returns the event's message.KeyCausationID metadata.
func (e *Event) CausationID() string { return e.Metadata.Get(message.KeyCausationID) }

// ExpectedVersion is the condition an append puts on its stream's version
// (the number of events in it). Build one with [Exactly], or use [Any],
// [NoStream] or [StreamExists].
type ExpectedVersion int64

const (
	// Any appends whatever the stream's version.
	Any ExpectedVersion = -1
	// StreamExists appends only to a stream with at least one event.
	StreamExists ExpectedVersion = -2
	// NoStream appends only to a stream with no events: Exactly(0).
	NoStream ExpectedVersion = 0
)

// Exactly appends only when the stream holds exactly n events.
func Exactly(n int64) ExpectedVersion { return ExpectedVersion(n) }

// String names the expectation.
func (v ExpectedVersion) String() string {
	switch {
	case v == Any:
		return "any"
	case v == StreamExists:
		return "stream exists"
	case v == NoStream:
		return "no stream"
	case v > 0:
		return strconv.FormatInt(int64(v), 10)
	}
	return "ExpectedVersion(" + strconv.FormatInt(int64(v), 10) + ")"
}

// Holds reports whether a stream at version actual meets v.
func (v ExpectedVersion) Holds(actual int64) bool {
	switch v {
	case Any:
		return true
	case StreamExists:
		return actual > 0
	}
	return int64(v) == actual
}

func (v ExpectedVersion) valid() bool { return v >= StreamExists }

// ErrConflict matches every [ConflictError] with errors.Is.
var ErrConflict = errors.New("eventstore: version conflict")

// ConflictError is an append whose expected version did not hold. It names
// both versions. Its code (message.CodeOf) is message.Conflict: the
// append may succeed when retried after reloading the stream. errors.Is
// matches it against ErrConflict and message.ErrConflict.
type ConflictError struct {
	Stream   string
	Expected ExpectedVersion
	Actual   int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("polybus: eventstore: append: version conflict on stream %q: expected version %s, actual version %d",
		e.Stream, e.Expected, e.Actual)
}

// Is matches ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Unwrap returns the coded error (message.Conflict).
func (e *ConflictError) Unwrap() error {
	return &message.Error{Code: message.Conflict, Op: "eventstore: append",
		Msg: fmt.Sprintf("version conflict on stream %q: expected %s, actual %d", e.Stream, e.Expected, e.Actual)}
}

// AppendResult reports an append.
type AppendResult struct {
	// Version is the stream's version after the append: the last appended
	// event's version.
	Version int64
	// Position is the last appended event's global position. On
	// PostgreSQL the commit part is known only once the transaction
	// commits, and is the transaction's ID.
	Position Position
	// Duplicate reports an idempotent no-op: every event was already in the
	// stream, and Version and Position are theirs.
	Duplicate bool
}
