package telemetry

import (
	"context"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
)

// receiveHook is Telemetry's subscriber.Hook: one consumer span per batch
// that a subscription received ("receive <topic>"), from the start of the
// driver's Receive call to its return, linked to each message's producer
// context; and the received count.
type receiveHook struct{ t *Telemetry }

func (h receiveHook) Received(ctx context.Context, info *subscriber.Info, recs []subscriber.Received, start time.Time) {
	t := h.t
	end := time.Now()
	set := t.attrSetFor(attrKey{info.Topic, info.Group})
	t.m.received.Add(ctx, int64(len(recs)), set.add...)

	links := make([]trace.Link, 0, len(recs))
	var parent trace.SpanContext
	oneTrace := true
	for i, rec := range recs {
		sc := trace.SpanContextFromContext(t.extract(context.Background(), rec.Msg))
		if !sc.IsValid() {
			oneTrace = false
			continue
		}
		links = append(links, trace.Link{SpanContext: sc})
		if i == 0 {
			parent = sc
		} else if sc.TraceID() != parent.TraceID() {
			oneTrace = false
		}
	}
	// A batch of one trace (one message, or one Publish call's) continues
	// it; a batch that joins several traces starts its own, linked to each.
	pctx := ctx
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(start), trace.WithLinks(links...)}
	if oneTrace && parent.IsValid() {
		pctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	} else {
		opts = append(opts, trace.WithNewRoot())
	}
	attrs := []attribute.KeyValue{
		t.system,
		semconv.MessagingDestinationName(info.Topic),
		semconv.MessagingConsumerGroupName(info.Group),
		semconv.MessagingOperationTypeReceive,
		semconv.MessagingOperationName("receive"),
		semconv.MessagingBatchMessageCount(len(recs)),
	}
	if len(recs) == 1 {
		attrs = append(attrs, semconv.MessagingMessageID(recs[0].Msg.ID))
	}
	opts = append(opts, trace.WithAttributes(attrs...))
	_, span := t.tracer.Start(pctx, "receive "+info.Topic, opts...)
	span.End(trace.WithTimestamp(end))
}

// extract returns ctx carrying m's producer span context, if m has one.
func (t *Telemetry) extract(ctx context.Context, m *message.Message) context.Context {
	if len(m.Metadata) == 0 {
		return ctx
	}
	return t.prop.Extract(ctx, carrier(m.Metadata))
}

// Middleware returns the handler middleware that makes a consumer span per
// delivery ("process <topic>"), a child of the message's producer span (so
// one trace runs from publisher to handler, and on through what the handler
// publishes), and counts each delivery's outcome: acked, nacked, retried,
// dead-lettered, deduplicated, deferred; the handler duration, handlers in
// flight and end-to-end latency. Place it outermost (see
// SubscribeOptions).
func (t *Telemetry) Middleware() subscriber.Middleware {
	return func(next subscriber.Handler) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			start := time.Now()
			d, _ := m.Delivery()
			set := t.attrSetFor(attrKey{d.Topic, d.Group})
			if !m.Time.IsZero() {
				t.m.endToEnd.Record(ctx, start.Sub(m.Time).Seconds(), set.record...)
			}

			// The parent is the producer's span only: not a span that
			// Subscribe's context may carry.
			sc := trace.SpanContextFromContext(t.extract(context.Background(), m))
			remote := sc.IsValid()
			pctx := ctx
			newRoot := trace.WithNewRoot()
			if remote {
				pctx, newRoot = trace.ContextWithRemoteSpanContext(ctx, sc), nil
			}
			var buf [12]attribute.KeyValue
			attrs := append(buf[:0],
				t.system,
				semconv.MessagingDestinationName(d.Topic),
				semconv.MessagingConsumerGroupName(d.Group),
				semconv.MessagingOperationTypeProcess,
				semconv.MessagingOperationName("process"),
				semconv.MessagingMessageID(m.ID),
				attribute.Int(AttrAttempt, d.Attempt),
			)
			if d.Partition >= 0 {
				attrs = append(attrs, semconv.MessagingDestinationPartitionID(strconv.Itoa(d.Partition)))
			}
			if m.Key != "" {
				attrs = append(attrs, attribute.String(AttrKey, m.Key))
			}
			attrs = lineage(attrs, m.Metadata)
			startOpts := [4]trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(start), trace.WithAttributes(attrs...), newRoot}
			n := 4
			if newRoot == nil {
				n = 3
			}
			ctx, span := t.tracer.Start(pctx, "process "+d.Topic, startOpts[:n]...)
			if !remote && span.SpanContext().IsValid() {
				// The span starts a trace: tell Logging its ID, which
				// the message's metadata does not carry.
				ctx = middleware.ContextWithTraceID(ctx, span.SpanContext().TraceID().String())
			}
			ctx, tr := middleware.Track(ctx)

			t.m.inFlight.Add(ctx, 1, set.add...)
			err := next(ctx, m)
			t.m.inFlight.Add(ctx, -1, set.add...)
			end := time.Now()
			t.m.handlerTime.Record(ctx, end.Sub(start).Seconds(), set.record...)

			r := tr.Report()
			out := outcome(err, r)
			if r.Retries > 0 {
				t.m.retried.Add(ctx, int64(r.Retries), set.add...)
			}
			switch out {
			case middleware.OutcomeDeadLettered:
				t.m.deadLettered.Add(ctx, 1, set.add...)
				t.m.acked.Add(ctx, 1, set.add...)
			case "deduplicated":
				t.m.deduplicated.Add(ctx, 1, set.add...)
				t.m.acked.Add(ctx, 1, set.add...)
			case middleware.OutcomeAcked:
				t.m.acked.Add(ctx, 1, set.add...)
			case middleware.OutcomeDeferred:
				t.m.deferred.Add(ctx, 1, set.add...)
			default:
				t.m.nacked.Add(ctx, 1, set.add...)
			}

			if span.IsRecording() {
				span.SetAttributes(attribute.String(AttrOutcome, out))
				if r.Retries > 0 {
					span.SetAttributes(attribute.Int(AttrRetries, r.Retries))
				}
				if r.DeadLetter != "" {
					span.SetAttributes(attribute.String(AttrDLQReason, r.DeadLetter), attribute.String(AttrDLQTopic, r.DLQTopic))
				}
				if err != nil && out == middleware.OutcomeNacked {
					span.SetAttributes(errorType(err))
					span.SetStatus(codes.Error, err.Error())
				}
			}
			span.End(trace.WithTimestamp(end))
			return err
		}
	}
}
