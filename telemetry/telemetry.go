package telemetry

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
)

// ScopeName is the instrumentation scope of polybus's tracer and meter.
const ScopeName = "github.com/polybus/polybus/telemetry"

// Config configures New. The zero value is valid: every field documents
// its default.
type Config struct {
	// TracerProvider makes the spans. Default otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// MeterProvider makes the instruments. Default otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// Propagator writes the trace context into message metadata on publish
	// and reads it on receive. Default propagation.TraceContext{} (W3C
	// traceparent and tracestate, message.KeyTraceParent): what polybus's
	// log lines and CLI read.
	Propagator propagation.TextMapPropagator
	// System is the messaging.system attribute. Default "polybus"; System
	// derives the conventional name from a broker URL.
	System string
	// Depths are the dead-letter depths and consumer lags to report as
	// gauges, where a broker reports them (see Depth).
	Depths []Depth
}

// DepthReporter is what a broker offers when it can tell how many messages
// of a topic a consumer group has not acked: *memory.Broker's Depth. No
// other adapter reports it (Kafka's lag, SQS's approximate counts and
// JetStream's pending counts are not exposed through polybus yet).
type DepthReporter interface {
	Depth(topic, group string) int
}

// Depth is one gauge series: Source's depth of Topic for Group, reported
// as polybus.dlq.depth when DeadLetter is set (Topic is a dead-letter
// topic, Group the group that reads it, such as the CLI's "polybus-dlq"),
// else as polybus.consumer.lag.
type Depth struct {
	Source     DepthReporter
	Topic      string
	Group      string
	DeadLetter bool
}

// Telemetry makes polybus's spans and metrics. Make one with New, hand its
// PublisherHook (or OpenOption) to the publisher and its SubscribeOptions
// to each Subscribe call. It is safe for concurrent use.
type Telemetry struct {
	tracer trace.Tracer
	// tracing is off for a no-op tracer provider: no span work at all.
	tracing bool
	// w3c is set when prop is the default TraceContext, which the
	// subscriber side parses itself (parseTraceParent).
	w3c    bool
	prop   propagation.TextMapPropagator
	system attribute.KeyValue
	m      instruments

	mu    sync.RWMutex
	attrs map[attrKey]*attrSet

	unregister func() error
}

// New returns a Telemetry over cfg's providers.
//
// Errors: those of the meter provider's instrument creation.
func New(cfg Config) (*Telemetry, error) {
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	mp := cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	prop := cfg.Propagator
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	system := cfg.System
	if system == "" {
		system = "polybus"
	}
	_, w3c := prop.(propagation.TraceContext)
	t := &Telemetry{
		w3c:     w3c,
		tracer:  tp.Tracer(ScopeName),
		tracing: !isNoop(tp),
		prop:    prop,
		system:  semconv.MessagingSystemKey.String(system),
		attrs:   map[attrKey]*attrSet{},
	}
	meter := mp.Meter(ScopeName)
	if err := t.m.init(meter); err != nil {
		return nil, err
	}
	counts, err := t.observeCounts(meter)
	if err != nil {
		return nil, err
	}
	depths, err := t.observeDepths(meter, cfg.Depths)
	if err != nil {
		_ = counts.Unregister()
		return nil, err
	}
	t.unregister = func() error {
		err := counts.Unregister()
		if depths != nil {
			err = errors.Join(err, depths())
		}
		return err
	}
	return t, nil
}

// isNoop reports whether tp makes only no-op spans.
func isNoop(tp trace.TracerProvider) bool {
	_, ok := tp.(noop.TracerProvider)
	return ok
}

// Close stops reporting the consumer-side counts and the Depths gauges
// (a callback reads them at collection). Spans need no closing; flushing
// them is the providers' business.
func (t *Telemetry) Close() error {
	if t.unregister == nil {
		return nil
	}
	return t.unregister()
}

// PublisherHook returns the publisher.Hook that traces and counts
// publishes: set it as publisher.Options.Hook.
func (t *Telemetry) PublisherHook() publisher.Hook { return publishHook{t} }

// OpenOption returns the polybus.Open option that sets PublisherHook on
// the opened Client's publisher.
func (t *Telemetry) OpenOption() polybus.OpenOption {
	return polybus.WithPublisherHook(t.PublisherHook())
}

// SubscriberHook returns the subscriber.Hook that makes receive spans and
// counts received messages.
func (t *Telemetry) SubscriberHook() subscriber.Hook { return receiveHook{t} }

// SubscribeOptions returns the options that instrument one Subscribe call:
// subscriber.Observe(SubscriberHook()) and subscriber.Use(Middleware()).
// Pass them before any other subscriber.Use, so that Middleware is the
// outermost middleware: it must see the final outcome of each delivery
// (what DLQ, Retry and Dedupe did).
func (t *Telemetry) SubscribeOptions() []subscriber.Option {
	return []subscriber.Option{subscriber.Observe(t.SubscriberHook()), subscriber.Use(t.Middleware())}
}

// OnRetry records an event "retry" on the process span of a message that
// middleware.Retry retries: set it as middleware.RetryConfig.OnRetry, so
// that in-process retries show each attempt in the trace (redelivered
// attempts have a process span each anyway).
func (t *Telemetry) OnRetry(ctx context.Context, m *message.Message, attempt int, delay time.Duration, err error) {
	trace.SpanFromContext(ctx).AddEvent("retry", trace.WithAttributes(
		attribute.Int(AttrAttempt, attempt),
		attribute.Float64("polybus.retry.delay_seconds", delay.Seconds()),
		attribute.String("exception.message", err.Error()),
	))
}

// Instrument is the one-call form for a program that opens a broker by
// URL: it returns the polybus.Open option and the Subscribe options that
// turn tracing and metrics on with tp and mp (nil: the global providers),
// and System(rawURL) as messaging.system.
func Instrument(rawURL string, tp trace.TracerProvider, mp metric.MeterProvider) (*Telemetry, polybus.OpenOption, []subscriber.Option, error) {
	t, err := New(Config{TracerProvider: tp, MeterProvider: mp, System: System(rawURL)})
	if err != nil {
		return nil, nil, nil, err
	}
	return t, t.OpenOption(), t.SubscribeOptions(), nil
}

// System returns the messaging.system value for a broker URL: "kafka",
// "rabbitmq", "aws_sqs" (the conventions' names), "nats" for nats:// and
// embedded://, "polybus.memory" for mem://, else "polybus".
func System(rawURL string) string {
	scheme, _, _ := strings.Cut(rawURL, "://")
	switch strings.ToLower(scheme) {
	case "kafka":
		return "kafka"
	case "amqp", "amqps":
		return "rabbitmq"
	case "sqs":
		return "aws_sqs"
	case "nats", "embedded":
		return "nats"
	case "mem":
		return "polybus.memory"
	}
	return "polybus"
}

// Attribute keys polybus adds beside the conventions' own.
const (
	// AttrAttempt is the delivery attempt (message.Delivery.Attempt).
	AttrAttempt = "polybus.delivery.attempt"
	// AttrKey is the message's key.
	AttrKey = "polybus.message.key"
	// AttrCausationID is the message's message.KeyCausationID: the ID of
	// the message whose handler published it. The correlation ID is the
	// conventions' messaging.message.conversation_id.
	AttrCausationID = "polybus.message.causation_id"
	// AttrOutcome is the process span's outcome: acked, nacked,
	// dead-lettered, deferred or deduplicated.
	AttrOutcome = "polybus.outcome"
	// AttrRetries is how many retries Retry made within the process span.
	AttrRetries = "polybus.retries"
	// AttrDLQReason and AttrDLQTopic describe a dead-lettered message.
	AttrDLQReason = "polybus.dlq.reason"
	AttrDLQTopic  = "polybus.dlq.topic"
)

// errorType is the error.type of err: its message.Code.
func errorType(err error) attribute.KeyValue {
	return semconv.ErrorTypeKey.String(message.CodeOf(err).String())
}

// outcome names a handler call's result; see AttrOutcome.
func outcome(err error, r middleware.Report) string {
	switch {
	case r.DeadLetter != "":
		return middleware.OutcomeDeadLettered
	case r.Duplicate && err == nil:
		return outcomeDeduplicated
	case err == nil:
		return middleware.OutcomeAcked
	case middleware.IsDeferred(err):
		return middleware.OutcomeDeferred
	}
	return middleware.OutcomeNacked
}
