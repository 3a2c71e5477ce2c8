package nats

import (
	"context"
	"errors"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus/message"
)

// streamCache finds or creates the stream of each topic once per client.
// Concurrent callers for one topic wait for the first one's outcome; a
// failure is not cached, and forget drops a stream that has gone away (a
// memory-storage stream after a server restart, or a deleted one) so that
// the next call creates it again.
type streamCache struct {
	c  *core
	mu sync.Mutex
	m  map[string]*streamEntry
}

type streamEntry struct {
	ready chan struct{}
	name  string
	err   error
}

// ensure returns the name of the stream that stores topic.
func (s *streamCache) ensure(ctx context.Context, topic string) (string, error) {
	s.mu.Lock()
	e := s.m[topic]
	if e == nil {
		e = &streamEntry{ready: make(chan struct{})}
		s.m[topic] = e
		s.mu.Unlock()
		e.name, e.err = s.find(ctx, topic)
		if e.err != nil {
			s.mu.Lock()
			if s.m[topic] == e {
				delete(s.m, topic)
			}
			s.mu.Unlock()
		}
		close(e.ready)
		return e.name, e.err
	}
	s.mu.Unlock()
	select {
	case <-e.ready:
		return e.name, e.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// forget drops topic's stream from the cache.
func (s *streamCache) forget(topic string) {
	s.mu.Lock()
	if e := s.m[topic]; e != nil {
		select {
		case <-e.ready:
			delete(s.m, topic)
		default: // being looked up right now: that answer is fresh
		}
	}
	s.mu.Unlock()
}

// find returns the stream whose subjects capture topic, creating polybus's
// own stream for it when there is none. A stream that someone else created
// for the subject (with their own limits, replicas or retention) is used as
// it is.
func (s *streamCache) find(ctx context.Context, topic string) (string, error) {
	const op = "nats: stream"
	js := s.c.js
	for attempt := 0; ; attempt++ {
		name, err := js.StreamNameBySubject(ctx, topic)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return "", coded(op, err)
		}
		cfg := s.c.streamConfig(topic)
		_, err = js.CreateStream(ctx, cfg)
		if err == nil {
			return cfg.Name, nil
		}
		var api *jetstream.APIError
		raced := errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) ||
			errors.As(err, &api) && api.ErrorCode == jsErrSubjectOverlap
		if !raced || attempt > 0 {
			return "", message.Wrap(ErrorCode(err), op, err)
		}
		// Another client created a stream for the subject meanwhile (with
		// a different config, or the create would have succeeded): look
		// it up again.
	}
}

// streamConfig is the config of the stream that polybus creates for topic.
func (c *core) streamConfig(topic string) jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if c.cfg.Storage == MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	return jetstream.StreamConfig{
		Name:        streamName(topic),
		Description: "polybus topic " + topic,
		Subjects:    []string{topic},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     storage,
		Replicas:    c.cfg.Replicas,
		MaxAge:      c.cfg.MaxAge,
		Duplicates:  c.cfg.Duplicates,
	}
}
