package telemetry

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
)

// publishHook is Telemetry's publisher.Hook: one producer span per Publish
// call ("publish <topic>"), whose context goes into every message of the
// call, and the published and publish-error counts.
type publishHook struct{ t *Telemetry }

func (h publishHook) StartPublish(ctx context.Context, topic string, msgs []*message.Message) func(error) {
	t := h.t
	span := trace.SpanFromContext(context.Background()) // no-op
	if t.tracing {
		ctx, span = t.startPublish(ctx, topic, msgs)
	}
	set := t.publishAttrs(topic)
	return func(err error) {
		n := int64(len(msgs))
		if err != nil {
			failed := n
			var pe *publisher.PublishError
			if errors.As(err, &pe) {
				failed = int64(len(pe.Failed))
				for _, f := range pe.Failed {
					t.m.publishErrors.Add(ctx, 1, t.errorOpts(topic, f.Err)...)
				}
			} else {
				t.m.publishErrors.Add(ctx, failed, t.errorOpts(topic, err)...)
			}
			n -= failed
			span.SetAttributes(errorType(err))
			span.SetStatus(codes.Error, err.Error())
		}
		if n > 0 {
			t.m.published.Add(ctx, n, set.add...)
		}
		span.End()
	}
}

// startPublish starts the publish span of a call and writes its context
// into msgs' metadata.
func (t *Telemetry) startPublish(ctx context.Context, topic string, msgs []*message.Message) (context.Context, trace.Span) {
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs,
		t.system,
		semconv.MessagingDestinationName(topic),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("publish"),
	)
	if len(msgs) == 1 {
		m := msgs[0]
		attrs = append(attrs, semconv.MessagingMessageID(m.ID))
		if m.Key != "" {
			attrs = append(attrs, attribute.String(AttrKey, m.Key))
		}
		attrs = lineage(attrs, m.Metadata)
	} else {
		attrs = append(attrs, semconv.MessagingBatchMessageCount(len(msgs)))
	}
	opts := []trace.SpanStartOption{producerKind, trace.WithAttributes(attrs...)}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		// Published outside any span (an outbox relay, a forwarder): the
		// messages' own trace context, if they carry one (Inject), is the
		// parent, and each other trace among them a link.
		var parent trace.SpanContext
		var links []trace.Link
		for _, m := range msgs {
			sc := t.producer(m)
			switch {
			case !sc.IsValid():
			case !parent.IsValid():
				parent = sc
			case sc.TraceID() != parent.TraceID() && len(links) < 128:
				links = append(links, trace.Link{SpanContext: sc})
			}
		}
		if parent.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
			opts = append(opts, trace.WithLinks(links...))
		}
	}
	ctx, span := t.tracer.Start(ctx, "publish "+topic, opts...)

	// The propagator writes into a scratch carrier once; every message
	// gets its keys (the same strings, no formatting per message).
	scratch := make(carrier, 2)
	t.prop.Inject(ctx, scratch)
	if len(scratch) > 0 {
		writeContext(scratch, msgs)
	}
	return ctx, span
}

// Inject writes ctx's trace context into msgs' metadata, for messages that
// are published later outside that context: recorded in an outbox in the
// request's transaction, say. The publish span of a Publish call made
// outside any span is then a child of the context the messages carry, so
// the relay's publish continues the request's trace. (A Publish inside a
// span replaces the carried context with its own publish span's.)
func (t *Telemetry) Inject(ctx context.Context, msgs ...*message.Message) {
	scratch := make(carrier, 2)
	t.prop.Inject(ctx, scratch)
	if len(scratch) > 0 {
		writeContext(scratch, msgs)
	}
}

// writeContext copies the trace context in scratch into msgs' metadata.
func writeContext(scratch carrier, msgs []*message.Message) {
	for _, m := range msgs {
		if m == nil {
			continue
		}
		md := m.Metadata
		if _, received := m.Delivery(); received || md == nil {
			// A received message's metadata may be shared with the
			// broker's copy and other deliveries: write to a copy.
			md = make(message.Metadata, len(m.Metadata)+len(scratch))
			for k, v := range m.Metadata {
				md[k] = v
			}
			m.Metadata = md
		}
		for k, v := range scratch {
			md[k] = v
		}
	}
}

// lineage appends the correlation and causation IDs of md.
func lineage(attrs []attribute.KeyValue, md message.Metadata) []attribute.KeyValue {
	if id := md[message.KeyCorrelationID]; id != "" {
		attrs = append(attrs, semconv.MessagingMessageConversationID(id))
	}
	if id := md[message.KeyCausationID]; id != "" {
		attrs = append(attrs, attribute.String(AttrCausationID, id))
	}
	return attrs
}
