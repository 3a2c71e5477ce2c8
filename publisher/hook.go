package publisher

import (
	"context"

	"github.com/polybus/polybus/message"
)

// Hook observes Publish calls, for tracing and metrics (package telemetry
// implements it). It lives in Options, so it is set once, before the first
// Publish; a nil Hook costs one branch per call.
//
// StartPublish is called once per Publish call whose topic and messages
// passed the nil checks and got their ID and Time stamped, and before the
// size and metadata checks: metadata it adds to msgs (W3C trace context,
// message.KeyTraceParent) is part of what is checked against
// Capabilities.MaxMessageSize and what the broker receives. It may change
// only msgs' Metadata, and must not keep msgs. The returned done (which may
// be nil) is called once, with the error Publish returns, before Publish
// returns: every rejection, context error and *PublishError included.
// Hooks must be safe for concurrent use.
type Hook interface {
	StartPublish(ctx context.Context, topic string, msgs []*message.Message) (done func(err error))
}
