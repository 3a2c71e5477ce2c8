package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/subscriber"
)

// orderEvent is the payload of the demo's messages.
type orderEvent struct {
	Type  string `json:"type"`
	Order string `json:"order"`
	SKU   string `json:"sku,omitempty"`
	Qty   int    `json:"qty,omitempty"`
	Cents int    `json:"cents"`
}

// demoEvents are the order service's events, in the order in which they
// happen (and are numbered) per order.
var demoEvents = []orderEvent{
	{Type: "OrderPlaced", Order: "ord-1001", SKU: "MUG-RED", Qty: 2, Cents: 2400},
	{Type: "OrderPaid", Order: "ord-1001", Cents: 2400},
	{Type: "OrderPlaced", Order: "ord-1002", SKU: "TEE-L", Qty: 1, Cents: 1900},
	{Type: "OrderPaid", Order: "ord-1002", Cents: 1900},
	{Type: "OrderPlaced", Order: "ord-1003", SKU: "CAP", Qty: 3, Cents: 4500},
	{Type: "OrderPaid", Order: "ord-1003", Cents: 4500},
	// Inventory's catalogue lacks this product: its poison message.
	{Type: "OrderPlaced", Order: "ord-1004", SKU: "POSTER-XL", Qty: 1, Cents: 1200},
}

// publishOrder is the order in which the demo publishes demoEvents: the
// OrderPaid events of ord-1002 and ord-1003 go out before their
// OrderPlaced.
var publishOrder = []int{0, 1, 3, 5, 2, 4, 6}

// The consumers, each in its own group, in the order they are narrated.
var demoConsumers = []string{"payment", "inventory", "notification", "analytics"}

// inventoryCatalogue is what the inventory service stocks.
var inventoryCatalogue = map[string]bool{"MUG-RED": true, "TEE-L": true, "CAP": true}

// Demo timings: short, so that the demo runs in about a second.
const (
	demoRetryInitial = 10 * time.Millisecond
	demoRetryMax     = time.Second
	demoRetries      = 3
	// demoOrderingDelay is how soon an event that arrives ahead of its
	// predecessor comes back.
	demoOrderingDelay = 100 * time.Millisecond
)

// metaEvent carries the event type, so that narration needs no payload.
const metaEvent = "event"

// errLostAck simulates a consumer that crashes after its work, before its
// ack: the message is nacked and delivered again.
var errLostAck = errors.New("demo: connection lost before the ack")

// consumer is one consumer's record of the run.
type consumer struct {
	name string
	// lines narrate what happened, per order, in the order it happened.
	lines map[string][]string
	// handled and deadLettered hold message IDs; seqs the sequence numbers
	// handled per order, in handling order.
	handled      map[string]bool
	deadLettered map[string]bool
	seqs         map[string][]int
	reordered    map[string]bool
	retries      int
	deduplicated int
	lostAck      bool
	done         chan struct{}
	finished     bool
	// analytics' totals.
	placed, paid           int
	placedCents, paidCents int
}

type demo struct {
	c        *polybus.Client
	topic    string
	dlqTopic string
	out      io.Writer
	verbose  bool

	// lostAckID is the message whose ack the notification consumer loses.
	lostAckID string

	mu   sync.Mutex
	cons map[string]*consumer
}

func newDemo(c *polybus.Client, prefix string, out io.Writer, verbose bool) *demo {
	topic := prefix + "orders"
	d := &demo{c: c, topic: topic, dlqTopic: topic + middleware.DefaultDLQSuffix, out: out, verbose: verbose, cons: map[string]*consumer{}}
	for _, name := range demoConsumers {
		d.cons[name] = &consumer{
			name: name, lines: map[string][]string{}, handled: map[string]bool{}, deadLettered: map[string]bool{},
			seqs: map[string][]int{}, reordered: map[string]bool{}, done: make(chan struct{}),
		}
	}
	return d
}

func (d *demo) run(ctx context.Context) error {
	if err := d.publish(ctx); err != nil {
		return err
	}
	if err := d.consume(ctx); err != nil {
		return err
	}
	for _, name := range demoConsumers {
		d.printConsumer(d.cons[name])
	}
	dead, err := d.readDeadLetters(ctx)
	if err != nil {
		return err
	}
	return d.summary(dead)
}

// publish stamps the events with per-order sequence numbers, in the order
// they happen, and publishes them in publishOrder.
func (d *demo) publish(ctx context.Context) error {
	msgs := make([]*message.Message, len(demoEvents))
	for i, ev := range demoEvents {
		payload, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		msgs[i] = &message.Message{ID: message.NewID(), Key: ev.Order, Payload: payload, Metadata: message.Metadata{metaEvent: ev.Type}}
	}
	d.lostAckID = msgs[1].ID // ord-1001 OrderPaid
	if err := middleware.NewSequencer(nil).Stamp(ctx, d.topic, msgs...); err != nil {
		return err
	}
	out := make([]*message.Message, len(publishOrder))
	for i, j := range publishOrder {
		out[i] = msgs[j]
	}
	if err := d.c.Publisher().Publish(ctx, d.topic, out...); err != nil {
		return fmt.Errorf("demo: order service: %w", err)
	}
	fmt.Fprintf(d.out, "\norder service: published %d events to %q, keyed by order ID, numbered per order\n", len(out), d.topic)
	highest := map[string]int{}
	for _, m := range out {
		ev := demoEvents[indexOf(msgs, m)]
		note := ""
		seq := seqOf(m)
		if seq > highest[m.Key]+1 {
			note = "  <- published before its OrderPlaced"
		}
		highest[m.Key] = max(highest[m.Key], seq)
		fmt.Fprintf(d.out, "%s  %s%s\n", label(m), describe(ev), note)
	}
	fmt.Fprintf(d.out, "\n%s consume %q, each in its own consumer group,\n"+
		"behind dead-lettering (to %q), retry (%d attempts, backoff from %s), dedupe and ordering\n",
		strings.Join(demoConsumers, ", "), d.topic, d.dlqTopic, demoRetries, demoRetryInitial)
	return nil
}

func indexOf(msgs []*message.Message, m *message.Message) int {
	for i, x := range msgs {
		if x == m {
			return i
		}
	}
	return -1
}

func describe(ev orderEvent) string {
	if ev.Type == "OrderPlaced" {
		return fmt.Sprintf("%d x %s, %s", ev.Qty, ev.SKU, euros(ev.Cents))
	}
	return euros(ev.Cents)
}

func euros(cents int) string { return fmt.Sprintf("€%d.%02d", cents/100, cents%100) }

func seqOf(m *message.Message) int {
	n, _ := strconv.Atoi(m.Metadata.Get(message.KeySequence))
	return n
}

// label names a message in narration: order, event type and number.
func label(m *message.Message) string {
	return fmt.Sprintf("  %-9s %-12s seq %d", m.Key, m.Metadata.Get(metaEvent), seqOf(m))
}

// note adds a narration line to cs for m's order. Callers hold d.mu.
func (cs *consumer) note(m *message.Message, format string, args ...any) {
	cs.lines[m.Key] = append(cs.lines[m.Key], label(m)+"  "+fmt.Sprintf(format, args...))
}

// check closes cs.done once cs has settled every event: handled or
// dead-lettered (and, for notification, absorbed the redelivery). Callers
// hold d.mu.
func (cs *consumer) check() {
	if cs.finished || len(cs.handled)+len(cs.deadLettered) < len(demoEvents) {
		return
	}
	if cs.name == "notification" && cs.deduplicated == 0 {
		return
	}
	cs.finished = true
	close(cs.done)
}

// consume runs the four consumers until each has settled every event.
func (d *demo) consume(ctx context.Context) error {
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	errs := make(chan error, len(demoConsumers))
	var wg sync.WaitGroup
	for _, name := range demoConsumers {
		cs := d.cons[name]
		mw, err := d.middleware(cs)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.c.Subscriber().Subscribe(runCtx, d.topic, d.handler(cs), subscriber.Group(cs.name), subscriber.Use(mw)); err != nil {
				errs <- fmt.Errorf("demo: %s: %w", cs.name, err)
			}
		}()
	}
	var err error
	for _, name := range demoConsumers {
		select {
		case <-d.cons[name].done:
			continue
		case err = <-errs:
		case <-ctx.Done():
			err = d.stalled(ctx)
		}
		break
	}
	stop()
	wg.Wait()
	return err
}

// stalled explains a demo that did not finish in time.
func (d *demo) stalled(ctx context.Context) error {
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ctx.Err()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var parts []string
	for _, name := range demoConsumers {
		cs := d.cons[name]
		if !cs.finished {
			parts = append(parts, fmt.Sprintf("%s settled %d of %d events", name, len(cs.handled)+len(cs.deadLettered), len(demoEvents)))
		}
	}
	return fmt.Errorf("demo: the flow did not finish within %s: %s", demoTimeout, strings.Join(parts, "; "))
}

// middleware builds a consumer's chain: the demo's observer, outermost,
// then middleware.DefaultChain with dead-lettering, retry and, inside them,
// dedupe and ordering:
//
//	observe → Correlation → DLQ → Retry → Dedupe → Ordering → Recoverer → handler
//
// (with Logging after Correlation under --verbose).
func (d *demo) middleware(cs *consumer) (subscriber.Middleware, error) {
	dlqCfg := middleware.DLQConfig{
		Publisher: d.c.Publisher(),
		OnDeadLetter: func(_ context.Context, m, dead *message.Message, perr error) {
			d.mu.Lock()
			defer d.mu.Unlock()
			if perr != nil {
				cs.note(m, "dead-lettering failed: %v", perr)
				return
			}
			cs.deadLettered[m.ID] = true
			cs.note(m, "attempt %s failed: dead-lettered to %s (%s)", dead.Metadata.Get(message.KeyDLQAttempts), d.dlqTopic, dead.Metadata.Get(message.KeyDLQReason))
			cs.check()
		},
	}
	dedupe, err := middleware.Dedupe(middleware.DedupeConfig{
		OnDuplicate: func(_ context.Context, m *message.Message) {
			d.mu.Lock()
			defer d.mu.Unlock()
			cs.deduplicated++
			cs.note(m, "delivered again: dedupe absorbed it, not handled twice")
			cs.check()
		},
	})
	if err != nil {
		return nil, err
	}
	ordering, err := middleware.Ordering(middleware.OrderingConfig{RetryDelay: demoOrderingDelay})
	if err != nil {
		return nil, err
	}
	retryCfg := middleware.RetryConfig{
		MaxAttempts: demoRetries, InitialInterval: demoRetryInitial, MaxInterval: demoRetryMax,
		RandomizationFactor: middleware.NoJitter,
		OnRetry: func(_ context.Context, m *message.Message, attempt int, delay time.Duration, err error) {
			d.mu.Lock()
			defer d.mu.Unlock()
			cs.retries++
			cs.note(m, "attempt %d failed: %v; retrying in %s", attempt, err, delay)
		},
	}
	cfg := middleware.ChainConfig{DLQ: &dlqCfg, Retry: &retryCfg, Inner: []subscriber.Middleware{dedupe, ordering}}
	if d.verbose {
		cfg.Logging = &middleware.LoggingConfig{}
	}
	chain, err := middleware.DefaultChain(cfg)
	if err != nil {
		return nil, err
	}
	return subscriber.Chain(d.observe(cs), chain), nil
}

// observe is the outermost stage: it narrates what the ordering buffer
// hands back, and makes the notification consumer lose one ack.
func (d *demo) observe(cs *consumer) subscriber.Middleware {
	return func(next subscriber.Handler) subscriber.Handler {
		return func(ctx context.Context, m *message.Message) error {
			err := next(ctx, m)
			d.mu.Lock()
			defer d.mu.Unlock()
			switch {
			case errors.Is(err, middleware.ErrOutOfOrder):
				cs.reordered[m.ID] = true
				cs.note(m, "arrived before seq %d: ordering hands it back until seq %d is handled", seqOf(m)-1, seqOf(m)-1)
			case err == nil && cs.name == "notification" && m.ID == d.lostAckID && !cs.lostAck:
				cs.lostAck = true
				cs.note(m, "ack lost (a crash after the work, before the ack): the broker delivers it again")
				return errLostAck
			}
			return err
		}
	}
}

// handler is a consumer's business logic.
func (d *demo) handler(cs *consumer) subscriber.Handler {
	return func(_ context.Context, m *message.Message) error {
		var ev orderEvent
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			return message.PermanentError(fmt.Errorf("malformed event: %w", err))
		}
		var did string
		switch cs.name {
		case "payment":
			if ev.Type == "OrderPlaced" {
				did = "authorised " + euros(ev.Cents)
			} else {
				did = "captured " + euros(ev.Cents)
			}
		case "inventory":
			if ev.Type == "OrderPlaced" {
				if !inventoryCatalogue[ev.SKU] {
					return fmt.Errorf("%s is not in the inventory catalogue", ev.SKU)
				}
				did = fmt.Sprintf("reserved %d x %s", ev.Qty, ev.SKU)
			} else {
				did = "released for picking"
			}
		case "notification":
			if ev.Type == "OrderPlaced" {
				did = "emailed the order confirmation"
			} else {
				did = "emailed the receipt"
			}
		case "analytics":
			did = "recorded " + euros(ev.Cents)
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if cs.name == "analytics" {
			if ev.Type == "OrderPlaced" {
				cs.placed, cs.placedCents = cs.placed+1, cs.placedCents+ev.Cents
			} else {
				cs.paid, cs.paidCents = cs.paid+1, cs.paidCents+ev.Cents
			}
		}
		cs.handled[m.ID] = true
		cs.seqs[m.Key] = append(cs.seqs[m.Key], seqOf(m))
		cs.note(m, "%s", did)
		cs.check()
		return nil
	}
}

// printConsumer prints a consumer's narration, order by order: within an
// order, lines are in the order things happened.
func (d *demo) printConsumer(cs *consumer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "\n%s\n", cs.name)
	keys := make([]string, 0, len(cs.lines))
	for k := range cs.lines {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, l := range cs.lines[k] {
			fmt.Fprintln(d.out, l)
		}
	}
}

// readDeadLetters reads the dead-letter topic with the polybus-dlq group,
// as polybus dlq ls does, and prints what it holds.
func (d *demo) readDeadLetters(ctx context.Context) ([]*message.Message, error) {
	want := 0
	for _, cs := range d.cons {
		want += len(cs.deadLettered)
	}
	var dead []*message.Message
	if want == 0 {
		return nil, nil
	}
	err := scanDLQ(ctx, d.c, scanOptions{topic: d.dlqTopic, group: defaultDLQGroup, idle: 5 * time.Second, max: want},
		func(_ context.Context, res scanResult) ([]bool, error) {
			dead = res.msgs
			return nil, nil
		})
	if err != nil {
		return nil, fmt.Errorf("demo: reading %s: %w", d.dlqTopic, err)
	}
	fmt.Fprintf(d.out, "\ndead-letter topic %s: %d pending for group %s\n", d.dlqTopic, len(dead), defaultDLQGroup)
	for _, m := range dead {
		md := m.Metadata
		fmt.Fprintf(d.out, "%s  from group %s, reason %s, %s attempts\n", label(m),
			md.Get(message.KeyDLQGroup), md.Get(message.KeyDLQReason), md.Get(message.KeyDLQAttempts))
		fmt.Fprintf(d.out, "%s  error: %s\n", strings.Repeat(" ", len(label(m))), firstLine(md.Get(message.KeyDLQError), 100))
	}
	return dead, nil
}

// summary prints the figures and checks that every consumer handled every
// order's events in sequence.
func (d *demo) summary(dead []*message.Message) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var handled []string
	retried, deadLettered, deduplicated, reordered := 0, 0, 0, 0
	var retriedIn, dedupedIn []string
	reorderedWhat := map[string]bool{}
	var disorder []string
	for _, name := range demoConsumers {
		cs := d.cons[name]
		handled = append(handled, fmt.Sprintf("%s %d", name, len(cs.handled)))
		retried += cs.retries
		if cs.retries > 0 {
			retriedIn = append(retriedIn, name)
		}
		deadLettered += len(cs.deadLettered)
		deduplicated += cs.deduplicated
		if cs.deduplicated > 0 {
			dedupedIn = append(dedupedIn, name)
		}
		reordered += len(cs.reordered)
		for _, lines := range cs.lines {
			for _, l := range lines {
				if strings.Contains(l, "ordering hands it back") {
					reorderedWhat[strings.Join(strings.Fields(l)[:2], " ")] = true
				}
			}
		}
		for key, seqs := range cs.seqs {
			for i, s := range seqs {
				if s != i+1 && !(key == "ord-1004" && name == "inventory") {
					disorder = append(disorder, fmt.Sprintf("%s handled %s out of sequence: %v", name, key, seqs))
					break
				}
			}
		}
	}
	what := make([]string, 0, len(reorderedWhat))
	for w := range reorderedWhat {
		what = append(what, w)
	}
	sort.Strings(what)
	placed, paid := d.cons["analytics"], d.cons["analytics"]

	fmt.Fprintf(d.out, "\nsummary\n")
	orders := map[string]bool{}
	for _, ev := range demoEvents {
		orders[ev.Order] = true
	}
	fmt.Fprintf(d.out, "  published      %d events for %d orders\n", len(demoEvents), len(orders))
	fmt.Fprintf(d.out, "  handled        %s\n", strings.Join(handled, ", "))
	fmt.Fprintf(d.out, "  retried        %d  (%s)\n", retried, orNone(retriedIn))
	fmt.Fprintf(d.out, "  dead-lettered  %d  (to %s; %d there now)\n", deadLettered, d.dlqTopic, len(dead))
	fmt.Fprintf(d.out, "  deduplicated   %d  (%s)\n", deduplicated, orNone(dedupedIn))
	fmt.Fprintf(d.out, "  reordered      %d  (%s, in each consumer)\n", reordered, orNone(what))
	fmt.Fprintf(d.out, "  analytics      %d orders placed (%s), %d paid (%s)\n", placed.placed, euros(placed.placedCents), paid.paid, euros(paid.paidCents))
	if len(disorder) > 0 {
		sort.Strings(disorder)
		return fmt.Errorf("demo: ordering failed: %s", strings.Join(disorder, "; "))
	}
	fmt.Fprintf(d.out, "  in sequence    every consumer handled every order's events in order\n")
	return nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
