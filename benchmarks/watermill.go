package benchmarks

import (
	"context"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	wmessage "github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/polybus/polybus/bench"
)

// Watermill is a bench.Client on a Watermill Publisher and Subscribers:
// each message is published with a fresh Watermill UUID and its key in
// the metadata ("partition_key", which the Kafka marshaler below uses);
// each of a group's consumers is a Subscriber of its own from NewSub
// (one for all of them when Shared), reading its channel in one goroutine,
// calling the handler and acking.
type Watermill struct {
	Pub wmessage.Publisher
	// NewSub returns a subscriber that is a member of group.
	NewSub func(group string) (wmessage.Subscriber, error)
	// Single makes a group one subscriber, whatever the consumer count
	// (GoChannel has no groups: each subscriber gets every message).
	Single bool
	// CloseFn releases what Pub and NewSub share; nil closes Pub.
	CloseFn func() error
}

const wmKey = "partition_key"

func (w *Watermill) Publisher(_ context.Context, topic string) (bench.Publisher, error) {
	return &wmPub{w: w, topic: topic}, nil
}

type wmPub struct {
	w     *Watermill
	topic string
}

func (p *wmPub) Publish(ctx context.Context, msgs []bench.Message) error {
	ms := make([]*wmessage.Message, len(msgs))
	for i, m := range msgs {
		wm := wmessage.NewMessage(watermill.NewUUID(), m.Payload)
		if m.Key != "" {
			wm.Metadata.Set(wmKey, m.Key)
		}
		wm.SetContext(ctx)
		ms[i] = wm
	}
	return p.w.Pub.Publish(p.topic, ms...)
}

func (p *wmPub) Close(context.Context) error { return nil }

func (c *Watermill) Subscribe(ctx context.Context, topic, group string, consumers int, handle func([]byte)) (bench.Subscription, error) {
	if c.Single {
		consumers = 1
	}
	s, ctx := bench.NewConsumers(ctx)
	var subs []wmessage.Subscriber
	var mu sync.Mutex
	s.OnClose = func() {
		mu.Lock()
		defer mu.Unlock()
		for _, sub := range subs {
			if err := sub.Close(); err != nil {
				s.Fail(err)
			}
		}
	}
	for range consumers {
		sub, err := c.NewSub(group)
		if err != nil {
			s.Close(ctx)
			return nil, err
		}
		mu.Lock()
		subs = append(subs, sub)
		mu.Unlock()
		ch, err := sub.Subscribe(ctx, topic)
		if err != nil {
			s.Close(ctx)
			return nil, err
		}
		s.Go(func() {
			for m := range ch {
				handle(m.Payload)
				m.Ack()
			}
		})
	}
	return s, nil
}

func (c *Watermill) Close(context.Context) error {
	if c.CloseFn != nil {
		return c.CloseFn()
	}
	return c.Pub.Close()
}

// NewWatermillGoChannel is Watermill's in-process GoChannel: Persistent
// (without it, what is published while no subscriber runs is dropped, and
// the consume phase would find nothing to drain; it also makes every new
// subscriber replay the topic from its start, so the steady phase's
// subscriber first reads the earlier phases' messages again: they count
// as stray), with an OutputChannelBuffer of buffer (Watermill's default is
// 0; "tuned" is 256, polybus's prefetch there), one subscriber per group.
func NewWatermillGoChannel(buffer int64) *Watermill {
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: buffer, Persistent: true}, watermill.NopLogger{})
	return &Watermill{Pub: gc, Single: true,
		NewSub:  func(string) (wmessage.Subscriber, error) { return noClose{gc}, nil },
		CloseFn: gc.Close}
}

// noClose keeps a shared GoChannel open when one subscription closes.
type noClose struct{ wmessage.Subscriber }

func (noClose) Close() error { return nil }
