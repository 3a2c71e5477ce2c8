package sqs

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// recreateAfter is how long a subscription's queue must have been missing
// before the subscription creates it again.
const recreateAfter = 30 * time.Second

// subDriver is the subscriber.Driver: a subscription is its group's queue,
// read by Config.Receivers long-polling receivers.
type subDriver struct{ c *core }

func (d *subDriver) Open(ctx context.Context, topic string, cfg subscriber.OpenConfig) (subscriber.Subscription, error) {
	const op = "sqs: subscribe"
	if err := d.c.names.checkTopic(op, topic); err != nil {
		return nil, err
	}
	if err := checkGroup(op, cfg.Group); err != nil {
		return nil, err
	}
	vt := d.c.cfg.VisibilityTimeout
	if cfg.AckDeadline > 0 {
		vt = min(max(cfg.AckDeadline.Round(time.Second), time.Second), maxVisibility)
		if vt < cfg.AckDeadline {
			vt += time.Second
		}
	}
	url, err := d.c.ensureQueue(ctx, topic, cfg.Group, vt, false)
	if err != nil {
		return nil, err
	}
	d.c.reg.add(topic, url)
	prefetch := max(cfg.Prefetch, 1)
	rctx, cancel := context.WithCancel(context.Background())
	stopping, stop := context.WithCancel(rctx)
	s := &subscription{
		stopping: stopping, stop: stop,
		c: d.c, topic: topic, group: cfg.Group, url: url, vt: vt,
		credits:  make(chan struct{}, prefetch),
		batches:  make(chan []subscriber.Received, prefetch),
		errs:     make(chan error, 1),
		inflight: map[string]*inflight{},
		ctx:      rctx, cancel: cancel,
	}
	for range prefetch {
		s.credits <- struct{}{}
	}
	for range d.c.cfg.Receivers {
		s.wg.Go(s.receive)
	}
	s.hb.Go(s.heartbeat)
	return s, nil
}

func (d *subDriver) Capabilities() message.Capabilities { return d.c.caps }
func (d *subDriver) ErrorCode(err error) message.Code   { return ErrorCode(err) }

// Close does nothing: the client's Close hook releases the connections.
func (d *subDriver) Close() error { return nil }

// As offers **sqs.Client.
func (d *subDriver) As(target any) bool { return d.c.as(target) }

// subscription is one Subscribe call's view of its group's queue.
//
// Receivers take credits (one per message, Prefetch in all) before each
// ReceiveMessage call and put what they get in batches; a credit comes back
// when its message is acked, nacked or handed back. So the subscription
// never holds more than Prefetch messages, buffered or with handlers.
// Every message from its receipt to its settling is in inflight, which
// the heartbeat extends before its visibility timeout ends.
type subscription struct {
	c     *core
	topic string
	group string
	url   string
	vt    time.Duration

	credits chan struct{}
	batches chan []subscriber.Received
	errs    chan error // the latest receive error; dropped when one waits
	rest    []subscriber.Received

	// settleMu serialises changes of visibility (heartbeat, nack, hand
	// back), so that no extension lands after a nack made a message
	// visible.
	settleMu sync.Mutex
	mu       sync.Mutex
	inflight map[string]*inflight // by receipt handle

	// stopping ends when Close begins: receivers make no new call. ctx,
	// the calls' own, ends only once the calls in flight have had their
	// long-polling wait to finish (or at once for a heartbeat).
	stopping context.Context
	stop     context.CancelFunc
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	hb       sync.WaitGroup
}

// inflight is one received message that is not settled yet.
type inflight struct {
	handle   string
	received time.Time
	// visibleAt is when SQS makes it visible again unless extended (as
	// seen from here: measured from before the receive call).
	visibleAt time.Time
}

// ackID is the subscriber.Received.AckID of a message.
type ackID struct {
	handle   string
	received time.Time
}

// receive is one receiver: it long-polls the queue while the subscription
// is open.
func (s *subscription) receive() {
	const op = "sqs: receive"
	backoff := 50 * time.Millisecond
	var missing time.Time // since when the queue has been missing
	for {
		// One credit at least, then up to 10.
		select {
		case <-s.credits:
		case <-s.stopping.Done():
			return
		}
		if s.stopping.Err() != nil {
			// Both were ready, and select took the credit.
			s.release(1)
			return
		}
		n := 1
	more:
		for n < batchEntries {
			select {
			case <-s.credits:
				n++
			default:
				break more
			}
		}
		start := time.Now()
		out, err := s.c.api.ReceiveMessage(s.ctx, &sqs.ReceiveMessageInput{
			QueueUrl:                    aws.String(s.queueURL()),
			MaxNumberOfMessages:         int32(n),
			WaitTimeSeconds:             int32(s.c.cfg.WaitTime / time.Second),
			VisibilityTimeout:           int32(s.vt / time.Second),
			MessageAttributeNames:       []string{"All"},
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
		})
		got := 0
		if err == nil {
			got = len(out.Messages)
		}
		s.release(n - got)
		if err != nil {
			if s.stopping.Err() != nil {
				return
			}
			if isNotFound(err) {
				// The queue is gone (deleted, or lost by a broker without
				// queue storage): create it again, once it has been gone
				// for a while. A broker that restarts may not know its
				// queues for some seconds (ElasticMQ restores them one by
				// one), and a queue created meanwhile would stand in for
				// the restored one and its messages.
				if missing.IsZero() {
					missing = time.Now()
				}
				if time.Since(missing) > recreateAfter {
					if url, cerr := s.c.ensureQueue(s.ctx, s.topic, s.group, s.vt, false); cerr == nil {
						s.mu.Lock()
						s.url = url
						s.mu.Unlock()
						missing = time.Time{}
					}
				}
			} else {
				missing = time.Time{}
			}
			s.report(receiveError(op, err))
			if !s.pause(backoff) {
				return
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff, missing = 50*time.Millisecond, time.Time{}
		if got == 0 {
			continue
		}
		recs := make([]subscriber.Received, got)
		s.mu.Lock()
		for i := range out.Messages {
			sm := &out.Messages[i]
			h := aws.ToString(sm.ReceiptHandle)
			s.inflight[h] = &inflight{handle: h, received: start, visibleAt: start.Add(s.vt)}
			recs[i] = s.received(sm, ackID{handle: h, received: start})
		}
		s.mu.Unlock()
		// Never blocks: batches holds Prefetch batches, and there are
		// never more than Prefetch messages out.
		s.batches <- recs
	}
}

// receiveError gives a failed receive the Unavailable code, so that the
// portable subscriber tries again, unless retrying cannot help (bad
// credentials, a refused request).
func receiveError(op string, err error) error {
	switch c := ErrorCode(err); c {
	case message.PermissionDenied, message.InvalidArgument, message.Unimplemented:
		return message.Wrap(c, op, err)
	}
	return message.Wrap(message.Unavailable, op, err)
}

// pause waits d or until the subscription closes, and reports whether it
// is still open.
func (s *subscription) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stopping.Done():
		return false
	}
}

// report keeps err as the latest receive error for Receive.
func (s *subscription) report(err error) {
	select {
	case s.errs <- err:
	default:
	}
}

func (s *subscription) release(n int) {
	for range n {
		s.credits <- struct{}{}
	}
}

// received makes the polybus message of sm.
func (s *subscription) received(sm *types.Message, id ackID) subscriber.Received {
	m := decode(sm)
	attempt, _ := strconv.Atoi(sm.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	d := message.Delivery{
		Topic: s.topic, Group: s.group, Attempt: attempt, Redelivered: attempt > 1,
		Partition: -1, BrokerID: aws.ToString(sm.MessageId), ReceivedAt: time.Now(),
	}
	native := *sm
	message.Received(m, d, func(target any) bool {
		if t, ok := target.(*types.Message); ok {
			*t = native
			return true
		}
		return false
	})
	return subscriber.Received{Msg: m, AckID: id}
}

func (s *subscription) Receive(ctx context.Context, max int) ([]subscriber.Received, error) {
	if len(s.rest) == 0 {
		select {
		case s.rest = <-s.batches:
		default:
			select {
			case s.rest = <-s.batches:
			case err := <-s.errs:
				return nil, err
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	// More batches that are already here, up to max.
	for len(s.rest) < max {
		select {
		case b := <-s.batches:
			s.rest = append(s.rest, b...)
			continue
		default:
		}
		break
	}
	n := min(max, len(s.rest))
	out := s.rest[:n:n]
	s.rest = s.rest[n:]
	if len(s.rest) == 0 {
		s.rest = nil
	}
	return out, nil
}

// take removes the messages of ids from inflight and returns their credits.
func (s *subscription) take(ids []any) []ackID {
	out := make([]ackID, 0, len(ids))
	s.mu.Lock()
	for _, id := range ids {
		a := id.(ackID)
		delete(s.inflight, a.handle)
		out = append(out, a)
	}
	s.mu.Unlock()
	return out
}

// Ack deletes the messages, in DeleteMessageBatch calls of 10, all in
// flight at once.
func (s *subscription) Ack(ctx context.Context, ids []any) error {
	const op = "sqs: ack"
	acks := s.take(ids)
	defer s.release(len(acks))
	url := s.queueURL()
	return s.batched(ctx, op, acks, func(ctx context.Context, part []ackID) ([]types.BatchResultErrorEntry, error) {
		entries := make([]types.DeleteMessageBatchRequestEntry, len(part))
		for n, a := range part {
			entries[n] = types.DeleteMessageBatchRequestEntry{Id: entryIDs[n], ReceiptHandle: aws.String(a.handle)}
		}
		out, err := s.c.api.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: entries})
		if err != nil {
			return nil, err
		}
		return out.Failed, nil
	})
}

// Nack makes the messages visible again after delay (whole seconds,
// rounded up; at once for 0), through ChangeMessageVisibilityBatch.
func (s *subscription) Nack(ctx context.Context, ids []any, delay time.Duration) error {
	const op = "sqs: nack"
	nacks := s.take(ids)
	defer s.release(len(nacks))
	s.settleMu.Lock()
	defer s.settleMu.Unlock()
	return s.changeVisibility(ctx, op, nacks, delay)
}

// changeVisibility sets the messages' visibility timeout to d from now,
// rounded up to whole seconds and kept within SQS's 12 hours from their
// receipt. The caller holds settleMu.
func (s *subscription) changeVisibility(ctx context.Context, op string, msgs []ackID, d time.Duration) error {
	url := s.queueURL()
	return s.batched(ctx, op, msgs, func(ctx context.Context, part []ackID) ([]types.BatchResultErrorEntry, error) {
		entries := make([]types.ChangeMessageVisibilityBatchRequestEntry, len(part))
		for n, a := range part {
			entries[n] = types.ChangeMessageVisibilityBatchRequestEntry{
				Id: entryIDs[n], ReceiptHandle: aws.String(a.handle), VisibilityTimeout: visibilitySeconds(d, a.received),
			}
		}
		out, err := s.c.api.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: aws.String(url), Entries: entries})
		if err != nil {
			return nil, err
		}
		return out.Failed, nil
	})
}

// visibilitySeconds returns d in whole seconds, rounded up, cut so that the
// message is not invisible past 12 hours after received (SQS refuses that).
func visibilitySeconds(d time.Duration, received time.Time) int32 {
	secs := int64((d + time.Second - 1) / time.Second)
	left := int64((maxVisibility-time.Since(received))/time.Second) - 1
	return int32(max(min(secs, left), 0))
}

func (s *subscription) queueURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// batched runs call on msgs in parts of 10, all at once, and joins the
// failures. Entries that failed because their message is no longer in
// flight with this receipt (its visibility ended and someone received it
// again) are failures too: the broker redelivers it.
func (s *subscription) batched(ctx context.Context, op string, msgs []ackID,
	call func(context.Context, []ackID) ([]types.BatchResultErrorEntry, error)) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for start := 0; start < len(msgs); start += batchEntries {
		part := msgs[start:min(start+batchEntries, len(msgs))]
		wg.Go(func() {
			failed, err := call(ctx, part)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, coded(op, err))
				return
			}
			for _, f := range failed {
				ee := &EntryError{Queue: s.url, Code: aws.ToString(f.Code), Message: aws.ToString(f.Message), SenderFault: f.SenderFault}
				errs = append(errs, message.Wrap(ee.code(), op, ee))
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// heartbeat extends the visibility of every message the subscription
// holds (buffered or with a handler) before it ends, by the subscription's
// visibility timeout each time, until SQS's 12 hours from receipt.
func (s *subscription) heartbeat() {
	every := max(s.vt/3, 200*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.stopping.Done():
			return
		}
		s.extend()
	}
}

// extend extends the messages whose visibility ends within half the
// visibility timeout.
func (s *subscription) extend() {
	s.settleMu.Lock()
	defer s.settleMu.Unlock()
	now := time.Now()
	var due []ackID
	s.mu.Lock()
	for _, f := range s.inflight {
		if f.visibleAt.Sub(now) < s.vt/2 && now.Sub(f.received) < maxVisibility-s.vt {
			due = append(due, ackID{handle: f.handle, received: f.received})
		}
	}
	s.mu.Unlock()
	if len(due) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.vt/2)
	defer cancel()
	if err := s.changeVisibility(ctx, "sqs: extend visibility", due, s.vt); err != nil {
		// A message that this missed comes back after its visibility
		// timeout, which at-least-once allows; the next tick tries again.
		_ = err
	}
	s.mu.Lock()
	for _, a := range due {
		if f := s.inflight[a.handle]; f != nil {
			f.visibleAt = now.Add(s.vt)
		}
	}
	s.mu.Unlock()
}

// Close stops the receivers and the heartbeat and hands back, at once, the
// messages that Receive has not returned (and any whose settling failed),
// so that the group's other subscribers get them without waiting for
// their visibility timeout.
//
// A ReceiveMessage call in flight is not cancelled but waited for, up to
// its long-polling wait: SQS would go on with a call that the client
// abandoned, and the messages it took would stay invisible, to every
// subscriber, for their visibility timeout. What such a call returns is
// handed back like the rest.
func (s *subscription) Close() error {
	s.stop()
	s.hb.Wait()
	received := make(chan struct{})
	go func() { s.wg.Wait(); close(received) }()
	t := time.NewTimer(s.c.cfg.WaitTime + 5*time.Second)
	select {
	case <-received:
	case <-t.C:
		// An endpoint that holds calls past their wait: give up on them.
		s.cancel()
		<-received
	}
	t.Stop()
	s.cancel()
	s.mu.Lock()
	back := make([]ackID, 0, len(s.inflight))
	for _, f := range s.inflight {
		back = append(back, ackID{handle: f.handle, received: f.received})
	}
	clear(s.inflight)
	s.mu.Unlock()
	s.rest = nil
	for {
		select {
		case <-s.batches:
			continue
		default:
		}
		break
	}
	if len(back) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.settleMu.Lock()
	defer s.settleMu.Unlock()
	_ = s.changeVisibility(ctx, "sqs: hand back", back, 0)
	return nil
}
