package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
)

// dedupeMargin is added to a broker's deduplication window: the producer's
// clock (Message.Time) and the broker's may differ a little, and the broker
// forgets IDs on a timer.
const dedupeMargin = time.Second

// dedupeWindow returns how long the broker behind p drops a publish to
// topic of a message ID that it stored before: such a replayed copy would
// be acknowledged and silently discarded. 0 means no window, or one that
// polybus cannot see.
//
// Only NATS JetStream is known to deduplicate by message ID (its streams'
// duplicates window, 2 minutes by default), and polybus's capabilities do
// not declare it yet, so the window is read from the stream through the
// publisher's As. A topic with no stream yet has stored nothing.
func dedupeWindow(ctx context.Context, p *publisher.Publisher, topic string) (time.Duration, error) {
	var js jetstream.JetStream
	if !p.As(&js) {
		return 0, nil
	}
	name, err := js.StreamNameBySubject(ctx, topic)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, message.Wrap(message.Unavailable, "dlq replay: reading the stream's duplicates window", err)
	}
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, message.Wrap(message.Unavailable, "dlq replay: reading the stream's duplicates window", err)
	}
	return s.CachedInfo().Config.Duplicates, nil
}

// tooSoon returns an error when m, replayed now with its own ID, would fall
// within the broker's deduplication window of its first publish.
func tooSoon(m *message.Message, dest string, window time.Duration, now time.Time) error {
	if window <= 0 || m.Time.IsZero() {
		return nil
	}
	after := m.Time.Add(window + dedupeMargin)
	if now.After(after) {
		return nil
	}
	// Not coded Unavailable: the broker answered; exit status 1.
	return fmt.Errorf("polybus: dlq replay: dead letter %s not replayed: %s drops a message ID that it stored in the last %s (its duplicates window), and %s was published at %s; replay it after %s, or with --new-id",
		m.ID, dest, window, m.ID, m.Time.UTC().Format(time.RFC3339), after.UTC().Format(time.RFC3339))
}
