package subscriber

import (
	"context"
	"time"
)

// Hook observes what a handler middleware cannot see: the batches a
// subscription receives from the broker (package telemetry makes its
// receive spans and received counts from them). Per-message work (process
// spans, handler outcomes) belongs in middleware, which sees each call.
//
// Received is called by the receive loop once per batch that the driver's
// Receive returned, after Receive returned and before the batch's messages
// are dispatched to handlers (or, at-most-once, acked), with the Info of
// the Subscribe call and when the Receive call started. It must not change
// or keep recs (their messages go on to the handlers), and it blocks the
// receive loop while it runs: keep it short. A nil Hook costs one branch
// per batch.
type Hook interface {
	Received(ctx context.Context, info *Info, recs []Received, start time.Time)
}

// Observe sets Config.Hook.
func Observe(h Hook) Option { return func(c *Config) { c.Hook = h } }
