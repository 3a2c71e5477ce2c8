package memory

import (
	"context"
	"sync"
	"time"

	"github.com/polybus/polybus/message"
)

// FullPolicy says what a publish does when a topic's retention is full of
// messages that some group has not yet acked.
type FullPolicy int

const (
	// Block waits for room until the publish's context ends. Default.
	Block FullPolicy = iota
	// Fail returns message.ErrResourceExhausted at once.
	Fail
)

// Options configures a Broker. The zero value is valid.
type Options struct {
	// MaxMessages bounds the messages a topic retains. Default 100,000.
	MaxMessages int
	// MaxBytes bounds the bytes (message.Message.Size) a topic retains.
	// Default 64 MiB.
	MaxBytes int
	// MaxMessageSize is the largest message accepted. Default 1 MiB.
	MaxMessageSize int
	// Full is what a publish does when retention is full. Default Block.
	Full FullPolicy
}

func (o *Options) fill() error {
	if o.MaxMessages < 0 || o.MaxBytes < 0 || o.MaxMessageSize < 0 {
		return message.Errorf(message.InvalidArgument, "memory: new", "negative limit in options")
	}
	if o.Full != Block && o.Full != Fail {
		return message.Errorf(message.InvalidArgument, "memory: new", "unknown full policy %d", o.Full)
	}
	if o.MaxMessages == 0 {
		o.MaxMessages = 100_000
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = 64 << 20
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = 1 << 20
	}
	if o.MaxMessageSize > o.MaxBytes {
		return message.Errorf(message.InvalidArgument, "memory: new",
			"max message size %d is over max bytes %d", o.MaxMessageSize, o.MaxBytes)
	}
	return nil
}

// Broker is an in-process message broker with the full polybus semantics:
// topics with bounded retention, consumer groups (competing consumers
// inside a group, fan-out across groups), per-key order, nack with delay
// and attempt counts. It is safe for concurrent use.
type Broker struct {
	opts Options

	mu     sync.Mutex
	topics map[string]*topic
}

// New returns an empty Broker.
func New(opts Options) (*Broker, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	return &Broker{opts: opts, topics: map[string]*topic{}}, nil
}

// Capabilities declares what the memory broker guarantees.
func (b *Broker) Capabilities() message.Capabilities {
	return message.Capabilities{
		Name:           "memory",
		OrderPerKey:    true,
		ConsumerGroups: true,
		FanOut:         true,
		Retained:       true,
		Nack:           true,
		NackDelay:      true,
		AttemptCount:   true,
		MaxMessageSize: b.opts.MaxMessageSize,
	}
}

func (b *Broker) topic(name string) *topic {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topics[name]
	if t == nil {
		t = &topic{name: name, opts: &b.opts, groups: map[string]*group{}, signal: make(chan struct{})}
		b.topics[name] = t
	}
	return t
}

// Depth returns the number of messages of topic that group has not yet
// acked (waiting, in flight or nacked). A group that does not exist has
// depth 0.
func (b *Broker) Depth(topicName, groupName string) int {
	t := b.topic(topicName)
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.groups[groupName]
	if g == nil {
		return 0
	}
	return int(t.end()-g.next) + len(g.pending)
}

// topic is a retained log of messages and the groups reading it.
//
// Invariants (under mu): log[i] has offset base+i; every group's next is in
// [base, end()]; every pending offset of every group is >= base, so
// trimming never drops a message a group still owes an ack for.
type topic struct {
	name string
	opts *Options

	mu     sync.Mutex
	base   int64 // offset of log[0]
	log    []*message.Message
	bytes  int
	groups map[string]*group
	// signal is closed and replaced whenever something a waiter may want
	// happens: a publish, a nack, an ack (room for publishers).
	signal chan struct{}
}

func (t *topic) end() int64 { return t.base + int64(len(t.log)) }

// wake wakes every waiter. Caller holds mu.
func (t *topic) wake() {
	close(t.signal)
	t.signal = make(chan struct{})
}

// lowWater is the lowest offset some group still needs. Caller holds mu.
func (t *topic) lowWater() int64 {
	low := t.end()
	for _, g := range t.groups {
		low = min(low, g.next)
		for off := range g.pending {
			low = min(low, off)
		}
	}
	return low
}

// makeRoom trims what no group needs until size more bytes fit, and
// reports whether they do. Caller holds mu.
func (t *topic) makeRoom(size int) bool {
	fits := func() bool {
		return len(t.log) < t.opts.MaxMessages && t.bytes+size <= t.opts.MaxBytes
	}
	if fits() {
		return true
	}
	low := t.lowWater()
	for !fits() && t.base < low {
		t.bytes -= t.log[0].Size()
		t.log[0] = nil
		t.log = t.log[1:]
		t.base++
	}
	return fits()
}

// append publishes msgs in order, waiting for room per the full policy.
func (t *topic) append(ctx context.Context, msgs []*message.Message) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, m := range msgs {
		for !t.makeRoom(m.Size()) {
			if t.opts.Full == Fail {
				return t.fullError(msgs, i)
			}
			sig := t.signal
			t.mu.Unlock()
			select {
			case <-sig:
				t.mu.Lock()
			case <-ctx.Done():
				t.mu.Lock()
				if i == 0 {
					return ctx.Err()
				}
				return t.partial(msgs, i, ctx.Err())
			}
		}
		c := m.Clone()
		t.log = append(t.log, c)
		t.bytes += c.Size()
	}
	t.wake()
	return nil
}

func (t *topic) fullError(msgs []*message.Message, i int) error {
	err := message.Errorf(message.ResourceExhausted, "memory: publish",
		"topic %q retains %d messages (%d bytes) that its groups have not acked", t.name, len(t.log), t.bytes)
	if i == 0 {
		return err
	}
	return t.partial(msgs, i, err)
}

// partial reports msgs[:i] accepted and the rest failed with err.
func (t *topic) partial(msgs []*message.Message, i int, err error) error {
	t.wake()
	errs := make([]error, len(msgs))
	for j := i; j < len(msgs); j++ {
		errs[j] = err
	}
	return batchError(errs)
}

// group is one consumer group's state on a topic.
type group struct {
	name string
	// next is the offset of the next message never delivered to the group.
	next int64
	// pending holds every delivered offset not yet acked.
	pending map[int64]*pendingMsg
	// retry holds nacked offsets waiting for redelivery, in nack order.
	retry []int64
}

type pendingMsg struct {
	attempts int
	// readyAt is when a nacked message may be redelivered; zero while it
	// is in flight.
	readyAt time.Time
	// owner is the subscription holding it in flight, nil once nacked.
	owner *subscription
}

func (t *topic) group(name string, start int) *group {
	g := t.groups[name]
	if g == nil {
		g = &group{name: name, pending: map[int64]*pendingMsg{}}
		if start == startLatest {
			g.next = t.end()
		} else {
			g.next = t.base
		}
		t.groups[name] = g
	}
	return g
}

const (
	startEarliest = iota
	startLatest
)
