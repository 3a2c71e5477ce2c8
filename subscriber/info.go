package subscriber

import "context"

// Info describes the Subscribe call that runs a handler: how its handler
// calls are scheduled. Middleware whose correctness depends on that reads
// it with InfoFrom; the ordering buffer, for one, must know whether a call
// it holds back blocks the only goroutine that could deliver the message it
// waits for.
type Info struct {
	// Topic and Group of the Subscribe call.
	Topic string
	Group string
	// Concurrency is the most handler calls that run at once.
	Concurrency int
	// Prefetch is the most messages received and not yet settled.
	Prefetch int
	// Ordered reports per-key serialisation: handler calls for one
	// non-empty key never overlap, so while a call for key K runs, no
	// other message of K reaches the handler in this Subscribe call.
	Ordered bool
	// AckMode is when messages are acked.
	AckMode AckMode

	stopping chan struct{}
}

// Stopping returns a channel that is closed when the Subscribe call stops
// receiving and begins its drain: from then on no further message reaches
// its handler, so a handler call that waits for another delivery should
// give up.
func (i *Info) Stopping() <-chan struct{} { return i.stopping }

type infoKey struct{}

// InfoFrom returns the Info of the Subscribe call whose handler received
// ctx, or nil when ctx did not come from a Subscriber (a handler called
// directly, as in a unit test). The same *Info is passed to every call of
// one Subscribe call, so it can key per-call bookkeeping.
func InfoFrom(ctx context.Context) *Info {
	i, _ := ctx.Value(infoKey{}).(*Info)
	return i
}
