package conformance

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
)

// testDeadLetter: with middleware.DLQ outside middleware.Retry (3 attempts),
// a message whose handler always fails is handled exactly 3 times and then
// lands on the dead-letter topic, unchanged, with reason "max-attempts",
// attempt count 3 and its origin; a message whose handler fails with a
// permanent error is dead-lettered at once (reason "permanent", 1 attempt).
// Neither is delivered again, and the other messages are handled once.
//
// Retry runs in Redelivery mode where the adapter declares Nack, so the
// broker's redelivery and attempt count are part of the proof; InProcess
// mode otherwise.
func testDeadLetter(f *fixture) {
	pub := f.client()
	topic, group, dlqTopic := f.topic(), f.group(), f.topic()
	mode := middleware.InProcess
	if f.caps.Nack {
		mode = middleware.Redelivery
	}
	f.Logf("retry mode %s", mode)
	retry, err := middleware.Retry(middleware.RetryConfig{
		Mode: mode, MaxAttempts: 3,
		InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond,
		RandomizationFactor: middleware.NoJitter,
	})
	if err != nil {
		f.Fatalf("middleware.Retry: %v", err)
	}
	dlq, err := middleware.DLQ(middleware.DLQConfig{Publisher: pub.Publisher(), Topic: dlqTopic})
	if err != nil {
		f.Fatalf("middleware.DLQ: %v", err)
	}

	// The dead-letter topic's subscriber runs first, so that dead letters
	// are kept on brokers where a group sees only what follows it.
	dead := newRecorder(dlqTopic, f.group())
	sub := f.client()
	f.subscribe(sub, dlqTopic, dead.handler(0, nil), subscriber.Group(dead.group))
	f.awaitReady(pub, dlqTopic, dead)

	poison := newMsg("poison", []byte("always fails"), message.Metadata{"kind": "poison"})
	permanent := newMsg("permanent", []byte("fails for good"), message.Metadata{"kind": "permanent"})
	rec := newRecorder(topic, group)
	h := func(_ context.Context, m *message.Message) error {
		switch m.ID {
		case poison.ID:
			return errFailOnce
		case permanent.ID:
			return message.PermanentError(errFailOnce)
		}
		return nil
	}
	f.subscribe(sub, topic, rec.handler(0, h), subscriber.Group(group), subscriber.Use(dlq, retry))
	f.awaitReady(pub, topic, rec)

	good := make([]*message.Message, 20)
	for i := range good {
		good[i] = newMsg(fmt.Sprintf("good-%d", i%4), fmt.Appendf(nil, "good %d", i), nil)
	}
	f.publish(pub, topic, append([]*message.Message{poison, permanent}, good...)...)
	if !f.awaitAll(dead, []*message.Message{poison, permanent}, "dead letters") {
		return
	}
	f.awaitAll(rec, good, "good messages")
	marker := newMsg("", []byte("marker"), nil)
	f.publish(pub, topic, marker)
	f.awaitAll(rec, []*message.Message{marker}, "marker")
	f.observeQuiet()

	if n := rec.count(poison.ID); n != 3 {
		f.Errorf("the poison message was handled %d times, want 3 (MaxAttempts)", n)
	}
	if n := rec.count(permanent.ID); n != 1 {
		f.Errorf("the message failing permanently was handled %d times, want 1", n)
	}
	for _, m := range good {
		if n := rec.count(m.ID); n != 1 {
			f.Errorf("good message %s handled %d times, want 1", m.ID, n)
		}
	}
	if mode == middleware.Redelivery && f.caps.AttemptCount {
		for i, d := range rec.deliveries(poison.ID) {
			if d.facts.Attempt != i+1 {
				f.Errorf("poison delivery %d has Attempt %d, want %d", i+1, d.facts.Attempt, i+1)
			}
		}
	}
	f.verifyExact(dead, []*message.Message{poison, permanent}, "dead-letter topic")
	check := func(m *message.Message, reason string, attempts int) {
		ds := dead.deliveries(m.ID)
		if len(ds) == 0 {
			return
		}
		md := ds[0].msg.Metadata
		want := map[string]string{
			message.KeyDLQReason:   reason,
			message.KeyDLQAttempts: strconv.Itoa(attempts),
			message.KeyDLQTopic:    topic,
			message.KeyDLQGroup:    group,
		}
		for k, v := range want {
			if md[k] != v {
				f.Errorf("dead letter of %s: metadata %s = %q, want %q", m.Metadata.Get("kind"), k, md[k], v)
			}
		}
		if md[message.KeyDLQError] == "" {
			f.Errorf("dead letter of %s: no %s", m.Metadata.Get("kind"), message.KeyDLQError)
		}
	}
	check(poison, middleware.ReasonMaxAttempts, 3)
	check(permanent, middleware.ReasonPermanent, 1)
}

// testDedupe: with middleware.Dedupe, a message published twice with the
// same ID reaches the handler once. The duplicates are published after the
// originals were handled, and a marker after them; the broker may deliver
// them (counted, metric "duplicates_delivered") or drop them itself.
func testDedupe(f *fixture) {
	pub := f.client()
	topic, group := f.topic(), f.group()
	dedupe, err := middleware.Dedupe(middleware.DedupeConfig{InFlightDelay: 50 * time.Millisecond})
	if err != nil {
		f.Fatalf("middleware.Dedupe: %v", err)
	}
	// deliveries records what the broker delivered; handled what reached
	// the handler behind Dedupe.
	deliveries, handled := newRecorder(topic, group), newRecorder(topic, group)
	f.subscribe(f.client(), topic, deliveries.handler(0, dedupe(handled.handler(0, nil))), subscriber.Group(group))
	f.awaitReady(pub, topic, deliveries)

	msgs := make([]*message.Message, 50)
	for i := range msgs {
		msgs[i] = newMsg(fmt.Sprintf("dd-%d", i%5), fmt.Appendf(nil, "dedupe %d", i), nil)
	}
	f.publish(pub, topic, msgs...)
	if !f.awaitAll(handled, msgs, "originals") {
		return
	}
	again := make([]*message.Message, len(msgs))
	for i, m := range msgs {
		again[i] = m.Clone() // same ID
	}
	f.publish(pub, topic, again...)
	marker := newMsg("", []byte("marker"), nil)
	f.publish(pub, topic, marker)
	f.awaitAll(deliveries, []*message.Message{marker}, "marker")
	f.observeQuiet()

	f.metric("duplicates_delivered", int64(deliveries.duplicates()))
	var twice []string
	for _, m := range msgs {
		if n := handled.count(m.ID); n != 1 {
			twice = append(twice, fmt.Sprintf("%s x%d", m.ID, n))
		}
	}
	if len(twice) > 0 {
		f.Errorf("%d of %d messages published twice reached the handler behind Dedupe other than once: %s", len(twice), len(msgs), sample(twice))
	}
}
