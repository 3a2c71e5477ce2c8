package middleware

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// publishSequenced stamps per messages for each of keys keys and publishes
// them to topic in one shuffled batch, so that the broker itself holds them
// out of order.
func publishSequenced(t *testing.T, bus *chaosBus, topic string, keys, per int, rnd *rand.Rand) {
	t.Helper()
	seq := NewSequencer(nil)
	var msgs []*message.Message
	for s := 0; s < per; s++ {
		for k := 0; k < keys; k++ {
			msgs = append(msgs, message.New([]byte("x")))
			msgs[len(msgs)-1].Key = fmt.Sprint("key-", k)
		}
	}
	if err := seq.Stamp(context.Background(), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	rnd.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	if err := bus.pub.Publish(context.Background(), topic, msgs...); err != nil {
		t.Fatal(err)
	}
}

// runSubscribe runs Subscribe in a goroutine and returns a function that
// stops it and waits for it to return.
func runSubscribe(t *testing.T, s *subscriber.Subscriber, topic string, h subscriber.Handler, opts ...subscriber.Option) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, topic, h, opts...) }()
	return func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Subscribe: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Subscribe did not return after its context ended")
		}
	}
}

func oneToN(n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}

// TestOrderingNoDeadlockAtAnyConcurrency runs the buffer under a real
// Subscriber over a broker that shuffles and duplicates deliveries, with
// per-key serialisation on and off, at concurrency 1, 2, 8 and 64. Every
// key's handler calls must be exactly 1..n, never overlapping, before a
// deadline: a deadlock fails it.
func TestOrderingNoDeadlockAtAnyConcurrency(t *testing.T) {
	for _, unordered := range []bool{false, true} {
		for _, conc := range []int{1, 2, 8, 64} {
			t.Run(fmt.Sprintf("unordered=%v/concurrency=%d", unordered, conc), func(t *testing.T) {
				seed := rand.Uint64()
				t.Logf("seed %d", seed)
				rnd := rand.New(rand.NewPCG(seed, 2))
				bus := newChaosBus(t, seed, 0.2)
				const keys, per = 8, 25
				publishSequenced(t, bus, "orders", keys, per, rnd)

				o := mustOrdering(t, OrderingConfig{GapTimeout: time.Minute, RetryDelay: 2 * time.Millisecond})
				r := newOrdRecorder()
				opts := []subscriber.Option{subscriber.Concurrency(conc), subscriber.Use(o.wrap), subscriber.Group("g")}
				if unordered {
					opts = append(opts, subscriber.Unordered())
				}
				stop := runSubscribe(t, bus.subscriber(t), "orders", r.handle, opts...)
				ordWaitUntil(t, "every message handled", func() bool {
					for k := 0; k < keys; k++ {
						if r.n(fmt.Sprint("key-", k)) < per {
							return false
						}
					}
					return true
				})
				stop()
				for k := 0; k < keys; k++ {
					wantSeqs(t, r, fmt.Sprint("key-", k), oneToN(per)...)
				}
				if r.overlaps != 0 {
					t.Fatalf("%d overlapping calls of one key", r.overlaps)
				}
				if total, dups := bus.chaos.counts(); dups == 0 || total <= keys*per {
					t.Fatalf("the driver made %d deliveries, %d duplicates: no chaos", total, dups)
				}
				// Blocking is only allowed where the missing message can
				// still arrive: never under per-key serialisation or
				// with a single handler slot.
				if (!unordered || conc == 1) && o.peak != 0 {
					t.Fatalf("%d calls held (blocked) where none may be", o.peak)
				}
				if unordered && conc > 1 && o.peak > conc-1 {
					t.Fatalf("%d calls held at once with concurrency %d", o.peak, conc)
				}
			})
		}
	}
}

// TestOrderingStopsHoldingWhenTheSubscriberStops checks that a held call
// gives up when its Subscribe call stops, rather than keeping the drain
// waiting for a gap that cannot fill.
func TestOrderingStopsHoldingWhenTheSubscriberStops(t *testing.T) {
	bus := newChaosBus(t, 1, 0)
	msgs := []*message.Message{message.New(nil), message.New(nil)}
	for _, m := range msgs {
		m.Key = "k"
	}
	if err := NewSequencer(nil).Stamp(context.Background(), "t", msgs...); err != nil {
		t.Fatal(err)
	}
	// Only number 2 is published: it waits for 1 for good.
	if err := bus.pub.Publish(context.Background(), "t", msgs[1]); err != nil {
		t.Fatal(err)
	}
	o := mustOrdering(t, OrderingConfig{GapTimeout: time.Hour, RetryDelay: time.Minute})
	r := newOrdRecorder()
	stop := runSubscribe(t, bus.subscriber(t), "t", r.handle, subscriber.Unordered(), subscriber.Concurrency(4),
		subscriber.DrainTimeout(time.Hour), subscriber.Use(o.wrap))
	ordWaitUntil(t, "2 held", func() bool { return o.heldNow() == 1 })
	stop() // fails the test if Subscribe does not return
	wantSeqs(t, r, "k")
	if depth := bus.broker.Depth("t", subscriber.DefaultGroup); depth != 1 {
		t.Fatalf("broker holds %d messages for the group, want the nacked one", depth)
	}
}

// TestOrderingCompetingConsumers runs two subscribers of one group over the
// memory broker, through a driver that shuffles and duplicates, each with
// its own Dedupe and Ordering middleware over shared stores, as two
// processes sharing a database would. The handler calls of every key,
// across both subscribers, must be exactly 1..n, in order, never
// overlapping.
func TestOrderingCompetingConsumers(t *testing.T) {
	for _, unordered := range []bool{false, true} {
		t.Run(fmt.Sprintf("unordered=%v", unordered), func(t *testing.T) {
			seed := rand.Uint64()
			t.Logf("seed %d", seed)
			rnd := rand.New(rand.NewPCG(seed, 3))
			bus := newChaosBus(t, seed, 0.25)
			const keys, per = 6, 30
			publishSequenced(t, bus, "orders", keys, per, rnd)

			positions := NewMemoryOrderingStore()
			marks, err := NewMemoryDedupeStore(0)
			if err != nil {
				t.Fatal(err)
			}
			var dupsMu sync.Mutex
			dups := map[string]int{}
			onDup := func(_ context.Context, m *message.Message) {
				dupsMu.Lock()
				dups[m.ID]++
				dupsMu.Unlock()
			}
			r := newOrdRecorder()
			var stops []func()
			for i := 0; i < 2; i++ {
				dd, err := Dedupe(DedupeConfig{Store: marks, InFlightDelay: 2 * time.Millisecond, OnDuplicate: onDup})
				if err != nil {
					t.Fatal(err)
				}
				ord, err := Ordering(OrderingConfig{Store: positions, GapTimeout: time.Minute, RetryDelay: 2 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				opts := []subscriber.Option{subscriber.Group("billing"), subscriber.Concurrency(4), subscriber.Use(dd, ord)}
				if unordered {
					opts = append(opts, subscriber.Unordered())
				}
				stops = append(stops, runSubscribe(t, bus.subscriber(t), "orders", r.handle, opts...))
			}
			ordWaitUntil(t, "every message handled", func() bool {
				for k := 0; k < keys; k++ {
					if r.n(fmt.Sprint("key-", k)) < per {
						return false
					}
				}
				return true
			})
			ordWaitUntil(t, "the group to ack everything", func() bool { return bus.broker.Depth("orders", "billing") == 0 })
			for _, stop := range stops {
				stop()
			}
			for k := 0; k < keys; k++ {
				wantSeqs(t, r, fmt.Sprint("key-", k), oneToN(per)...)
			}
			if r.overlaps != 0 {
				t.Fatalf("%d overlapping calls of one key", r.overlaps)
			}
			total, invented := bus.chaos.counts()
			t.Logf("%d deliveries, %d invented duplicates, %d duplicates acked by Dedupe", total, invented, len(dups))
			if invented == 0 {
				t.Fatal("no duplicates were delivered")
			}
		})
	}
}

// TestOrderingAndSubscriberInfo checks what the buffer reads from the
// subscriber: the same Info for every call of one Subscribe call.
func TestOrderingAndSubscriberInfo(t *testing.T) {
	bus := newChaosBus(t, 1, 0)
	for i := 0; i < 3; i++ {
		if err := bus.pub.Publish(context.Background(), "t", message.New(nil)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var infos []*subscriber.Info
	h := func(ctx context.Context, m *message.Message) error {
		mu.Lock()
		infos = append(infos, subscriber.InfoFrom(ctx))
		mu.Unlock()
		return nil
	}
	stop := runSubscribe(t, bus.subscriber(t), "t", h, subscriber.Concurrency(3), subscriber.Unordered(), subscriber.Group("g"))
	ordWaitUntil(t, "3 calls", func() bool { mu.Lock(); defer mu.Unlock(); return len(infos) == 3 })
	stop()
	for _, in := range infos {
		if in == nil || in != infos[0] {
			t.Fatalf("infos %v: want one shared non-nil Info", infos)
		}
	}
	in := infos[0]
	if in.Topic != "t" || in.Group != "g" || in.Concurrency != 3 || in.Prefetch != 12 || in.Ordered || in.AckMode != subscriber.AtLeastOnce {
		t.Fatalf("info = %+v", *in)
	}
	select {
	case <-in.Stopping():
	default:
		t.Fatal("Stopping not closed after Subscribe returned")
	}
	if subscriber.InfoFrom(context.Background()) != nil {
		t.Fatal("InfoFrom of a plain context is not nil")
	}
}
