// Package telemetry traces and measures polybus with OpenTelemetry, through
// the optional hooks of the portable publisher (publisher.Hook) and
// subscriber (subscriber.Hook) and one handler middleware. The core
// packages never import OpenTelemetry: an application that does not import
// this package links none of it, and a nil hook costs one branch.
//
//	tel, err := telemetry.New(telemetry.Config{TracerProvider: tp, MeterProvider: mp, System: telemetry.System(url)})
//	c, err := polybus.Open(ctx, url, tel.OpenOption())
//	opts := append(tel.SubscribeOptions(), subscriber.Use(chain)) // telemetry outermost
//	c.Subscriber().Subscribe(ctx, "orders", handle, opts...)
//
// The typed buses and sagas subscribe through the same options: pass
// tel.SubscribeOptions() as bus.Options.Subscribe or saga.Config.Subscribe
// (their own Correlation runs inside, so telemetry stays outermost), and a
// Client opened with tel.OpenOption() as their broker: commands, replies,
// events and saga steps then continue the trace of whatever sent them. For
// an outbox, call Telemetry.Inject before outbox.Add: the relay's publish,
// made outside any span, continues the request's trace.
//
// # Traces
//
// Spans follow the OpenTelemetry messaging semantic conventions (semconv
// v1.37.0):
//
//   - "publish <topic>", kind producer, one per Publish call:
//     messaging.system, messaging.destination.name,
//     messaging.operation.type "send", messaging.operation.name "publish",
//     and messaging.message.id (one message) or
//     messaging.batch.message_count (several). Its context is written into
//     every message's metadata (W3C traceparent and tracestate,
//     message.KeyTraceParent) before the publisher's size check, so the
//     header counts against the broker's limit. A received message that a
//     handler republishes gets a copy of its metadata, never a write to
//     the broker's shared copy.
//   - "receive <topic>", kind consumer, one per batch the driver's Receive
//     returned, from the Receive call to its return:
//     messaging.operation.type and name "receive",
//     messaging.consumer.group.name, messaging.batch.message_count, and a
//     link to each message's producer span. A batch of one trace is a
//     child of it; a batch that joins several traces starts its own trace
//     and is linked to each.
//   - "process <topic>", kind consumer, one per delivery (the middleware):
//     a child of the message's producer span, so one trace runs from
//     publisher through broker to handler, and on through whatever the
//     handler publishes with its context. messaging.operation.type and
//     name "process", messaging.message.id, messaging.consumer.group.name,
//     messaging.destination.partition.id (where the Delivery has a
//     partition: memory, Kafka, NATS and RabbitMQ partitions),
//     polybus.delivery.attempt (each redelivery is a span of its own),
//     polybus.message.key, polybus.outcome, polybus.retries,
//     polybus.dlq.reason and polybus.dlq.topic, error.type (the
//     message.Code) on a nack.
//
// Lineage: the correlation ID (message.KeyCorrelationID, kept by
// middleware.Correlation) is messaging.message.conversation_id, and the
// causation ID (message.KeyCausationID) is polybus.message.causation_id, on
// publish and process spans. `polybus trace ID` walks the same links among
// the messages a broker and its dead-letter topic still hold.
//
// In-process retries (middleware.Retry's default mode) happen inside one
// process span: set RetryConfig.OnRetry to Telemetry.OnRetry to record an
// event per retry.
//
// # Metrics
//
// Counters ({message}): polybus.published, polybus.publish.errors (by
// error.type, the polybus error code), polybus.received, polybus.acked
// (every delivery acked: dead-lettered and deduplicated ones too),
// polybus.nacked (failures to redeliver; deferrals are polybus.deferred),
// polybus.retried, polybus.dead_lettered, polybus.deduplicated,
// polybus.deferred. Histograms (seconds): polybus.handler.duration (the
// handler chain per delivery) and polybus.end_to_end.latency (from
// Message.Time, the publish time, to the start of handling: across hosts
// it includes their clock skew). Up-down counter: polybus.handler.inflight.
// Attributes: messaging.system, messaging.destination.name and, on the
// consumer side, messaging.consumer.group.name.
//
// Gauges polybus.consumer.lag and polybus.dlq.depth are reported only for
// the Config.Depths given, from a broker that reports depth
// (DepthReporter): the memory broker (*memory.Broker) does; the Kafka,
// RabbitMQ, SQS and NATS adapters expose no depth or lag yet, and this
// package does not guess one.
//
// Through go.opentelemetry.io/otel/exporters/prometheus the names become
// polybus_published_total, polybus_handler_duration_seconds and so on; see
// the Prometheus example.
//
// # Logging
//
// polybus logs with log/slog. Per-message lines (middleware.Logging, the
// subscriber's at-most-once lines, the saga engine) carry id, key, topic,
// group, attempt and trace_id: the message's traceparent trace, or, when
// the message carried none and the process span started a trace,
// that trace (middleware.ContextWithTraceID).
//
// # Errors
//
// New fails only when the meter provider cannot make an instrument.
// Nothing here changes a message's outcome: spans and metrics observe.
package telemetry
