package sqs

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
)

// maxSends bounds the SendMessageBatch calls of one SendBatch in flight at
// once, across its queues and chunks.
const maxSends = 16

// entryIDs are the batch entry IDs, by position in a chunk.
var entryIDs = func() []*string {
	ids := make([]*string, batchEntries)
	for i := range ids {
		ids[i] = aws.String(strconv.Itoa(i))
	}
	return ids
}()

// pubDriver is the publisher.Driver: every message goes to every group
// queue of its topic, in SendMessageBatch calls of up to 10 entries and
// 1 MiB.
type pubDriver struct{ c *core }

// chunk is the positions in the batch of the messages of one
// SendMessageBatch call.
type chunk []int

func (d *pubDriver) SendBatch(ctx context.Context, topic string, msgs []*message.Message) error {
	const op = "sqs: publish"
	if err := d.c.names.checkTopic(op, topic); err != nil {
		return err
	}
	urls, err := d.c.reg.queues(ctx, topic)
	if err != nil {
		return err
	}
	errs := make([]error, len(msgs))
	enc := make([]*encoded, len(msgs))
	for i, m := range msgs {
		enc[i], errs[i] = encode(m, d.c.cfg.FIFO)
	}
	chunks := split(enc)

	// Each queue gets every chunk; a FIFO queue gets them one after the
	// other (stopping at the first failure, so that no later message of
	// a key lands before an earlier one that failed), a standard queue
	// concurrently.
	var mu sync.Mutex
	fail := func(i int, err error) {
		mu.Lock()
		if errs[i] == nil {
			errs[i] = err
		}
		mu.Unlock()
	}
	if len(urls) == 1 && len(chunks) == 1 {
		d.send(ctx, urls[0], enc, chunks[0], fail)
	} else {
		sem := make(chan struct{}, maxSends)
		var wg sync.WaitGroup
		for _, url := range urls {
			if d.c.cfg.FIFO {
				wg.Go(func() {
					for n, ch := range chunks {
						sem <- struct{}{}
						ok := d.send(ctx, url, enc, ch, fail)
						<-sem
						if !ok {
							stop := message.Errorf(message.Unavailable, op, "not sent to %s: an earlier message of the batch failed there, and FIFO order forbids sending later ones first", queueNameOf(url))
							for _, rest := range chunks[n+1:] {
								for _, i := range rest {
									fail(i, stop)
								}
							}
							return
						}
					}
				})
				continue
			}
			for _, ch := range chunks {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					d.send(ctx, url, enc, ch, fail)
				})
			}
		}
		wg.Wait()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.outcome(topic, errs)
}

// split cuts the encoded messages (nil for those that failed to encode)
// into chunks of up to 10 entries and SQS's batch size limit, in order.
func split(enc []*encoded) []chunk {
	var chunks []chunk
	var cur chunk
	size := 0
	for i, e := range enc {
		if e == nil {
			continue
		}
		if len(cur) == batchEntries || len(cur) > 0 && size+e.size > sqsMessageLimit {
			chunks = append(chunks, cur)
			cur, size = nil, 0
		}
		cur = append(cur, i)
		size += e.size
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	return chunks
}

// send makes one SendMessageBatch call of ch to url, reporting each failed
// message to fail, and reports whether every entry was accepted.
func (d *pubDriver) send(ctx context.Context, url string, enc []*encoded, ch chunk, fail func(int, error)) bool {
	const op = "sqs: publish"
	if len(ch) == 0 {
		return true
	}
	entries := make([]types.SendMessageBatchRequestEntry, len(ch))
	size := 0
	for n, i := range ch {
		e := enc[i]
		entries[n] = types.SendMessageBatchRequestEntry{
			MessageBody: aws.String(e.body), MessageAttributes: e.attrs,
			MessageGroupId: e.groupID, MessageDeduplicationId: e.dedupID,
		}
		size += e.size
	}
	res := d.c.send(ctx, url, entries, size)
	if res.err != nil {
		err := coded(op, res.err)
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		for _, i := range ch {
			fail(i, err)
		}
		return false
	}
	// HTTP 200 is not success: every entry must be in Successful.
	ok := true
	for n := range ch {
		switch f := res.failed[n]; {
		case f != nil:
			ok = false
			ee := &EntryError{Queue: url, Code: aws.ToString(f.Code), Message: aws.ToString(f.Message), SenderFault: f.SenderFault}
			fail(ch[n], message.Wrap(ee.code(), op, ee))
		case !res.ok[n]:
			ok = false
			fail(ch[n], message.Errorf(message.Unknown, op, "%s answered neither success nor failure for a message", queueNameOf(url)))
		}
	}
	return ok
}

// outcome turns the per-message errors of a batch into SendBatch's error:
// nil, the common error when every message failed alike, or a
// *publisher.BatchError.
func (d *pubDriver) outcome(topic string, errs []error) error {
	failed := 0
	same := true
	for _, err := range errs {
		if err == nil {
			continue
		}
		failed++
		if errors.Is(err, message.ErrNotFound) {
			// A queue went away (deleted with its group): list again.
			d.c.reg.forget(topic)
		}
		same = same && ErrorCode(err) == ErrorCode(errs[0])
	}
	switch {
	case failed == 0:
		return nil
	case failed == len(errs) && same:
		return errs[0]
	}
	return &publisher.BatchError{Errs: errs}
}

func (d *pubDriver) Capabilities() message.Capabilities { return d.c.caps }
func (d *pubDriver) ErrorCode(err error) message.Code   { return ErrorCode(err) }

// Close does nothing: the client's Close hook releases the connections.
func (d *pubDriver) Close() error { return nil }

// As offers **sqs.Client.
func (d *pubDriver) As(target any) bool { return d.c.as(target) }
