package message

import "time"

// Capabilities is an adapter's one declaration of what its broker
// guarantees. The portable layer enforces it (size limits, nack delays), the
// conformance suite tests exactly what it declares and skips the rest, and
// the docs' capability table is generated from it.
type Capabilities struct {
	// Name of the adapter, such as "memory" or "nats".
	Name string
	// OrderPerKey: messages of one key are delivered in publish order to a
	// group, as long as none is nacked.
	OrderPerKey bool
	// OrderPerKeyScaleOut: per-key order holds across every subscriber of
	// a group, not only within one: a key's messages go to one subscriber
	// at a time (it owns the key's partition), and when membership changes
	// a later message of a key is never handled before an earlier one was
	// handled at least once. Membership changes may redeliver, never
	// reorder.
	OrderPerKeyScaleOut bool
	// Rebalance bounds how long a group takes, after a subscriber joins or
	// leaves (or its process dies), to reach a balanced assignment of its
	// partitions among the live subscribers. Declared with
	// OrderPerKeyScaleOut; 0 is no declared bound.
	Rebalance time.Duration
	// ConsumerGroups: subscribers sharing a group compete; each message is
	// handled by one of them.
	ConsumerGroups bool
	// FanOut: every group receives every message of the topic.
	FanOut bool
	// Retained: a new group can start from the earliest retained message.
	Retained bool
	// Nack: a nacked message is redelivered (to the same group).
	Nack bool
	// NackDelay: a nack can ask for a redelivery delay that the broker
	// honours (no redelivery before it).
	NackDelay bool
	// MaxNackDelay is the longest delay a nack can ask for; 0 is no limit.
	MaxNackDelay time.Duration
	// AttemptCount: received messages carry the delivery attempt number.
	AttemptCount bool
	// MaxMessageSize is the largest [Message.Size] that the broker accepts;
	// 0 is no limit.
	MaxMessageSize int
	// NativeDeadLetter: the broker can dead-letter by itself after a
	// number of deliveries.
	NativeDeadLetter bool
	// Persistent: messages survive a broker restart.
	Persistent bool
}
