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
	// Partitions is how many partitions each topic has: a key's messages
	// all go to one partition (by FNV-1a hash of the key), keyless ones
	// round-robin, and each partition has one subscriber of a group at a
	// time. More partitions let more subscribers of one group share the
	// work. Default 16.
	Partitions int
}

func (o *Options) fill() error {
	if o.MaxMessages < 0 || o.MaxBytes < 0 || o.MaxMessageSize < 0 || o.Partitions < 0 {
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
	if o.Partitions == 0 {
		o.Partitions = 16
	}
	if o.Partitions > maxPartitions {
		return message.Errorf(message.InvalidArgument, "memory: new", "partitions %d is over the limit of %d", o.Partitions, maxPartitions)
	}
	if o.MaxMessageSize > o.MaxBytes {
		return message.Errorf(message.InvalidArgument, "memory: new",
			"max message size %d is over max bytes %d", o.MaxMessageSize, o.MaxBytes)
	}
	return nil
}

// maxPartitions bounds Options.Partitions.
const maxPartitions = 4096

// Rebalance is the memory broker's declared bound on a rebalance: a
// partition moves to its new owner as soon as the old owner has settled
// what it holds of it, so the bound is this plus the time the old owner's
// handlers take to finish those messages.
const Rebalance = 100 * time.Millisecond

// Broker is an in-process message broker with the full polybus semantics:
// topics with bounded retention, consumer groups (competing consumers
// inside a group, fan-out across groups), partitions with one owner per
// group at a time (per-key order across every subscriber of a group), nack
// with delay and attempt counts. It is safe for concurrent use.
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
		Name:                "memory",
		OrderPerKey:         true,
		OrderPerKeyScaleOut: true,
		Rebalance:           Rebalance,
		ConsumerGroups:      true,
		FanOut:              true,
		Retained:            true,
		Nack:                true,
		NackDelay:           true,
		AttemptCount:        true,
		MaxMessageSize:      b.opts.MaxMessageSize,
	}
}

func (b *Broker) topic(name string) *topic {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topics[name]
	if t == nil {
		t = &topic{name: name, opts: &b.opts, parts: make([]partIndex, b.opts.Partitions),
			groups: map[string]*group{}}
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
	n := len(g.pending)
	for p := range t.parts {
		n += int(t.parts[p].end() - g.parts[p].next)
	}
	return n
}

// Members returns how many open subscriptions group has on topic, and how
// many of the topic's partitions each of them owns, in the order they
// joined.
func (b *Broker) Members(topicName, groupName string) []int {
	t := b.topic(topicName)
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.groups[groupName]
	if g == nil {
		return nil
	}
	owned := make([]int, len(g.members))
	for i, m := range g.members {
		for p := range g.parts {
			if g.parts[p].owned(m) {
				owned[i]++
			}
		}
	}
	return owned
}

// topic is a retained log of messages and the groups reading it.
//
// Invariants (under mu): log[i] has offset base+i; parts[p] lists, in
// order, the offsets of partition p's messages still in log; every group's
// next message of every partition and every pending offset of every group
// are >= base, so trimming never drops a message a group still owes an ack
// for.
type topic struct {
	name string
	opts *Options

	mu   sync.Mutex
	base int64 // offset of log[0]
	log  []entry
	// lowHint is a low-water mark computed earlier (see makeRoom): a lower
	// bound of the current one, as the mark only rises while no group is
	// added (cursors move forward; a delivery adds an in-flight offset at
	// the cursor; settles remove them).
	lowHint int64
	// slab holds the Message structs that newCopy hands out next.
	slab   []message.Message
	bytes  int
	parts  []partIndex
	rr     int // partition of the next keyless message
	groups map[string]*group
	// signal (nil until a waiter asks for it, waitCh) is closed whenever
	// something a waiter may want happens: a publish, a nack, an ack (room
	// for publishers), a change of partition ownership.
	signal chan struct{}
}

// entry is one retained message and its partition.
type entry struct {
	msg  *message.Message
	part int
}

// partIndex is one partition: the offsets of its messages, numbered by
// sequence within the partition; offs[0] has sequence number base.
type partIndex struct {
	base int64
	offs []int64
}

func (pi *partIndex) end() int64 { return pi.base + int64(len(pi.offs)) }

// offset returns the topic offset of the partition's message seq.
func (pi *partIndex) offset(seq int64) int64 { return pi.offs[seq-pi.base] }

func (t *topic) end() int64 { return t.base + int64(len(t.log)) }

// wake wakes every waiter. Caller holds mu.
func (t *topic) wake() {
	if t.signal != nil {
		close(t.signal)
		t.signal = nil
	}
}

// waitCh returns the channel that the next wake closes, made when a waiter
// first asks for it (so a wake with nobody waiting costs nothing). Caller
// holds mu.
func (t *topic) waitCh() <-chan struct{} {
	if t.signal == nil {
		t.signal = make(chan struct{})
	}
	return t.signal
}

// partition returns the partition of a message with key. Caller holds mu.
func (t *topic) partition(key string) int {
	n := len(t.parts)
	if key == "" {
		p := t.rr
		t.rr = (t.rr + 1) % n
		return p
	}
	// FNV-1a, 32 bits, inline: no allocation for the hash state.
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// lowWater is the lowest offset some group still needs. Caller holds mu.
func (t *topic) lowWater() int64 {
	low := t.end()
	for _, g := range t.groups {
		for p := range t.parts {
			if pi := &t.parts[p]; g.parts[p].next < pi.end() {
				low = min(low, pi.offset(g.parts[p].next))
			}
		}
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
	trim := func(low int64) {
		for !fits() && t.base < low {
			e := t.log[0]
			t.bytes -= e.msg.Size()
			t.log[0] = entry{}
			t.log = t.log[1:]
			pi := &t.parts[e.part]
			pi.offs = pi.offs[1:]
			pi.base++
			t.base++
		}
	}
	// The low-water mark costs a pass over every group's in-flight
	// messages: a full topic trims up to the last one computed, and
	// computes it again only when that is used up.
	trim(t.lowHint)
	if !fits() {
		t.lowHint = t.lowWater()
		trim(t.lowHint)
	}
	return fits()
}

// append publishes msgs in order, waiting for room per the full policy.
func (t *topic) append(ctx context.Context, msgs []*message.Message) error {
	// The retained copies: their payloads are allocated once for the
	// whole batch, their structs from the topic's slab.
	size := 0
	for _, m := range msgs {
		size += len(m.Payload)
	}
	payloads := make([]byte, 0, size)
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, m := range msgs {
		for !t.makeRoom(m.Size()) {
			if t.opts.Full == Fail {
				return t.fullError(msgs, i)
			}
			sig := t.waitCh()
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
		c := t.newCopy()
		c.ID, c.Key, c.Metadata, c.Time = m.ID, m.Key, m.Metadata.Clone(), m.Time
		if m.Payload != nil {
			n := len(payloads)
			payloads = append(payloads, m.Payload...)
			c.Payload = payloads[n:len(payloads):len(payloads)]
		}
		p := t.partition(c.Key)
		t.parts[p].offs = append(t.parts[p].offs, t.end())
		t.log = append(t.log, entry{msg: c, part: p})
		t.bytes += c.Size()
	}
	t.wake()
	return nil
}

// newCopy returns a zero Message for a retained copy, from a slab of
// copySlab, so that a publish of a few messages allocates no struct of its
// own. Caller holds t.mu.
func (t *topic) newCopy() *message.Message {
	if len(t.slab) == 0 {
		t.slab = make([]message.Message, copySlab)
	}
	c := &t.slab[0]
	t.slab = t.slab[1:]
	return c
}

// copySlab is how many retained copies a topic allocates at once.
const copySlab = 64

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
	// parts is the group's state of each partition of the topic.
	parts []groupPart
	// pending holds every delivered offset not yet acked.
	pending map[int64]*pendingMsg
	// members are the group's open subscriptions, in the order they
	// joined.
	members []*subscription
}

// groupPart is a group's state of one partition.
//
// A partition has one owner at a time, the only subscription it delivers
// to. Rebalancing sets assigned; ownership passes to assigned only when the
// owner holds nothing of the partition in flight (held == 0), so the new
// owner never receives a message of a key while the old one still handles
// an earlier one.
type groupPart struct {
	// next is the sequence number (in the partition) of the next message
	// never delivered to the group.
	next int64
	// retry holds nacked offsets waiting for redelivery, in nack order.
	retry []int64
	// held counts the partition's messages in flight (delivered, neither
	// acked nor nacked).
	held     int
	owner    *subscription
	assigned *subscription
}

type pendingMsg struct {
	off      int64
	attempts int
	part     int
	// readyAt is when a nacked message may be redelivered; zero while it
	// is in flight.
	readyAt time.Time
	// owner is the subscription holding it in flight, nil once nacked.
	owner *subscription
}

func (t *topic) group(name string, start int) *group {
	g := t.groups[name]
	if g == nil {
		g = &group{name: name, pending: map[int64]*pendingMsg{}, parts: make([]groupPart, len(t.parts))}
		for p := range g.parts {
			if start == startLatest {
				g.parts[p].next = t.parts[p].end()
			} else {
				g.parts[p].next = t.parts[p].base
			}
		}
		t.groups[name] = g
		t.lowHint = 0 // the new group may need what the old mark let go
	}
	return g
}

// rebalance assigns the partitions to the live members: each gets
// len(parts)/len(members) of them, the earliest members one more while
// there is a remainder. A partition stays with its assigned member while
// that member is under its share (sticky), so a join or leave moves only
// the partitions it must. Caller holds t.mu.
func (g *group) rebalance() {
	n := len(g.members)
	quota := make(map[*subscription]int, n)
	for i, m := range g.members {
		quota[m] = len(g.parts) / n
		if i < len(g.parts)%n {
			quota[m]++
		}
	}
	var free []int
	for p := range g.parts {
		gp := &g.parts[p]
		if q, live := quota[gp.assigned]; live && q > 0 {
			quota[gp.assigned] = q - 1
			continue
		}
		gp.assigned = nil
		free = append(free, p)
	}
	for _, m := range g.members {
		for ; quota[m] > 0 && len(free) > 0; quota[m]-- {
			g.parts[free[0]].assigned = m
			free = free[1:]
		}
	}
	for p := range g.parts {
		g.handOver(p)
	}
}

// handOver passes partition p to its assigned member once its owner holds
// nothing of it in flight. Caller holds t.mu.
func (g *group) handOver(p int) {
	if gp := &g.parts[p]; gp.owner != gp.assigned && gp.held == 0 {
		gp.owner = gp.assigned
	}
}

// owned reports whether s may receive from p: it owns p and keeps it.
func (gp *groupPart) owned(s *subscription) bool { return gp.owner == s && gp.assigned == s }

const (
	startEarliest = iota
	startLatest
)
