package telemetry

import (
	"context"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
)

const outcomeDeduplicated = "deduplicated"

// receiveHook is Telemetry's subscriber.Hook: one consumer span per batch
// that a subscription received ("receive <topic>"), from the start of the
// driver's Receive call to its return, linked to each message's producer
// context; and the received count.
type receiveHook struct{ t *Telemetry }

func (h receiveHook) Received(ctx context.Context, info *subscriber.Info, recs []subscriber.Received, start time.Time) {
	t := h.t
	end := time.Now()
	set := t.attrSetFor(attrKey{info.Topic, info.Group})
	set.n[cReceived].Add(int64(len(recs)))
	if !t.tracing {
		return
	}

	links := make([]trace.Link, 0, len(recs))
	var parent trace.SpanContext
	oneTrace := true
	for i, rec := range recs {
		sc := t.producer(rec.Msg)
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
	opts := []trace.SpanStartOption{consumerKind, trace.WithTimestamp(start), trace.WithLinks(links...)}
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

// producer returns the span context of m's producer, if m carries one.
func (t *Telemetry) producer(m *message.Message) trace.SpanContext {
	if len(m.Metadata) == 0 {
		return trace.SpanContext{}
	}
	if t.w3c {
		return parseTraceParent(m.Metadata[message.KeyTraceParent], m.Metadata[message.KeyTraceState])
	}
	return trace.SpanContextFromContext(t.prop.Extract(context.Background(), carrier(m.Metadata)))
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
			var span trace.Span
			if t.tracing {
				ctx, span = t.startProcess(ctx, m, set)
			}
			ctx, tr := middleware.Track(ctx)

			set.n[cInFlight].Add(1)
			err := next(ctx, m)
			set.n[cInFlight].Add(-1)
			t.m.handlerTime.Record(ctx, time.Since(start).Seconds(), set.record...)

			r := tr.Report()
			out := outcome(err, r)
			if r.Retries > 0 {
				set.n[cRetried].Add(int64(r.Retries))
			}
			switch out {
			case middleware.OutcomeDeadLettered:
				set.n[cDeadLettered].Add(1)
				set.n[cAcked].Add(1)
			case outcomeDeduplicated:
				set.n[cDeduplicated].Add(1)
				set.n[cAcked].Add(1)
			case middleware.OutcomeAcked:
				set.n[cAcked].Add(1)
			case middleware.OutcomeDeferred:
				set.n[cDeferred].Add(1)
			default:
				set.n[cNacked].Add(1)
			}
			if span != nil {
				endProcess(span, m, d, err, out, r)
			}
			return err
		}
	}
}

// startProcess starts m's process span, with the attributes of its
// topic and group (made once per pair); endProcess adds the message's own.
func (t *Telemetry) startProcess(ctx context.Context, m *message.Message, set *attrSet) (context.Context, trace.Span) {
	// The parent is the producer's span only: not a span that
	// Subscribe's context may carry.
	sc := t.producer(m)
	if !sc.IsValid() {
		ctx, span := t.tracer.Start(ctx, set.processName, set.processRoot...)
		if id := span.SpanContext(); id.IsValid() {
			// The span starts a trace: tell Logging its ID, which the
			// message's metadata does not carry.
			ctx = middleware.ContextWithTraceID(ctx, id.TraceID().String())
		}
		return ctx, span
	}
	return t.tracer.Start(trace.ContextWithRemoteSpanContext(ctx, sc), set.processName, set.process...)
}

// endProcess sets the message's attributes and the outcome on span and
// ends it.
func endProcess(span trace.Span, m *message.Message, d message.Delivery, err error, out string, r middleware.Report) {
	if !span.IsRecording() {
		span.End()
		return
	}
	buf := attrPool.Get().(*[]attribute.KeyValue)
	defer attrPool.Put(buf)
	attrs := append((*buf)[:0],
		semconv.MessagingMessageID(m.ID),
		attribute.Int(AttrAttempt, d.Attempt),
		attribute.String(AttrOutcome, out),
	)
	if d.Partition >= 0 {
		attrs = append(attrs, semconv.MessagingDestinationPartitionID(strconv.Itoa(d.Partition)))
	}
	if m.Key != "" {
		attrs = append(attrs, attribute.String(AttrKey, m.Key))
	}
	attrs = lineage(attrs, m.Metadata)
	if r.Retries > 0 {
		attrs = append(attrs, attribute.Int(AttrRetries, r.Retries))
	}
	if r.DeadLetter != "" {
		attrs = append(attrs, attribute.String(AttrDLQReason, r.DeadLetter), attribute.String(AttrDLQTopic, r.DLQTopic))
	}
	if err != nil && out == middleware.OutcomeNacked {
		attrs = append(attrs, errorType(err))
		span.SetStatus(codes.Error, err.Error())
	}
	span.SetAttributes(attrs...)
	span.End()
	clear(attrs)
	*buf = attrs[:0]
}

// attrPool recycles endProcess's attribute buffers: the SDK copies the
// attributes it is given, and a buffer passed through the Span interface
// would otherwise escape (an allocation per message).
var attrPool = sync.Pool{New: func() any { b := make([]attribute.KeyValue, 0, 12); return &b }}
