package telemetry

import (
	"context"
	"errors"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/polybus/polybus/message"
)

// Metric names. Through the Prometheus exporter a counter's dots become
// underscores and it gains _total (polybus_published_total), a histogram
// in seconds gains _seconds.
const (
	MetricPublished     = "polybus.published"
	MetricPublishErrors = "polybus.publish.errors"
	MetricReceived      = "polybus.received"
	MetricAcked         = "polybus.acked"
	MetricNacked        = "polybus.nacked"
	MetricRetried       = "polybus.retried"
	MetricDeadLettered  = "polybus.dead_lettered"
	MetricDeduplicated  = "polybus.deduplicated"
	MetricDeferred      = "polybus.deferred"
	MetricHandlerTime   = "polybus.handler.duration"
	MetricInFlight      = "polybus.handler.inflight"
	MetricEndToEnd      = "polybus.end_to_end.latency"
	MetricConsumerLag   = "polybus.consumer.lag"
	MetricDLQDepth      = "polybus.dlq.depth"
)

// The span kinds' options, made once.
var (
	consumerKind = trace.WithSpanKind(trace.SpanKindConsumer)
	producerKind = trace.WithSpanKind(trace.SpanKindProducer)
)

// The consumer-side counts, kept per attribute set in atomics (an add per
// message, where a synchronous instrument's Add costs an attribute-set
// lookup) and reported by one callback at collection.
const (
	cReceived = iota
	cAcked
	cNacked
	cRetried
	cDeadLettered
	cDeduplicated
	cDeferred
	cInFlight
	nCounts
)

type instruments struct {
	published, publishErrors metric.Int64Counter
	handlerTime, endToEnd    metric.Float64Histogram
	// counts[i] reports the atomics of index i; counts[cInFlight] is an
	// up-down counter, the others counters.
	counts        [nCounts]metric.Int64Observable
	lag, dlqDepth metric.Int64ObservableGauge
}

// secondsBuckets suit messaging latencies: 100µs to 1 minute.
var secondsBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

func (m *instruments) init(meter metric.Meter) error {
	var errs []error
	counter := func(name, desc string) metric.Int64Counter {
		c, err := meter.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit("{message}"))
		errs = append(errs, err)
		return c
	}
	hist := func(name, desc string) metric.Float64Histogram {
		h, err := meter.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"),
			metric.WithExplicitBucketBoundaries(secondsBuckets...))
		errs = append(errs, err)
		return h
	}
	m.published = counter(MetricPublished, "Messages the broker accepted.")
	m.publishErrors = counter(MetricPublishErrors, "Messages whose publish failed, by error.type (the polybus error code).")
	observed := func(i int, name, desc string) {
		var err error
		if i == cInFlight {
			m.counts[i], err = meter.Int64ObservableUpDownCounter(name, metric.WithDescription(desc), metric.WithUnit("{call}"))
		} else {
			m.counts[i], err = meter.Int64ObservableCounter(name, metric.WithDescription(desc), metric.WithUnit("{message}"))
		}
		errs = append(errs, err)
	}
	observed(cReceived, MetricReceived, "Messages received from the broker (each delivery).")
	observed(cAcked, MetricAcked, "Deliveries whose handler chain returned nil (dead-lettered and deduplicated ones included).")
	observed(cNacked, MetricNacked, "Deliveries whose handler chain failed, to be redelivered (deferrals not included).")
	observed(cRetried, MetricRetried, "Retries that middleware.Retry made (in-process calls or redeliveries asked for).")
	observed(cDeadLettered, MetricDeadLettered, "Messages middleware.DLQ dead-lettered.")
	observed(cDeduplicated, MetricDeduplicated, "Duplicates that Dedupe or Ordering acked without calling the handler.")
	observed(cDeferred, MetricDeferred, "Deliveries deferred (middleware.Defer: open breaker, ordering, a duplicate in flight).")
	observed(cInFlight, MetricInFlight, "Handler calls running.")
	m.handlerTime = hist(MetricHandlerTime, "Time in the handler chain per delivery.")
	m.endToEnd = hist(MetricEndToEnd, "From the message's publish time (Message.Time) to the start of its handling.")
	return errors.Join(errs...)
}

// observeCounts registers the callback that reports every consumer
// attribute set's counts: counters once they are above 0, in-flight always.
func (t *Telemetry) observeCounts(meter metric.Meter) (metric.Registration, error) {
	insts := make([]metric.Observable, nCounts)
	for i, c := range t.m.counts {
		insts[i] = c
	}
	return meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		t.mu.RLock()
		defer t.mu.RUnlock()
		for k, s := range t.attrs {
			if k.group == "" {
				continue
			}
			for i := range s.n {
				if v := s.n[i].Load(); v != 0 || i == cInFlight {
					o.ObserveInt64(t.m.counts[i], v, s.observe)
				}
			}
		}
		return nil
	}, insts...)
}

// attrKey identifies an attribute set: a topic, and a group on the
// consumer side ("" for publishes).
type attrKey struct{ topic, group string }

// attrSet holds the measurement options of one attribute set, made once,
// so that recording a measurement allocates nothing.
type attrSet struct {
	add    []metric.AddOption
	record []metric.RecordOption
	// errs are add options with error.type, per code.
	errs map[message.Code][]metric.AddOption
	// n are the consumer-side counts (cReceived...), observe the option
	// that reports them.
	n       [nCounts]atomic.Int64
	observe metric.ObserveOption

	// processName and process (processRoot: for a message with no trace
	// context) start a process span of the pair.
	processName          string
	process, processRoot []trace.SpanStartOption
}

func (t *Telemetry) attrSetFor(k attrKey) *attrSet {
	t.mu.RLock()
	s := t.attrs[k]
	t.mu.RUnlock()
	if s != nil {
		return s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s = t.attrs[k]; s != nil {
		return s
	}
	kvs := []attribute.KeyValue{t.system, semconv.MessagingDestinationName(k.topic)}
	if k.group != "" {
		kvs = append(kvs, semconv.MessagingConsumerGroupName(k.group))
	}
	set := attribute.NewSet(kvs...)
	s = &attrSet{
		add:     []metric.AddOption{metric.WithAttributeSet(set)},
		record:  []metric.RecordOption{metric.WithAttributeSet(set)},
		errs:    map[message.Code][]metric.AddOption{},
		observe: metric.WithAttributeSet(set),
	}
	if k.group != "" {
		static := trace.WithAttributes(append(kvs,
			semconv.MessagingOperationTypeProcess, semconv.MessagingOperationName("process"))...)
		s.processName = "process " + k.topic
		s.process = []trace.SpanStartOption{consumerKind, static}
		s.processRoot = []trace.SpanStartOption{consumerKind, static, trace.WithNewRoot()}
	}
	t.attrs[k] = s
	return s
}

func (t *Telemetry) publishAttrs(topic string) *attrSet { return t.attrSetFor(attrKey{topic: topic}) }

// errorOpts returns the add options of a publish error of topic.
func (t *Telemetry) errorOpts(topic string, err error) []metric.AddOption {
	s := t.publishAttrs(topic)
	code := message.CodeOf(err)
	t.mu.Lock()
	defer t.mu.Unlock()
	o := s.errs[code]
	if o == nil {
		o = []metric.AddOption{metric.WithAttributes(t.system, semconv.MessagingDestinationName(topic), errorType(err))}
		s.errs[code] = o
	}
	return o
}

// observeDepths registers the gauges of depths.
func (t *Telemetry) observeDepths(meter metric.Meter, depths []Depth) (func() error, error) {
	if len(depths) == 0 {
		return nil, nil
	}
	var err error
	t.m.lag, err = meter.Int64ObservableGauge(MetricConsumerLag, metric.WithUnit("{message}"),
		metric.WithDescription("Messages of a topic its consumer group has not acked, where the broker reports it."))
	if err != nil {
		return nil, err
	}
	t.m.dlqDepth, err = meter.Int64ObservableGauge(MetricDLQDepth, metric.WithUnit("{message}"),
		metric.WithDescription("Dead letters not yet acked by the group that reads them, where the broker reports it."))
	if err != nil {
		return nil, err
	}
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, d := range depths {
			g := t.m.lag
			if d.DeadLetter {
				g = t.m.dlqDepth
			}
			o.ObserveInt64(g, int64(d.Source.Depth(d.Topic, d.Group)),
				metric.WithAttributes(t.system, semconv.MessagingDestinationName(d.Topic), semconv.MessagingConsumerGroupName(d.Group)))
		}
		return nil
	}, t.m.lag, t.m.dlqDepth)
	if err != nil {
		return nil, err
	}
	return reg.Unregister, nil
}
