package bus_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
)

type OrderPlaced struct {
	OrderID string
	Amount  int
	SKU     string
}

func (o OrderPlaced) MessageKey() string { return o.OrderID }

type ShipOrder struct{ OrderID string }

type GetTotal struct{ OrderID string }

type Total struct{ Amount int }

// seen collects what handlers got, per handler.
type seen struct {
	mu  sync.Mutex
	got map[string][]string
}

func (s *seen) add(who, what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[string][]string{}
	}
	s.got[who] = append(s.got[who], what)
}

func (s *seen) of(who string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(slices.Values(s.got[who]))
}

// TestEventThreeGroups: one event bus, three handler groups; each group
// handles every event exactly once, with the type in metadata.
func TestEventThreeGroups(t *testing.T) {
	brokers(t, func(t *testing.T, c *polybus.Client) {
		ctx := context.Background()
		p := prefix()
		var s seen
		sub := newBus(t, c, bus.Options{Prefix: p})
		for _, g := range []string{"billing", "shipping", "audit"} {
			if err := bus.Subscribe(sub, g, func(ctx context.Context, e OrderPlaced) error {
				m, _ := bus.MessageFrom(ctx)
				s.add(g, e.OrderID+"/"+m.Metadata.Get(bus.KeyType)+"/"+m.Key)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		if err := bus.Subscribe(sub, "audit", func(context.Context, OrderPlaced) error { return nil }); !errors.Is(err, message.ErrInvalidArgument) {
			t.Fatalf("second handler in one group: %v, want InvalidArgument", err)
		}
		if err := sub.Start(ctx); err != nil {
			t.Fatal(err)
		}
		pub := newBus(t, c, bus.Options{Prefix: p})
		var want []string
		for _, id := range []string{"o1", "o2", "o3"} {
			if err := bus.Publish(ctx, pub, OrderPlaced{OrderID: id, Amount: 5}); err != nil {
				t.Fatal(err)
			}
			want = append(want, id+"/OrderPlaced/"+id)
		}
		for _, g := range []string{"billing", "shipping", "audit"} {
			pbtest.WaitFor(t, g+" to get 3 events", func() bool { return len(s.of(g)) >= 3 })
		}
		// Anything more would be a duplicate: give it a moment to show.
		time.Sleep(100 * time.Millisecond)
		for _, g := range []string{"billing", "shipping", "audit"} {
			if got := s.of(g); !slices.Equal(got, want) {
				t.Errorf("%s got %q, want %q", g, got, want)
			}
		}
	})
}

// TestCommandOneHandler: a command goes to one service; a second handler
// in the service is refused; a second service for the type is refused by
// the registry at Start; a command that no service registered is
// NotFound.
func TestCommandOneHandler(t *testing.T) {
	brokers(t, func(t *testing.T, c *polybus.Client) {
		ctx := context.Background()
		p := prefix()
		reg := &bus.MemoryRegistry{}
		var s seen
		svc := newBus(t, c, bus.Options{Prefix: p, Service: "shipping", Registry: reg})
		if err := bus.HandleCommand(svc, func(ctx context.Context, cmd ShipOrder) error {
			s.add("ship", cmd.OrderID)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		err := bus.HandleCommand(svc, func(context.Context, ShipOrder) error { return nil })
		if !errors.Is(err, message.ErrInvalidArgument) {
			t.Fatalf("second handler: %v, want InvalidArgument", err)
		}
		sender := newBus(t, c, bus.Options{Prefix: p, Registry: reg})
		err = bus.Send(ctx, sender, ShipOrder{OrderID: "o1"})
		if !errors.Is(err, message.ErrNotFound) {
			t.Fatalf("Send before any service registered: %v, want NotFound", err)
		}
		if err := svc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		other := newBus(t, c, bus.Options{Prefix: p, Service: "warehouse", Registry: reg})
		if err := bus.HandleCommand(other, func(context.Context, ShipOrder) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := other.Start(ctx); !errors.Is(err, message.ErrConflict) {
			t.Fatalf("second service's Start: %v, want Conflict", err)
		}
		for _, id := range []string{"o1", "o2"} {
			if err := bus.Send(ctx, sender, ShipOrder{OrderID: id}); err != nil {
				t.Fatal(err)
			}
		}
		pbtest.WaitFor(t, "two commands", func() bool { return len(s.of("ship")) >= 2 })
		time.Sleep(100 * time.Millisecond)
		if got := s.of("ship"); !slices.Equal(got, []string{"o1", "o2"}) {
			t.Errorf("handled %q", got)
		}
	})
}

// TestQuery: Ask gets the handler's reply; many concurrent Asks each get
// their own; a handler error comes back with its code; a query nobody
// answers times out with Unavailable, and no goroutine is left per call.
func TestQuery(t *testing.T) {
	brokers(t, func(t *testing.T, c *polybus.Client) {
		ctx := context.Background()
		p := prefix()
		svc := newBus(t, c, bus.Options{Prefix: p, Service: "orders"})
		if err := bus.HandleQuery(svc, func(ctx context.Context, q GetTotal) (Total, error) {
			if q.OrderID == "missing" {
				return Total{}, message.Errorf(message.NotFound, "orders", "no order %s", q.OrderID)
			}
			return Total{Amount: len(q.OrderID)}, nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := svc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		client := newBus(t, c, bus.Options{Prefix: p, QueryTimeout: 20 * time.Second})
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := string(make([]byte, i+1))
				r, err := bus.Ask[GetTotal, Total](ctx, client, GetTotal{OrderID: id})
				if err == nil && r.Amount != i+1 {
					err = errors.New("wrong reply")
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		_, err := bus.Ask[GetTotal, Total](ctx, client, GetTotal{OrderID: "missing"})
		if !errors.Is(err, message.ErrNotFound) {
			t.Fatalf("handler error: %v, want NotFound", err)
		}

		type Unanswered struct{ X int }
		quick := newBus(t, c, bus.Options{Prefix: p, QueryTimeout: 300 * time.Millisecond})
		// The first Ask starts the reply subscription; once it has
		// answered, the timeout is the query's alone.
		_, _ = bus.Ask[GetTotal, Total](ctx, quick, GetTotal{OrderID: "warm"})
		start := time.Now()
		_, err = bus.Ask[Unanswered, Total](ctx, quick, Unanswered{1})
		if !errors.Is(err, message.ErrUnavailable) {
			t.Fatalf("unanswered query: %v, want Unavailable", err)
		}
		if took := time.Since(start); took < 300*time.Millisecond || took > 5*time.Second {
			t.Errorf("timed out after %s, want about 300ms", took)
		}
		// Twenty more unanswered queries at once leave nothing behind:
		// no goroutine per call outlives its Ask.
		before := runtime.NumGoroutine()
		var tw sync.WaitGroup
		for i := range 20 {
			tw.Add(1)
			go func() {
				defer tw.Done()
				if _, err := bus.Ask[Unanswered, Total](ctx, quick, Unanswered{i}); !errors.Is(err, message.ErrUnavailable) {
					t.Errorf("unanswered query %d: %v", i, err)
				}
			}()
		}
		tw.Wait()
		pbtest.WaitFor(t, "the goroutines of 20 timed-out Asks to end", func() bool { return runtime.NumGoroutine() <= before })
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := bus.Ask[Unanswered, Total](cctx, quick, Unanswered{2}); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled ctx: %v, want context.Canceled", err)
		}
	})
}

// TestCorrelationAndCausation: an event published by a handler carries
// the flow's correlation ID and the causation chain of everything before
// it.
func TestCorrelationAndCausation(t *testing.T) {
	ctx := context.Background()
	c := open(t, "mem://")
	b := newBus(t, c, bus.Options{Prefix: prefix(), Service: "svc"})
	type Second struct{ N int }
	type Third struct{ N int }
	got := make(chan *message.Message, 1)
	_ = bus.Subscribe(b, "a", func(ctx context.Context, e OrderPlaced) error { return bus.Publish(ctx, b, Second{1}) })
	_ = bus.Subscribe(b, "b", func(ctx context.Context, e Second) error { return bus.Publish(ctx, b, Third{2}) })
	_ = bus.Subscribe(b, "c", func(ctx context.Context, e Third) error {
		m, _ := bus.MessageFrom(ctx)
		if bus.CorrelationID(ctx) != "flow-1" {
			t.Errorf("CorrelationID(ctx) = %q", bus.CorrelationID(ctx))
		}
		got <- m
		return nil
	})
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bus.Publish(ctx, b, OrderPlaced{OrderID: "o1"}, bus.WithID("first"), bus.WithHeader(message.KeyCorrelationID, "flow-1")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		chain := bus.CausationChain(m)
		if len(chain) != 2 || chain[0] != "first" || chain[1] != m.Metadata.Get(message.KeyCausationID) {
			t.Errorf("chain %q, causation %q", chain, m.Metadata.Get(message.KeyCausationID))
		}
		if m.Metadata.Get(message.KeyCorrelationID) != "flow-1" {
			t.Errorf("correlation %q", m.Metadata.Get(message.KeyCorrelationID))
		}
	case <-time.After(pbtest.Wait):
		t.Fatal("no Third event")
	}
}

// TestBadInput: unusable types and options are InvalidArgument.
func TestBadInput(t *testing.T) {
	c := open(t, "mem://")
	if _, err := bus.New(c, bus.Options{Service: "bad name"}); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("bad service: %v", err)
	}
	if _, err := bus.New(nil, bus.Options{}); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("nil client: %v", err)
	}
	b := newBus(t, c, bus.Options{})
	if err := bus.Publish(context.Background(), b, map[string]int{}); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("unnamed type: %v", err)
	}
	if err := bus.HandleCommand(b, func(context.Context, ShipOrder) error { return nil }); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("command handler without a service: %v", err)
	}
	if err := bus.Publish(context.Background(), b, OrderPlaced{}, bus.WithHeader("", "x")); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("empty metadata key: %v", err)
	}
}
