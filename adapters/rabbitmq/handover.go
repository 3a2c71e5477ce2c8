package rabbitmq

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Honest attempts across a hand-over (ordered layout).
//
// A quorum queue raises a message's x-delivery-count whenever it comes
// back unsettled: after a nack with requeue, and equally when the channel
// that holds it closes (RabbitMQ 3.10 has no way to give a delivery back
// uncounted: basic.reject, basic.nack, basic.recover and a channel close
// all count it). A subscriber that steps back from a partition gives back
// the messages it received and never handed to a handler; counted as they
// are, the next owner would see them as a second attempt.
//
// So a subscription that gives a partition back first makes sure that the
// broker has nothing more in flight to it: it publishes enough pings
// straight to the queue to fill its prefetch and waits until it has
// received deliveries up to its prefetch, after which the broker has no
// credit to send more. It then knows every message it gives back. It
// writes them, each with the count its next delivery will carry and how
// many of its deliveries were given back unhandled, to the partition's
// hand-over queue ("group#n~handover@topic", durable, classic) with a
// publisher confirm, and only then closes the channel. The next owner reads
// (and empties) that queue before it hands out the first delivery that
// carries a count, and subtracts what a correction says when the count
// matches exactly. A correction that it did not use goes back to the queue
// with its own hand-over. A delivery that comes back after a crash or a
// connection loss has no correction: it counts one more attempt.

// pendingDelivery is a delivery that the subscription received and did not
// hand out (yet).
type pendingDelivery struct {
	id    string
	count int
}

// correction says that the next delivery of a message whose
// x-delivery-count is Count counts Unhandled deliveries that no handler saw.
type correction struct {
	ID        string    `json:"id"`
	Count     int       `json:"count"`
	Unhandled int       `json:"unhandled"`
	At        time.Time `json:"at"`
}

// correctionTTL bounds how long a correction is kept for a message that
// does not come back with the expected count.
const correctionTTL = time.Hour

// handOverTimeout bounds one hand-over's wait for the broker.
const handOverTimeout = 5 * time.Second

// holdHook, when set (by tests), is called when a consumer starts
// stepping back.
var holdHook atomic.Pointer[func(queue string)]

// handoverQueueName is the hand-over queue of a partition queue.
func handoverQueueName(queue string) string { return retryQueueName(queue, "handover") }

// deliveryID is the message ID under which a delivery's corrections are
// kept, or "" when it has none of its own.
func deliveryID(d *amqp.Delivery) string {
	if d.MessageId != "" {
		return d.MessageId
	}
	return headerString(d.Headers[hdrID])
}

// forwarded notes a delivery that the forwarder took from the channel: k
// is the active consumer of its queue. It acks a ping at once, unless k is
// holding (a ping then fills the prefetch, see handOver), and reports
// whether d is to be forwarded.
func (k *consumer) forwarded(d *amqp.Delivery) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.seen = true
	token, ping := d.Headers[hdrPing]
	if ping && !k.holding {
		_ = k.ch.Ack(d.DeliveryTag, false)
		return false
	}
	k.unacked++
	if ping && k.fenceToken != "" && token == k.fenceToken {
		// Every delivery before the last fence ping is in.
		k.fenceAt = 1
	}
	if !ping && k.q.part >= 0 {
		if id := deliveryID(d); id != "" {
			k.pending[d.DeliveryTag] = pendingDelivery{id: id, count: deliveryCount(d.Headers)}
		}
	}
	if k.fenceAt > 0 && k.unacked >= k.fenceAt {
		k.fenceAt = 0
		close(k.fence)
	}
	return !ping
}

// handOver prepares the hand-over of the partitions of ks that this
// subscription is active on and that hold no handed-out message: it
// publishes pings straight to their queues, waits until nothing more can
// arrive before them and records the deliveries they give back in the
// partitions' hand-over queues. With full (a step back, while others
// publish), the pings fill the prefetch, after which the broker has no
// credit to send anything; otherwise (the subscription stops) one ping
// each, which leaves a message published during the close to count one
// more attempt, and costs the queues far fewer pings. Each k must be
// holding or its subscription stopped (Receive no longer called). It runs
// on the manager goroutine, before the channels close.
func (s *subscription) handOver(full bool, ks ...*consumer) {
	if s.c.cfg.Unordered {
		return
	}
	deadline := time.Now().Add(handOverTimeout)
	var waits []*consumer
	for _, k := range ks {
		k.stopHolding()
		if k.ch.IsClosed() {
			continue
		}
		s.fences++
		token := "fence-" + strconv.FormatUint(s.fences, 10)
		k.mu.Lock()
		active := k.seen
		need := s.prefetch - k.unacked
		if active && need > 0 {
			k.fenceAt = s.prefetch
			k.fenceToken = token
			if !full {
				need = 1
			}
		}
		k.mu.Unlock()
		if !active {
			continue
		}
		if need > 0 && s.fill(k.q, need, token) {
			waits = append(waits, k)
		}
	}
	for _, k := range waits {
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-k.fence:
		case <-t.C:
		}
		t.Stop()
	}
	for _, k := range ks {
		if k.ch.IsClosed() {
			continue
		}
		k.mu.Lock()
		active := k.seen
		given := make([]pendingDelivery, 0, len(k.pending))
		for _, p := range k.pending {
			given = append(given, p)
		}
		k.mu.Unlock()
		if active {
			s.record(k, given, deadline)
		}
	}
}

// fill publishes n pings straight to q, the last with token. It reports
// whether they were all sent.
func (s *subscription) fill(q groupQueue, n int, token string) bool {
	if s.ctl == nil {
		return false
	}
	for i := range n {
		var v any = true
		if i == n-1 {
			v = token
		}
		if err := s.ctl.Publish("", q.name, false, false, amqp.Publishing{
			Headers: amqp.Table{hdrPing: v}, DeliveryMode: amqp.Transient,
		}); err != nil {
			return false
		}
	}
	return true
}

// record notes the deliveries that k gives back unhandled and writes every
// correction of k's queue to its hand-over queue.
func (s *subscription) record(k *consumer, given []pendingDelivery, deadline time.Time) {
	read := s.ledgerWasRead(k)
	if !read {
		for _, g := range given {
			if g.count > 0 {
				s.readLedger(k)
				read = true
				break
			}
		}
	}
	if len(given) == 0 && !read {
		return
	}
	now := time.Now()
	s.corrMu.Lock()
	m := s.corrections(k.q.name)
	for _, g := range given {
		prior := 0
		if c, ok := m[g.id]; ok && g.count >= c.Count {
			prior = c.Unhandled
		}
		m[g.id] = correction{ID: g.id, Count: g.count + 1, Unhandled: prior + 1, At: now}
	}
	all := make([]correction, 0, len(m))
	for id, c := range m {
		if now.Sub(c.At) > correctionTTL {
			delete(m, id)
			continue
		}
		all = append(all, c)
	}
	s.corrMu.Unlock()
	if len(all) == 0 {
		return
	}
	body, _ := json.Marshal(all) // plain strings and numbers
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	_ = s.publishLedger(ctx, k.q.name, body)
}

// publishLedger publishes one record to queue's hand-over queue and waits
// for its confirm.
func (s *subscription) publishLedger(ctx context.Context, queue string, body []byte) error {
	pc, err := s.c.pool.get(ctx)
	if err != nil {
		return err
	}
	name := handoverQueueName(queue)
	s.retryMu.Lock()
	known := s.retries[name] == pc.gen
	s.retryMu.Unlock()
	if !known {
		if err := declareHandover(pc.ch, name); err != nil {
			_ = pc.ch.Close()
			return err
		}
		s.retryMu.Lock()
		s.retries[name] = pc.gen
		s.retryMu.Unlock()
	}
	dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, "", name, false, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: body,
	})
	if err != nil {
		_ = pc.ch.Close()
		return err
	}
	select {
	case <-dc.Done():
	case <-ctx.Done():
		(&pubDriver{c: s.c}).abandon(pc, []*amqp.DeferredConfirmation{dc})
		return ctx.Err()
	}
	s.c.pool.put(pc)
	return nil
}

func declareHandover(ch *amqp.Channel, name string) error {
	note(false, name)
	_, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeClassic})
	if err != nil {
		return declareError("rabbitmq: subscribe", "hand-over queue "+name, err)
	}
	return nil
}

func (s *subscription) ledgerWasRead(k *consumer) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ledgerRead
}

// readLedger empties k's hand-over queue into the corrections, once per
// consumer.
func (s *subscription) readLedger(k *consumer) {
	k.mu.Lock()
	if k.ledgerRead {
		k.mu.Unlock()
		return
	}
	k.ledgerRead = true
	k.mu.Unlock()
	s.ledgerMu.Lock()
	defer s.ledgerMu.Unlock()
	gen, _ := s.c.current()
	if s.ledger != nil && (s.ledger.IsClosed() || s.ledgerG != gen) {
		_ = s.ledger.Close()
		s.ledger = nil
	}
	if s.ledger == nil {
		ctx, cancel := context.WithTimeout(context.Background(), handOverTimeout)
		ch, g, err := s.c.channel(ctx)
		cancel()
		if err != nil {
			return
		}
		s.ledger, s.ledgerG = ch, g
	}
	name := handoverQueueName(k.q.name)
	if err := declareHandover(s.ledger, name); err != nil {
		_ = s.ledger.Close()
		s.ledger = nil
		return
	}
	for {
		d, ok, err := s.ledger.Get(name, true)
		if err != nil {
			_ = s.ledger.Close()
			s.ledger = nil
			return
		}
		if !ok {
			return
		}
		var cs []correction
		if json.Unmarshal(d.Body, &cs) != nil {
			continue
		}
		s.corrMu.Lock()
		m := s.corrections(k.q.name)
		for _, c := range cs {
			if old, ok := m[c.ID]; !ok || c.Count >= old.Count {
				m[c.ID] = c
			}
		}
		s.corrMu.Unlock()
	}
}

// corrections returns queue's corrections by message ID, creating the map
// on first use; corrMu must be held.
func (s *subscription) corrections(queue string) map[string]correction {
	m := s.corr[queue]
	if m == nil {
		m = map[string]correction{}
		s.corr[queue] = m
	}
	return m
}

// closeLedger closes the channel that reads the hand-over queues.
func (s *subscription) closeLedger() {
	s.ledgerMu.Lock()
	defer s.ledgerMu.Unlock()
	if s.ledger != nil {
		_ = s.ledger.Close()
		s.ledger = nil
	}
}

// unhandled returns how many of the count deliveries of d, which is being
// handed out, were given back unhandled at hand-overs. The correction
// stays, for the delivery after a nack, until the message is acked.
func (s *subscription) unhandled(k *consumer, d *amqp.Delivery, count int) int {
	if count == 0 || k.q.part < 0 {
		return 0
	}
	id := deliveryID(d)
	if id == "" {
		return 0
	}
	s.readLedger(k)
	s.corrMu.Lock()
	defer s.corrMu.Unlock()
	m := s.corr[k.q.name]
	c, ok := m[id]
	if !ok {
		return 0
	}
	if count < c.Count {
		// Another message under the same ID.
		delete(m, id)
		return 0
	}
	// A count above the expected one has deliveries lost to a crash or
	// a connection loss on top: those count.
	m[id] = correction{ID: id, Count: count + 1, Unhandled: c.Unhandled, At: time.Now()}
	return c.Unhandled
}

// forget drops the correction of d, which was acked or moved to a delay
// queue.
func (s *subscription) forget(k *consumer, d *amqp.Delivery) {
	if k.q.part < 0 {
		return
	}
	s.corrMu.Lock()
	defer s.corrMu.Unlock()
	if m := s.corr[k.q.name]; len(m) > 0 {
		delete(m, deliveryID(d))
	}
}
