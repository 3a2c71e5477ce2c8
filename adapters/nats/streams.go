package nats

import (
	"context"
	"errors"
	"strconv"
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
	streamLayout
	err error
}

// streamLayout is how a topic is stored: its stream and, for a partitioned
// stream, its partition count and subjects.
type streamLayout struct {
	name string
	// parts is the partition count; 0 for a stream that someone else
	// created, whose only subject for the topic is the topic itself.
	parts int
	// subjects holds the subject of each partition.
	subjects []string
}

// ensure returns the layout of the stream that stores topic.
func (s *streamCache) ensure(ctx context.Context, topic string) (streamLayout, error) {
	s.mu.Lock()
	e := s.m[topic]
	if e == nil {
		e = &streamEntry{ready: make(chan struct{})}
		s.m[topic] = e
		s.mu.Unlock()
		e.streamLayout, e.err = s.find(ctx, topic)
		if e.err != nil {
			s.mu.Lock()
			if s.m[topic] == e {
				delete(s.m, topic)
			}
			s.mu.Unlock()
		}
		close(e.ready)
		return e.streamLayout, e.err
	}
	s.mu.Unlock()
	select {
	case <-e.ready:
		return e.streamLayout, e.err
	case <-ctx.Done():
		return streamLayout{}, ctx.Err()
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
// it is, unpartitioned. polybus's own stream of the unpartitioned layout
// (from before partitions) is migrated: see migrate.
func (s *streamCache) find(ctx context.Context, topic string) (streamLayout, error) {
	const op = "nats: stream"
	js := s.c.js
	for attempt := 0; ; attempt++ {
		name, err := js.StreamNameBySubject(ctx, topic)
		if err == nil {
			if name != streamName(topic) {
				return streamLayout{name: name}, nil
			}
			return s.layout(ctx, topic, name)
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return streamLayout{}, coded(op, err)
		}
		cfg := s.c.streamConfig(topic)
		_, err = js.CreateStream(ctx, cfg)
		if err == nil {
			return newLayout(cfg.Name, topic, s.c.cfg.Partitions), nil
		}
		var api *jetstream.APIError
		raced := errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) ||
			errors.As(err, &api) && api.ErrorCode == jsErrSubjectOverlap
		if !raced || attempt > 0 {
			return streamLayout{}, message.Wrap(ErrorCode(err), op, err)
		}
		// Another client created a stream for the subject meanwhile (with
		// a different config, or the create would have succeeded): look
		// it up again.
	}
}

func newLayout(name, topic string, parts int) streamLayout {
	l := streamLayout{name: name, parts: parts, subjects: make([]string, parts)}
	for p := range l.subjects {
		l.subjects[p] = partitionSubject(topic, p)
	}
	return l
}

// layout reads the partition count of polybus's own stream of topic,
// migrating a stream of the unpartitioned layout first.
func (s *streamCache) layout(ctx context.Context, topic, name string) (streamLayout, error) {
	const op = "nats: stream"
	st, err := s.c.js.Stream(ctx, name)
	if err != nil {
		return streamLayout{}, coded(op, err)
	}
	cfg := st.CachedInfo().Config
	if n := parsePartitions(cfg.Metadata); n > 0 {
		return newLayout(name, topic, n), nil
	}
	return s.migrate(ctx, topic, cfg)
}

// migrate turns polybus's stream of the unpartitioned layout (the topic its
// only subject) into the partitioned one: it gains the partition subjects,
// the partition count in its metadata and a subject transform that files
// what a plain NATS client publishes to the topic itself under partition 0.
// The messages it holds stay on the topic's subject, where the groups'
// unpartitioned consumers read them; subscribers drain those before they
// read the partitions (see subscription.legacy). Concurrent migrations by
// several clients agree: the first update wins, and each reads the count
// back from the stream.
func (s *streamCache) migrate(ctx context.Context, topic string, cfg jetstream.StreamConfig) (streamLayout, error) {
	const op = "nats: migrate stream"
	want := s.c.streamConfig(topic)
	cfg.Subjects = want.Subjects
	cfg.SubjectTransform = want.SubjectTransform
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]string{}
	}
	cfg.Metadata[metaPartitions] = want.Metadata[metaPartitions]
	if _, err := s.c.js.UpdateStream(ctx, cfg); err != nil {
		return streamLayout{}, coded(op, err)
	}
	st, err := s.c.js.Stream(ctx, cfg.Name)
	if err != nil {
		return streamLayout{}, coded(op, err)
	}
	n := parsePartitions(st.CachedInfo().Config.Metadata)
	if n == 0 {
		return streamLayout{}, message.Errorf(message.Unknown, op, "stream %s has no partition count after its update", cfg.Name)
	}
	return newLayout(cfg.Name, topic, n), nil
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
		Subjects:    []string{topic, partitionWildcard(topic)},
		// A plain NATS client publishing to the topic itself, which knows
		// no partitions, lands in partition 0.
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: topic, Destination: partitionSubject(topic, 0)},
		Metadata:         map[string]string{metaPartitions: strconv.Itoa(c.cfg.Partitions)},
		Retention:        jetstream.LimitsPolicy,
		Discard:          jetstream.DiscardOld,
		Storage:          storage,
		Replicas:         c.cfg.Replicas,
		MaxAge:           c.cfg.MaxAge,
		Duplicates:       c.cfg.Duplicates,
	}
}
