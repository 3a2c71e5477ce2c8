package sqs

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// mergeCalls bounds the merged SendMessageBatch calls in flight to one
// queue. While that many are in flight, the partial batches that
// concurrent Publish calls send to the queue wait, and the next call
// carries as many of them as 10 entries and 1 MiB hold.
const mergeCalls = 2

// merger gathers the partial SendMessageBatch calls (fewer than 10
// entries) that concurrent SendBatch calls make to one queue into shared
// calls: SQS's cost (and the client's: signing, HTTP) is per call, and
// concurrent single-message publishes would otherwise make one call each.
// A request is never split, and requests go out in the order they came;
// FIFO order holds because a SendBatch sends its chunks to a FIFO queue one
// after the other, so that no two chunks of one SendBatch wait at once.
type merger struct {
	mu     sync.Mutex
	queues map[string]*mergeQueue
	wg     sync.WaitGroup
}

type mergeQueue struct {
	waiting  []*sendReq
	inflight int
}

// sendReq is one SendBatch's chunk for one queue.
type sendReq struct {
	ctx     context.Context
	entries []types.SendMessageBatchRequestEntry // Ids are set by the call
	size    int
	done    chan sendRes // buffered: the sender never waits
}

// sendRes is a chunk's outcome: err for the whole call, or each entry's.
type sendRes struct {
	ok     []bool                         // by entry
	failed []*types.BatchResultErrorEntry // by entry, nil when not failed
	err    error
}

// send sends entries (of size bytes in all) to url, merged with other
// requests when fewer than 10, and returns their outcome, or ctx's error
// when ctx ends first (the entries may then have been sent or not).
func (c *core) send(ctx context.Context, url string, entries []types.SendMessageBatchRequestEntry, size int) sendRes {
	if len(entries) >= batchEntries {
		return c.call(ctx, url, []*sendReq{{entries: entries}})[0]
	}
	m := &c.merge
	r := &sendReq{ctx: ctx, entries: entries, size: size, done: make(chan sendRes, 1)}
	m.mu.Lock()
	if m.queues == nil {
		m.queues = map[string]*mergeQueue{}
	}
	q := m.queues[url]
	if q == nil {
		q = &mergeQueue{}
		m.queues[url] = q
	}
	q.waiting = append(q.waiting, r)
	if q.inflight < mergeCalls {
		q.inflight++
		m.wg.Go(func() { c.sendMerged(url, q) })
	}
	m.mu.Unlock()
	select {
	case res := <-r.done:
		return res
	case <-ctx.Done():
		return sendRes{err: ctx.Err()}
	}
}

// sendMerged makes merged calls to url while requests wait.
func (c *core) sendMerged(url string, q *mergeQueue) {
	m := &c.merge
	for {
		m.mu.Lock()
		var reqs []*sendReq
		n, size := 0, 0
		for len(q.waiting) > 0 {
			r := q.waiting[0]
			if r.ctx.Err() != nil {
				// Its caller has gone: withdrawn, nothing of it sent.
				q.waiting = q.waiting[1:]
				continue
			}
			if n > 0 && (n+len(r.entries) > batchEntries || size+r.size > sqsMessageLimit) {
				break
			}
			q.waiting = q.waiting[1:]
			reqs = append(reqs, r)
			n += len(r.entries)
			size += r.size
		}
		if len(reqs) == 0 {
			q.inflight--
			if q.inflight == 0 && len(q.waiting) == 0 && m.queues[url] == q {
				delete(m.queues, url)
			}
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()

		// The call lasts while any of its requests' callers waits.
		ctx, cancel := context.WithCancel(context.WithoutCancel(reqs[0].ctx))
		var left atomic.Int64
		left.Store(int64(len(reqs)))
		stops := make([]func() bool, len(reqs))
		for i, r := range reqs {
			stops[i] = context.AfterFunc(r.ctx, func() {
				if left.Add(-1) == 0 {
					cancel()
				}
			})
		}
		res := c.call(ctx, url, reqs)
		for _, stop := range stops {
			stop()
		}
		cancel()
		for i, r := range reqs {
			r.done <- res[i]
		}
	}
}

// call makes one SendMessageBatch call of reqs' entries, in order, and
// returns each request's outcome.
func (c *core) call(ctx context.Context, url string, reqs []*sendReq) []sendRes {
	var entries []types.SendMessageBatchRequestEntry
	if len(reqs) == 1 {
		entries = reqs[0].entries
	} else {
		for _, r := range reqs {
			entries = append(entries, r.entries...)
		}
	}
	for n := range entries {
		entries[n].Id = entryIDs[n]
	}
	res := make([]sendRes, len(reqs))
	out, err := c.api.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(url), Entries: entries})
	if err != nil {
		for i := range res {
			res[i].err = err
		}
		return res
	}
	// Entry n of the call is entry n-off[i] of request i.
	owner := make([]int, len(entries))
	local := make([]int, len(entries))
	n := 0
	for i, r := range reqs {
		res[i].ok = make([]bool, len(r.entries))
		res[i].failed = make([]*types.BatchResultErrorEntry, len(r.entries))
		for j := range r.entries {
			owner[n], local[n] = i, j
			n++
		}
	}
	index := func(id *string) (int, bool) {
		s := aws.ToString(id)
		for n := range entries {
			if *entryIDs[n] == s {
				return n, true
			}
		}
		return 0, false
	}
	for _, s := range out.Successful {
		if n, ok := index(s.Id); ok {
			res[owner[n]].ok[local[n]] = true
		}
	}
	for k := range out.Failed {
		if n, ok := index(out.Failed[k].Id); ok {
			res[owner[n]].failed[local[n]] = &out.Failed[k]
		}
	}
	return res
}
