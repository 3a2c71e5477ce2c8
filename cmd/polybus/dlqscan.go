package main

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// holdDeadline bounds how long a scan may hold dead letters unacked: the
// broker's ack deadline for them, and the subscriber's drain timeout while
// the command decides (a purge waits for its confirmation meanwhile).
const holdDeadline = 5 * time.Minute

// keepDelay is the redelivery delay of the dead letters that a scan hands
// back (and of the messages that sub received beyond --count). A nack with
// a delay, even a short one, is one that brokers keep: NATS JetStream
// forgets a plain nack when the server stops (as the embedded server does
// when the command exits) and then holds the message back until its ack
// deadline passes, minutes later, while it persists a delayed one. The
// delay also lets the closing subscription go before the message comes
// back. It is well below the default --wait, so that a command started
// right after another still sees them.
const keepDelay = 100 * time.Millisecond

// errKeep nacks a dead letter that a scan hands back: it stays pending.
var errKeep = message.RetryAfter(errors.New("dlq: handed back, still pending"), keepDelay)

// scanOptions says which dead letters a scan reads.
type scanOptions struct {
	topic string
	group string
	// idle ends the scan once no dead letter has arrived for this long.
	idle time.Duration
	// max ends the scan once it holds this many.
	max int
}

// scanResult is what a scan holds when it stops receiving.
type scanResult struct {
	// msgs are the pending dead letters, in the order of the topic (by
	// broker offset, then time, then arrival).
	msgs []*message.Message
	// full reports that the scan stopped at opts.max: there may be more.
	full bool
}

// scanDLQ reads the dead letters that group has not acked and holds every
// one of them unacked until none has arrived for opts.idle (or it holds
// opts.max). It then stops receiving and calls decide with what it holds.
// The dead letters for which decide returns true are acked: they are no
// longer pending. Every other one is nacked, so that the group gets it
// again; ls, show and depth ack none.
//
// Holding, rather than reading with a throwaway group, keeps the pending
// set that of one group, which is what makes depth and purge meaningful on
// a log broker, and works the same on queue brokers. Messages of one key
// must not wait behind each other, so handler calls are unordered, and the
// concurrency is opts.max so that every held message has a handler call.
//
// scanDLQ returns when every held dead letter is settled with the broker;
// decide's error, or the subscription's, or ctx's.
func scanDLQ(ctx context.Context, c *polybus.Client, opts scanOptions, decide func(context.Context, scanResult) ([]bool, error)) error {
	subCtx, stopReceiving := context.WithCancel(ctx)
	defer stopReceiving()

	type held struct {
		m   *message.Message
		seq int
	}
	var (
		mu     sync.Mutex
		msgs   []held
		closed bool
		acks   = map[*message.Message]bool{}
	)
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	h := func(hctx context.Context, m *message.Message) error {
		mu.Lock()
		if closed {
			// Received after the scan stopped: not part of it.
			mu.Unlock()
			return errKeep
		}
		msgs = append(msgs, held{m, len(msgs)})
		mu.Unlock()
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-hctx.Done():
			return hctx.Err()
		}
		mu.Lock()
		ack := acks[m]
		mu.Unlock()
		if ack {
			return nil
		}
		return errKeep
	}

	subDone := make(chan error, 1)
	go func() {
		subDone <- c.Subscriber().Subscribe(subCtx, opts.topic, h,
			subscriber.Group(opts.group), subscriber.StartAt(subscriber.Earliest),
			subscriber.Unordered(), subscriber.Concurrency(opts.max), subscriber.Prefetch(opts.max),
			subscriber.AckDeadline(holdDeadline), subscriber.DrainTimeout(holdDeadline))
	}()

	idle := time.NewTimer(opts.idle)
	defer idle.Stop()
	var subErr error
	ended, full := false, false
wait:
	for {
		select {
		case <-arrived:
			mu.Lock()
			n := len(msgs)
			mu.Unlock()
			if n >= opts.max {
				full = true
				break wait
			}
			idle.Reset(opts.idle)
		case <-idle.C:
			break wait
		case subErr = <-subDone:
			ended = true
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	stopReceiving()
	mu.Lock()
	closed = true
	snapshot := append([]held(nil), msgs...)
	mu.Unlock()

	var decideErr error
	if !ended && ctx.Err() == nil {
		sort.SliceStable(snapshot, func(i, j int) bool {
			a, b := snapshot[i], snapshot[j]
			da, _ := a.m.Delivery()
			db, _ := b.m.Delivery()
			if da.Offset != db.Offset {
				return da.Offset < db.Offset
			}
			if !a.m.Time.Equal(b.m.Time) {
				return a.m.Time.Before(b.m.Time)
			}
			return a.seq < b.seq
		})
		res := scanResult{full: full}
		for _, s := range snapshot {
			res.msgs = append(res.msgs, s.m)
		}
		var ack []bool
		ack, decideErr = decide(ctx, res)
		mu.Lock()
		for i, ok := range ack {
			if ok {
				acks[res.msgs[i]] = true
			}
		}
		mu.Unlock()
	}
	close(release)
	if !ended {
		subErr = <-subDone
	}
	switch {
	case decideErr != nil:
		return decideErr
	case subErr != nil:
		return subErr
	}
	return ctx.Err()
}
