// Package memory is polybus's in-process broker: a real broker with the full
// polybus semantics, living inside the process. It is the reference that
// every other adapter is measured against, the broker of unit tests, and a
// product in its own right for single-process pipelines.
//
// # Semantics
//
// A topic is a log with bounded retention. Each consumer group has a cursor
// on it: every group receives every message (fan-out), and the subscribers
// of one group compete for them. A new group starts at the oldest retained
// message (subscriber.Earliest) or at the end (subscriber.Latest).
// Delivery is in publish order; a nacked message is redelivered, after its
// delay, before new messages, with its attempt number raised. When a
// subscription closes with messages in flight, they go back to the group at
// once, in order, as a broker does when a consumer's connection drops.
//
// Retention is bounded by Options.MaxMessages and Options.MaxBytes per
// topic. Messages that every group has acked (and, with no group at all,
// the oldest ones) are trimmed to make room. When room cannot be made
// because groups still owe acks, a publish blocks until it can (Block, the
// default) or fails with message.ErrResourceExhausted (Fail): memory never
// grows without bound and nothing unacked is dropped.
//
// A topic has partitions (Options.Partitions, default 16). A message goes
// to the partition of its key (FNV-1a hash), keyless messages round-robin.
// Each partition has one owner among the open subscriptions of a group at
// a time, so per-key order holds across every subscriber of a group, not
// only within one (Capabilities.OrderPerKeyScaleOut). A subscription
// receives the new messages of the partitions it owns merged in publish
// order, so a group's only subscriber sees the topic's order.
//
// Partitions are assigned to a group's subscriptions when one joins or
// leaves: evenly (shares differ by one at most, earlier members take the
// remainder) and sticky (a join or leave moves only the partitions it
// must). A partition moves only once its old owner has settled (acked or
// nacked) every message of it that it holds; a subscription that closes
// gives its unsettled messages back first, in offset order. So in one
// process the hand-over is exact: a later message of a key is never
// handled before an earlier one, and a graceful leave (the portable
// subscriber drains before it closes) causes no redelivery. A rebalance
// completes within [Rebalance] plus the time the old owner takes to finish
// the messages it holds.
//
// A publish copies the messages (they belong to the caller again once
// Publish returns); a delivery does not: every delivery of a message
// shares the retained copy's Payload and Metadata, so a handler must not
// modify them in place (Clone the message to change it).
//
// Nothing is persisted: a broker lives as long as the process.
//
// # URLs
//
//	mem://                 a new private broker for each Open
//	mem://NAME             the process-wide broker called NAME, shared by
//	                       every Open of the same name
//
// Query parameters: max_messages (default 100000), max_bytes (default
// 67108864), max_message_size (default 1048576), full=block|fail (default
// block), partitions (default 16, at most 4096). They apply when the named broker is first created; opening an
// existing name with different parameters is an error.
//
// # Errors
//
// Bad URLs and options are message.ErrInvalidArgument; a full topic under
// the Fail policy is message.ErrResourceExhausted.
//
// # As
//
// The publisher's and subscriber's As offer **Broker.
package memory

import (
	"context"
	"net/url"
	"sync"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/urlparam"
)

// Scheme is the URL scheme of the memory broker.
const Scheme = "mem"

func init() { polybus.Register(Scheme, openURL) }

var (
	namedMu sync.Mutex
	named   = map[string]*namedBroker{}
)

type namedBroker struct {
	b    *Broker
	opts Options
}

// Client returns a polybus Client over b.
func (b *Broker) Client(opts polybus.ClientOptions) (*polybus.Client, error) {
	return polybus.NewClient(b.PublisherDriver(), b.SubscriberDriver(), opts)
}

func openURL(ctx context.Context, u *url.URL) (*polybus.Client, error) {
	const op = "memory: open"
	if u.Opaque != "" || u.User != nil || u.Port() != "" || (u.Path != "" && u.Path != "/") {
		return nil, message.Errorf(message.InvalidArgument, op,
			"want mem:// or mem://NAME, got %s", polybus.Redact(u.String()))
	}
	p := urlparam.New(op, u)
	var opts Options
	opts.MaxMessages = p.Int("max_messages", 0)
	opts.MaxBytes = p.Int("max_bytes", 0)
	opts.MaxMessageSize = p.Int("max_message_size", 0)
	opts.Partitions = p.Int("partitions", 0)
	if p.OneOf("full", "block", "block", "fail") == "fail" {
		opts.Full = Fail
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	if err := opts.fill(); err != nil {
		return nil, err
	}
	name := u.Host
	if name == "" {
		b, err := New(opts)
		if err != nil {
			return nil, err
		}
		return b.Client(polybus.ClientOptions{})
	}
	namedMu.Lock()
	defer namedMu.Unlock()
	nb := named[name]
	if nb == nil {
		b, err := New(opts)
		if err != nil {
			return nil, err
		}
		nb = &namedBroker{b: b, opts: opts}
		named[name] = nb
	} else if nb.opts != opts {
		return nil, message.Errorf(message.InvalidArgument, op,
			"broker %q already exists with other options (%+v)", name, nb.opts)
	}
	return nb.b.Client(polybus.ClientOptions{})
}
