package schema_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	_ "github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/eventstore/sqlstore"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/middleware"
	"github.com/polybus/polybus/schema"
	"github.com/polybus/polybus/subscriber"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The OrderPlaced versions of these tests: v2 adds currency (default
// USD), v3 renames total to amount, a break that only an upcaster makes
// harmless.
const (
	orderV1 = `{"type": "object", "additionalProperties": false, "required": ["id", "total"],
		"properties": {"id": {"type": "string"}, "total": {"type": "number"}}}`
	orderV2 = `{"type": "object", "additionalProperties": false, "required": ["id", "total"],
		"properties": {"id": {"type": "string"}, "total": {"type": "number"}, "currency": {"type": "string", "default": "USD"}}}`
	orderV3 = `{"type": "object", "additionalProperties": false, "required": ["id", "amount", "currency"],
		"properties": {"id": {"type": "string"}, "amount": {"type": "number"}, "currency": {"type": "string"}}}`
)

// OrderPlaced is the newest version's Go type.
type OrderPlaced struct {
	ID       string  `json:"id"`
	Amount   float64 `json:"amount"`
	Currency string  `json:"currency"`
}

// registry holds OrderPlaced v1 and v2 (v3 is added with NONE: it breaks).
func registry(t testing.TB, versions int) *schema.Registry {
	t.Helper()
	r := &schema.Registry{}
	for i, doc := range []string{orderV1, orderV2, orderV3}[:versions] {
		if i == 2 {
			r.SetMode("OrderPlaced", schema.None)
		}
		if _, err := r.Register("OrderPlaced", []byte(doc)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func upcasters(t testing.TB) *schema.Upcasters {
	t.Helper()
	u := &schema.Upcasters{}
	if err := u.Register("OrderPlaced", 1, func(ev map[string]any) error {
		if _, ok := ev["currency"]; !ok {
			ev["currency"] = "USD"
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := u.Register("OrderPlaced", 2, func(ev map[string]any) error {
		ev["amount"] = ev["total"]
		delete(ev, "total")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return u
}

func event(id string, version int, payload string) *message.Message {
	m := &message.Message{ID: id, Key: "ord-" + id, Payload: []byte(payload)}
	if version > 0 {
		s := &schema.Schema{Type: "OrderPlaced", Version: version}
		s.Stamp(m)
	}
	return m
}

type collector struct {
	mu   sync.Mutex
	msgs map[string]*message.Message
}

func (c *collector) handle(_ context.Context, m *message.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.msgs == nil {
		c.msgs = map[string]*message.Message{}
	}
	c.msgs[m.ID] = m
	return nil
}

func (c *collector) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id := range c.msgs {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func (c *collector) get(id string) *message.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.msgs[id]
}

// TestConsume runs DLQ → ValidateMiddleware → UpcastMiddleware → handler
// on mem://: valid v1 and v2 events reach the handler as v3, invalid
// ones are dead-lettered with the reason.
func TestConsume(t *testing.T) {
	ctx := context.Background()
	c := pbtest.Open(t, "mem://")
	dlq, err := middleware.DLQ(middleware.DLQConfig{Publisher: c.Publisher()})
	if err != nil {
		t.Fatal(err)
	}
	var handled, dead collector
	h := subscriber.Chain(dlq, schema.ValidateMiddleware(registry(t, 3)), schema.UpcastMiddleware(upcasters(t)))(handled.handle)
	stop := pbtest.Consume(t, c, "orders", h, subscriber.Group("billing"))
	stopDLQ := pbtest.Consume(t, c, "orders.dlq", dead.handle, subscriber.Group("ops"))
	msgs := []*message.Message{
		event("a", 1, `{"id": "a", "total": 10}`),
		event("b", 2, `{"id": "b", "total": 20, "currency": "EUR"}`),
		{ID: "c", Payload: []byte(`{"id": "c", "total": 30}`), Metadata: message.Metadata{message.KeyType: "OrderPlaced"}}, // no version: v1
		event("bad-type", 2, `{"id": "x", "total": "40"}`),
		event("bad-field", 1, `{"id": "y", "total": 1, "currency": "USD"}`),
		event("bad-json", 1, `{"id": `),
		event("v3", 3, `{"id": "d", "amount": 5, "currency": "GBP"}`),
		{ID: "untyped", Payload: []byte("not JSON, no type")},
	}
	msgs[4].Metadata[message.KeySchemaVersion] = "1"
	bad := event("bad-version", 2, `{"id": "z", "total": 1}`)
	bad.Metadata[message.KeySchemaVersion] = "two"
	msgs = append(msgs, bad)
	if err := c.Publisher().Publish(ctx, "orders", msgs...); err != nil {
		t.Fatal(err)
	}
	pbtest.WaitFor(t, "every event handled or dead-lettered", func() bool { return len(handled.ids()) == 5 && len(dead.ids()) == 4 })
	stop()
	stopDLQ()
	if got := handled.ids(); !slices.Equal(got, []string{"a", "b", "c", "untyped", "v3"}) {
		t.Errorf("handled %v", got)
	}
	for id, want := range map[string]OrderPlaced{"a": {"a", 10, "USD"}, "b": {"b", 20, "EUR"}, "c": {"c", 30, "USD"}, "v3": {"d", 5, "GBP"}} {
		m := handled.get(id)
		var got OrderPlaced
		if err := json.Unmarshal(m.Payload, &got); err != nil || got != want || m.Metadata[message.KeySchemaVersion] != "3" ||
			m.Metadata[message.KeyDataSchema] != "polybus:schemas/OrderPlaced/v3.json" || m.Attempt() != 1 {
			t.Errorf("%s: handled %s %v (attempt %d, %v), want %+v at v3", id, m.Payload, m.Metadata, m.Attempt(), err, want)
		}
	}
	if got := dead.ids(); !slices.Equal(got, []string{"bad-field", "bad-json", "bad-type", "bad-version"}) {
		t.Errorf("dead-lettered %v", got)
	}
	for id, reason := range map[string]string{
		"bad-type":    "OrderPlaced v2: #/total: got string, want number",
		"bad-field":   "OrderPlaced v1: #: additional properties 'currency' not allowed",
		"bad-json":    "OrderPlaced v1: payload is not JSON",
		"bad-version": `polybus-schema-version "two" is not a version`,
	} {
		m := dead.get(id)
		if m.Metadata[message.KeyDLQReason] != middleware.ReasonPermanent || !strings.Contains(m.Metadata[message.KeyDLQError], reason) {
			t.Errorf("%s: dead letter reason %q, error %q, want %q", id, m.Metadata[message.KeyDLQReason], m.Metadata[message.KeyDLQError], reason)
		}
		if string(m.Payload) != string(msgs[slices.IndexFunc(msgs, func(x *message.Message) bool { return x.ID == id })].Payload) {
			t.Errorf("%s: dead letter payload %s changed", id, m.Payload)
		}
	}
}

// recorder is a publisher that records what it is given.
type recorder struct {
	calls int
	msgs  []*message.Message
}

func (r *recorder) Publish(_ context.Context, _ string, msgs ...*message.Message) error {
	r.calls++
	r.msgs = append(r.msgs, msgs...)
	return nil
}

func TestPublisher(t *testing.T) {
	ctx := context.Background()
	var next recorder
	p := schema.NewPublisher(&next, registry(t, 2))
	good := event("good", 2, `{"id": "good", "total": 1}`)
	err := p.Publish(ctx, "orders", good, event("bad", 1, `{"id": "bad"}`))
	if !errors.Is(err, message.ErrInvalidArgument) || next.calls != 0 ||
		!strings.Contains(err.Error(), `message 1 (id "bad") to "orders", nothing sent`) || !strings.Contains(err.Error(), "OrderPlaced v1: #: missing property 'total'") {
		t.Fatalf("invalid publish: %v, %d calls", err, next.calls)
	}
	// Newer than the registry knows: validated against the newest (v2).
	if err := p.Publish(ctx, "orders", good, event("future", 7, `{"id": "f", "total": 2}`), event("untyped", 0, "x")); err != nil || next.calls != 1 || len(next.msgs) != 3 {
		t.Fatalf("valid publish: %v, %d calls", err, next.calls)
	}
	// On a real broker.
	c := pbtest.Open(t, "mem://")
	p = schema.NewPublisher(c.Publisher(), registry(t, 2))
	if err := p.Publish(ctx, "orders", event("x", 2, `{"id": 1, "total": 1}`)); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("invalid publish on mem://: %v", err)
	}
	if err := p.Publish(ctx, "orders", event("y", 2, `{"id": "y", "total": 1}`)); err != nil {
		t.Errorf("valid publish on mem://: %v", err)
	}
}

// account is an aggregate of OrderPlaced events at the newest version.
type account struct {
	orders []OrderPlaced
}

func (a *account) Apply(e *eventstore.Event) error {
	o, ok := e.Data.(OrderPlaced)
	if !ok {
		return errors.New("not an OrderPlaced")
	}
	a.orders = append(a.orders, o)
	return nil
}

// TestReplay loads an aggregate from a SQLite event store holding v1, v2
// and v3 OrderPlaced events through the upcaster chain.
func TestReplay(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "events.db")+"?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	drv, err := sqlstore.New(db, sqlstore.Config{Dialect: sqlstore.SQLite})
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	reg := &eventstore.Registry{}
	if err := eventstore.Register[OrderPlaced](reg, "OrderPlaced"); err != nil {
		t.Fatal(err)
	}
	store, err := eventstore.New(drv, eventstore.Options{Registry: reg, Upcaster: upcasters(t)})
	if err != nil {
		t.Fatal(err)
	}
	v := func(n string) message.Metadata { return message.Metadata{message.KeySchemaVersion: n} }
	old := []*eventstore.Event{
		{Type: "OrderPlaced", Raw: []byte(`{"id":"o1","total":10}`), Metadata: v("1")},
		{Type: "OrderPlaced", Raw: []byte(`{"id":"o2","total":20}`)}, // written before versions: v1
		{Type: "OrderPlaced", Raw: []byte(`{"id":"o3","total":30,"currency":"EUR"}`), Metadata: v("2")},
	}
	if _, err := store.Append(ctx, "account-1", eventstore.NoStream, old...); err != nil {
		t.Fatal(err)
	}
	// Appended from the Go type: stamped v3 (VersionStamper).
	if _, err := store.Append(ctx, "account-1", eventstore.Exactly(3), &eventstore.Event{Data: OrderPlaced{"o4", 40, "GBP"}}); err != nil {
		t.Fatal(err)
	}
	var a account
	version, err := store.Load(ctx, "account-1", &a, eventstore.LoadOptions{})
	if err != nil || version != 4 {
		t.Fatalf("load: version %d, %v", version, err)
	}
	want := []OrderPlaced{{"o1", 10, "USD"}, {"o2", 20, "USD"}, {"o3", 30, "EUR"}, {"o4", 40, "GBP"}}
	if !slices.Equal(a.orders, want) {
		t.Errorf("loaded %+v, want %+v", a.orders, want)
	}
	evs, err := store.ReadStream(ctx, "account-1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Metadata[message.KeySchemaVersion] != "3" {
			t.Errorf("event %d read at version %q", e.Version, e.Metadata[message.KeySchemaVersion])
		}
	}
	// What is stored is never rewritten.
	plain, _ := eventstore.New(drv, eventstore.Options{})
	evs, err = plain.ReadStream(ctx, "account-1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, string(e.Raw)+" v"+e.Metadata[message.KeySchemaVersion])
	}
	if w := []string{`{"id":"o1","total":10} v1`, `{"id":"o2","total":20} v`, `{"id":"o3","total":30,"currency":"EUR"} v2`, `{"id":"o4","amount":40,"currency":"GBP"} v3`}; !slices.Equal(got, w) {
		t.Errorf("stored %q, want %q", got, w)
	}
	// A step that fails makes the read fail, with the event named.
	bad := &schema.Upcasters{}
	_ = bad.Register("OrderPlaced", 1, func(map[string]any) error { return errors.New("no currency for this market") })
	failing, _ := eventstore.New(drv, eventstore.Options{Registry: reg, Upcaster: bad})
	if _, err := failing.Load(ctx, "account-1", &account{}, eventstore.LoadOptions{}); !message.IsPermanent(err) || !strings.Contains(err.Error(), "no currency for this market") {
		t.Errorf("failing upcast: %v", err)
	}
}

func BenchmarkValidate(b *testing.B) {
	s, _ := registry(b, 2).Latest("OrderPlaced")
	payload := []byte(`{"id": "ord-123", "total": 42.5, "currency": "EUR"}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Validate(payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUpcast(b *testing.B) {
	u := upcasters(b)
	for _, bc := range []struct {
		name    string
		version string
		payload string
	}{
		{"v1-to-v3", "1", `{"id": "ord-123", "total": 42.5}`},
		{"v2-to-v3", "2", `{"id": "ord-123", "total": 42.5, "currency": "EUR"}`},
		{"v3-unchanged", "3", `{"id": "ord-123", "amount": 42.5, "currency": "EUR"}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			md := message.Metadata{message.KeyType: "OrderPlaced", message.KeySchemaVersion: bc.version}
			payload := []byte(bc.payload)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := u.Upcast("OrderPlaced", md, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestBusValidate: bus.Options.Validate with Registry.ValidateMessage
// refuses a typed publish whose payload its version's schema rejects.
func TestBusValidate(t *testing.T) {
	ctx := context.Background()
	c := pbtest.Open(t, "mem://")
	b, err := bus.New(c, bus.Options{Validate: registry(t, 3).ValidateMessage})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	ev := OrderPlaced{ID: "o1", Amount: 5, Currency: "EUR"}
	// No version: v1, which has total, not amount.
	err = bus.Publish(ctx, b, ev)
	if !errors.Is(err, message.ErrInvalidArgument) || !strings.Contains(err.Error(), "event OrderPlaced, nothing sent") || !strings.Contains(err.Error(), "missing property 'total'") {
		t.Errorf("publish of an invalid v1: %v", err)
	}
	if err := bus.Publish(ctx, b, ev, bus.WithHeader(message.KeySchemaVersion, "3")); err != nil {
		t.Errorf("publish of a valid v3: %v", err)
	}
}
