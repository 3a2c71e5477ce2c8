package kafka

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
)

// pubDriver is the publisher.Driver: the batch is split by partition (the
// Java client's murmur2 of the key), and each partition's records go in one
// produce request with acks=all (more when they pass the broker's batch
// size limit, sent one after the other); partitions are written
// concurrently. No linger: the portable publisher has already gathered
// concurrent calls into the batch.
type pubDriver struct {
	c *core
	// sticky picks the partition of a batch's keyless messages, turn by
	// turn, so that they travel in one request (as the Java client's
	// sticky partitioner does) and spread over the partitions over time.
	sticky atomic.Uint32
}

// chunk is the records of one produce request: one partition, in order.
type chunk struct {
	idx  []int // positions in the batch
	recs []kafkago.Record
	size int
}

func (d *pubDriver) SendBatch(ctx context.Context, topic string, msgs []*message.Message) error {
	const op = "kafka: publish"
	if err := checkTopic(op, topic); err != nil {
		return err
	}
	parts, err := d.c.topics.ensure(ctx, topic)
	if err != nil {
		return err
	}
	errs := make([]error, len(msgs))
	sticky := parts[int(d.sticky.Add(1)-1)%len(parts)]
	bal := kafkago.Murmur2Balancer{}
	slab := newRecordSlab(msgs)
	// First the records and their partitions (-1: failed here), then the
	// chunks, each sized for what is left of its partition.
	recs := make([]kafkago.Record, len(msgs))
	sizes := make([]int, len(msgs))
	dest := make([]int, len(msgs))
	left := map[int]int{}
	var order []int // partitions in order of first use
	for i, m := range msgs {
		dest[i] = -1
		if k := reservedKey(m); k != "" {
			errs[i] = message.Errorf(message.InvalidArgument, op, "metadata key %q is reserved for polybus's own record header", k)
			continue
		}
		rec, size, key := slab.record(m)
		if size > d.c.batchLimit {
			errs[i] = message.Errorf(message.TooLarge, op, "message %s takes %d bytes as a Kafka record, over the broker's limit of %d (message.max.bytes less the batch header)", m.ID, size, d.c.batchLimit)
			continue
		}
		p := sticky
		if key != nil {
			p = bal.Balance(kafkago.Message{Key: key}, parts...)
		}
		recs[i], sizes[i], dest[i] = rec, size, p
		if left[p] == 0 {
			order = append(order, p)
		}
		left[p]++
	}
	byPart := make(map[int][]*chunk, len(order))
	for i, p := range dest {
		if p < 0 {
			continue
		}
		cs := byPart[p]
		if len(cs) == 0 || cs[len(cs)-1].size+sizes[i] > d.c.batchLimit {
			cs = append(cs, &chunk{idx: make([]int, 0, left[p]), recs: make([]kafkago.Record, 0, left[p])})
			byPart[p] = cs
		}
		ch := cs[len(cs)-1]
		ch.idx = append(ch.idx, i)
		ch.recs = append(ch.recs, recs[i])
		ch.size += sizes[i]
		left[p]--
	}
	if len(order) == 1 {
		d.sendPartition(ctx, topic, order[0], byPart[order[0]], errs)
	} else {
		var wg sync.WaitGroup
		for _, p := range order {
			wg.Go(func() { d.sendPartition(ctx, topic, p, byPart[p], errs) })
		}
		wg.Wait()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.outcome(topic, errs)
}

// sendPartition writes one partition's chunks in order. After a failed
// chunk the later ones are not sent (they would land out of order) and
// fail alike.
func (d *pubDriver) sendPartition(ctx context.Context, topic string, p int, chunks []*chunk, errs []error) {
	var stop error
	for _, ch := range chunks {
		if stop == nil {
			stop = d.produce(ctx, topic, p, ch, errs)
			if stop == nil {
				continue
			}
		}
		for _, i := range ch.idx {
			if errs[i] == nil {
				errs[i] = stop
			}
		}
	}
}

// produce sends one chunk and records each message's outcome; it returns
// the chunk's error, if the whole chunk failed.
func (d *pubDriver) produce(ctx context.Context, topic string, p int, ch *chunk, errs []error) error {
	res, err := d.c.client.Produce(ctx, &kafkago.ProduceRequest{
		Topic:        topic,
		Partition:    p,
		RequiredAcks: kafkago.RequireAll,
		Records:      kafkago.NewRecordReader(ch.recs...),
	})
	if err == nil {
		err = res.Error
	}
	if err != nil {
		return err
	}
	for j, rerr := range res.RecordErrors {
		if j >= 0 && j < len(ch.idx) {
			errs[ch.idx[j]] = rerr
		}
	}
	return nil
}

// outcome turns the per-message errors of a batch into SendBatch's error:
// nil, the common error when every message failed alike, or a
// *publisher.BatchError.
func (d *pubDriver) outcome(topic string, errs []error) error {
	failed := 0
	same := true
	var first error
	for _, err := range errs {
		if err == nil {
			continue
		}
		failed++
		if errors.Is(err, kafkago.UnknownTopicOrPartition) {
			// The topic may have been deleted: look it up (and create it)
			// again on the next call.
			d.c.topics.forget(topic)
		}
		if first == nil {
			first = err
		}
		same = same && ErrorCode(err) == ErrorCode(first)
	}
	switch {
	case failed == 0:
		return nil
	case failed == len(errs) && same:
		return coded("kafka: publish", first)
	}
	for i, err := range errs {
		errs[i] = coded("kafka: publish", err)
	}
	return &publisher.BatchError{Errs: errs}
}

// reservedKey returns the first metadata key of m that names one of the
// envelope's headers, or "".
func reservedKey(m *message.Message) string {
	for k := range m.Metadata {
		if reserved(k) {
			return k
		}
	}
	return ""
}

func (d *pubDriver) Capabilities() message.Capabilities { return d.c.caps }
func (d *pubDriver) ErrorCode(err error) message.Code   { return ErrorCode(err) }

// Close does nothing: the client's Close hook releases the shared transport.
func (d *pubDriver) Close() error { return nil }

// As offers **kafka.Client, **kafka.Transport and **kafka.Dialer (of
// github.com/segmentio/kafka-go).
func (d *pubDriver) As(target any) bool { return d.c.as(target) }
