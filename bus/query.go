package bus

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// keyPing marks the messages that a Bus sends to its own reply topic to
// learn that its reply subscription receives.
const keyPing = message.MetadataPrefix + "reply-ping"

// HandleQuery registers h as the handler of queries of type Q, answered
// with an R. All handlers of Q share one consumer group (the type's
// name), so each query is answered once. The reply goes to the asker's
// reply topic: h's result, or h's error (any error: a query changes
// nothing, so it is not redelivered; the asker decides whether to ask
// again). Errors: InvalidArgument for a nil h, a second handler of Q in
// this Bus, or after Start.
func HandleQuery[Q, R any](b *Bus, h func(ctx context.Context, query Q) (R, error)) error {
	const op = "bus: handle query"
	typ, err := TypeName[Q]()
	if err != nil {
		return err
	}
	if h == nil {
		return message.Errorf(message.InvalidArgument, op, "query %s: nil handler", typ)
	}
	return b.register(&registration{kind: KindQuery, typ: typ, topic: b.Topic(KindQuery, typ), group: typ,
		h: func(ctx context.Context, m *message.Message) error {
			if m.Metadata.Get(KeyReplyTo) == "" {
				return message.PermanentError(message.Errorf(message.InvalidArgument, op, "query %s has no %s", m.ID, KeyReplyTo))
			}
			var payload []byte
			q, err := decode[Q](b, op, typ, m)
			if err == nil {
				var r R
				if r, err = h(ContextWithMessage(ctx, m), q); err == nil {
					payload, err = b.opts.Codec.Marshal(r)
				}
			}
			return b.reply(ctx, m, payload, err)
		}})
}

// Ask sends query to the handler of its type and waits for the reply.
// The reply comes back on this Bus's reply topic, matched to the query by
// its ID (KeyReplyFor); one subscription per Bus receives every reply,
// started by the first Ask, so a call holds no goroutine and no
// subscription of its own, and a reply that comes after its Ask gave up
// is dropped.
//
// Errors: Unavailable when no reply came within Options.QueryTimeout
// (or, before the first query, when the reply subscription did not
// receive in that time); ctx's own error when ctx ended first; the
// handler's error with its code (ReplyError); InvalidArgument for a type
// without a usable name or a reply that does not decode into an R;
// Closed after Close; the publisher's errors.
func Ask[Q, R any](ctx context.Context, b *Bus, query Q, opts ...PublishOption) (R, error) {
	const op = "bus: ask"
	var zero R
	typ, err := TypeName[Q]()
	if err != nil {
		return zero, err
	}
	rs, err := b.replyListener()
	if err != nil {
		return zero, err
	}
	timer := time.NewTimer(b.opts.QueryTimeout)
	defer timer.Stop()
	timedOut := func() (R, error) {
		return zero, message.Errorf(message.Unavailable, op, "no reply to query %s within %s", typ, b.opts.QueryTimeout)
	}
	select {
	case <-rs.ready:
	case <-rs.done:
		return zero, message.Errorf(message.Closed, op, "bus is closed")
	case <-timer.C:
		return timedOut()
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	m, err := b.encode(ctx, op, KindQuery, typ, query, append(slices.Clone(opts), WithReplyTo(b.ReplyTopic())))
	if err != nil {
		return zero, err
	}
	ch := rs.expect(m.ID)
	defer rs.forget(m.ID)
	if err := b.pub.Publish(ctx, b.Topic(KindQuery, typ), m); err != nil {
		return zero, err
	}
	select {
	case r := <-ch:
		if err := ReplyError(op, r); err != nil {
			return zero, err
		}
		var v R
		if err := b.opts.Codec.Unmarshal(r.Payload, &v); err != nil {
			return zero, message.Errorf(message.InvalidArgument, op, "decoding the reply to %s: %w", typ, err)
		}
		return v, nil
	case <-rs.done:
		return zero, message.Errorf(message.Closed, op, "bus is closed")
	case <-timer.C:
		return timedOut()
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// replies is a Bus's one reply subscription and the queries waiting on
// it.
type replies struct {
	b       *Bus
	ready   chan struct{} // closed when the subscription received a ping
	done    chan struct{} // closed by close
	readyMu sync.Once
	mu      sync.Mutex
	waiting map[string]chan *message.Message
}

// replyListener returns the Bus's reply subscription, starting it (and
// its pinger) on the first call.
func (b *Bus) replyListener() (*replies, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, message.Errorf(message.Closed, "bus: ask", "bus is closed")
	}
	if b.replies != nil {
		return b.replies, nil
	}
	rs := &replies{b: b, ready: make(chan struct{}), done: make(chan struct{}), waiting: map[string]chan *message.Message{}}
	b.replies = rs
	ctx, stop := context.WithCancel(context.Background())
	go func() { <-rs.done; stop() }()
	b.spawn(ctx, b.ReplyTopic(), rs.handle, []subscriber.Option{subscriber.Group(b.group), subscriber.Unordered()})
	b.wg.Add(1)
	go func() { defer b.wg.Done(); rs.ping(ctx) }()
	return rs, nil
}

// ping publishes pings to the reply topic until one is received: until
// then a reply could be lost (a broker whose new group does not see
// older messages, or that drops what no group receives). Pings back off
// from 50ms to 1s.
func (rs *replies) ping(ctx context.Context) {
	d := 50 * time.Millisecond
	for {
		m := &message.Message{Metadata: message.Metadata{KeyKind: KindReply, keyPing: "1"}}
		if err := rs.b.pub.Publish(ctx, rs.b.ReplyTopic(), m); err != nil && ctx.Err() == nil {
			rs.b.log.Debug("polybus: bus: reply ping", "err", err)
		}
		t := time.NewTimer(d)
		select {
		case <-rs.ready:
			t.Stop()
			return
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		d = min(2*d, time.Second)
	}
}

func (rs *replies) handle(_ context.Context, m *message.Message) error {
	if m.Metadata.Get(keyPing) != "" {
		rs.readyMu.Do(func() { close(rs.ready) })
		return nil
	}
	rs.mu.Lock()
	ch := rs.waiting[m.Metadata.Get(KeyReplyFor)]
	rs.mu.Unlock()
	if ch != nil {
		select {
		case ch <- m:
		default: // a repeated reply: the first is enough
		}
	}
	return nil
}

func (rs *replies) expect(id string) <-chan *message.Message {
	ch := make(chan *message.Message, 1)
	rs.mu.Lock()
	rs.waiting[id] = ch
	rs.mu.Unlock()
	return ch
}

func (rs *replies) forget(id string) {
	rs.mu.Lock()
	delete(rs.waiting, id)
	rs.mu.Unlock()
}

func (rs *replies) close() { close(rs.done) }
