package middleware

import (
	"context"
	"strconv"

	"github.com/polybus/polybus/message"
)

// Sequencer stamps messages with per-key sequence numbers, the publisher's
// half of [Ordering]: each message with a non-empty Key gets the next
// number of its topic and key (counter key topic + "/" + Key) in its metadata under message.KeySequence,
// in decimal, starting at 1.
//
// Stamp the messages of one key in the order they are meant to be handled;
// they may then be published in any order, concurrently, through any
// broker: the Ordering middleware restores their order. A number whose
// message is never published is a gap that consumers wait out (see
// OrderingConfig.GapTimeout), so stamp only what you publish.
//
// A Sequencer is safe for concurrent use; several publisher processes may
// share one key space when they share a persistent counter.
type Sequencer struct {
	counter SequenceCounter
}

// NewSequencer returns a Sequencer that takes its numbers from counter, or
// from a new MemorySequenceCounter when counter is nil.
func NewSequencer(counter SequenceCounter) *Sequencer {
	if counter == nil {
		counter = NewMemorySequenceCounter()
	}
	return &Sequencer{counter: counter}
}

// Stamp gives each message of msgs that has a Key and no sequence number
// yet the next number of its key on topic, in slice order. It changes the
// messages' Metadata in place. A message that already carries a number
// keeps it, so that stamping again the messages of a failed Publish before
// retrying it opens no gap. Messages without a Key are left alone.
//
// The numbers of one key are reserved in one counter call. When a
// reservation fails, Stamp returns its error and the keys reserved before
// it stay stamped.
func (s *Sequencer) Stamp(ctx context.Context, topic string, msgs ...*message.Message) error {
	const op = "sequencer: stamp"
	if topic == "" {
		return message.Errorf(message.InvalidArgument, op, "empty topic")
	}
	// Count what each key needs, keeping the keys in first-seen order.
	need := map[string]uint64{}
	var keys []string
	for i, m := range msgs {
		if m == nil {
			return message.Errorf(message.InvalidArgument, op, "nil message at index %d", i)
		}
		if m.Key == "" {
			continue
		}
		if _, ok := m.Metadata[message.KeySequence]; ok {
			continue
		}
		if need[m.Key] == 0 {
			keys = append(keys, m.Key)
		}
		need[m.Key]++
	}
	next := make(map[string]uint64, len(keys))
	var err error
	for _, k := range keys {
		var first uint64
		first, err = s.counter.Reserve(ctx, topic+"/"+k, need[k])
		if err != nil {
			err = codedStoreError(op, err)
			break
		}
		next[k] = first
	}
	// Stamp what was reserved even after a failure: numbers reserved and
	// not used would be gaps.
	for _, m := range msgs {
		n, ok := next[m.Key]
		if !ok {
			continue
		}
		if _, stamped := m.Metadata[message.KeySequence]; stamped {
			continue
		}
		if m.Metadata == nil {
			m.Metadata = message.Metadata{}
		}
		m.Metadata[message.KeySequence] = strconv.FormatUint(n, 10)
		next[m.Key] = n + 1
	}
	return err
}
