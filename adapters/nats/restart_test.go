package nats_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TestServerRestart restarts the server (same port, same store) while a
// publisher and a subscriber keep going. Every message whose Publish
// returned nil must be delivered at least once; a Publish during the
// restart must fail promptly, with Unavailable or its context's deadline,
// never hang.
func TestServerRestart(t *testing.T) {
	ns := startNATS(t)
	query := "reconnect_wait=50ms&ack_wait=2s"
	pub := open(t, ns.url(query))
	sub := open(t, ns.url(query))
	topic := unique("restart")

	var mu sync.Mutex
	delivered := map[string]int{}
	subscribe(t, sub, topic, func(_ context.Context, m *message.Message) error {
		mu.Lock()
		delivered[m.ID]++
		mu.Unlock()
		return nil
	}, subscriber.Group("survivor"))

	var accepted []string
	failures := map[message.Code]int{}
	publishFor := func(d time.Duration) {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			m := message.New([]byte(fmt.Sprint(len(accepted))))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			start := time.Now()
			err := pub.Publisher().Publish(ctx, topic, m)
			cancel()
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("a publish took %s with a 2s context", took)
			}
			switch {
			case err == nil:
				accepted = append(accepted, m.ID)
			case errors.Is(err, context.DeadlineExceeded):
				failures[message.Unavailable]++
			case message.CodeOf(err) == message.Unavailable:
				failures[message.Unavailable]++
				time.Sleep(20 * time.Millisecond) // a client's pause before retrying
			default:
				t.Fatalf("publish during restart: %v (code %v)", err, message.CodeOf(err))
			}
		}
	}
	publishFor(500 * time.Millisecond)
	ns.restart()
	publishFor(1500 * time.Millisecond)

	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for _, id := range accepted {
			if delivered[id] == 0 {
				missing++
			}
		}
		dups := 0
		for _, n := range delivered {
			dups += n - 1
		}
		mu.Unlock()
		if missing == 0 {
			t.Logf("published %d, failed %d during the restart, redelivered %d", len(accepted), failures[message.Unavailable], dups)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d accepted messages never delivered", missing, len(accepted))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMemoryStreamRecreated restarts a server whose streams are in memory,
// so the topic's stream and consumer are gone afterwards: the next Publish
// creates the stream again and the running subscriber re-creates its
// consumer and receives what follows.
func TestMemoryStreamRecreated(t *testing.T) {
	ns := startNATS(t)
	c := open(t, ns.url("reconnect_wait=50ms&storage=memory"))
	if c.Capabilities().Persistent {
		t.Fatal("memory storage declared persistent")
	}
	topic := unique("mem")
	s := newSink()
	subscribe(t, c, topic, s.handle, subscriber.Concurrency(1))
	publish(t, c, topic, message.New([]byte("before")))
	s.waitCount(t, 1)
	ns.restart()

	after := message.New([]byte("after"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.Publisher().Publish(ctx, topic, after)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := s.waitFor(t, 30*time.Second, "the message published after the restart", func(m []*message.Message) bool {
		for _, x := range m {
			if x.ID == after.ID {
				return true
			}
		}
		return false
	})
	if got[0].ID == after.ID {
		t.Fatalf("lost the message before the restart")
	}
}
