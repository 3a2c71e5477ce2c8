package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TestBrokerRestart restarts the shared broker (`scripts/brokers restart
// rabbitmq`, only with POLYBUS_RABBITMQ_RESTART=1) while a publisher and a
// subscriber keep going. Every message whose Publish returned nil must be
// delivered; a Publish during the restart fails promptly with Unavailable
// (or its context's deadline), never hangs; the subscription resumes by
// itself. It logs published, failed and duplicate counts.
func TestBrokerRestart(t *testing.T) {
	u := brokertest.URL(t, "rabbitmq")
	script := brokersScript()
	if script == "" || os.Getenv("POLYBUS_RABBITMQ_RESTART") != "1" {
		t.Skip("set POLYBUS_RABBITMQ_RESTART=1 to restart the shared broker")
	}
	u = withQuery(u, "reconnect_wait=500ms")
	pub, sub := open(t, u), open(t, u)
	topic, group := unique("restart"), unique("g")

	declare(t, pub, topic, group)
	var mu sync.Mutex
	delivered := map[string]int{}
	pbtest.Consume(t, sub, topic, func(_ context.Context, m *message.Message) error {
		mu.Lock()
		delivered[m.ID]++
		mu.Unlock()
		return nil
	}, subscriber.Group(group))

	var accepted []string
	failures := 0
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m := message.New([]byte(fmt.Sprint(i)))
			m.Key = fmt.Sprintf("k%d", i%16)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			start := time.Now()
			err := pub.Publisher().Publish(ctx, topic, m)
			cancel()
			if took := time.Since(start); took > 8*time.Second {
				t.Errorf("a publish took %s with a 3s context", took)
			}
			switch {
			case err == nil:
				mu.Lock()
				accepted = append(accepted, m.ID)
				mu.Unlock()
			case errors.Is(err, context.DeadlineExceeded), message.CodeOf(err) == message.Unavailable:
				failures++
				time.Sleep(50 * time.Millisecond) // a client's pause before retrying
			default:
				t.Errorf("publish during restart: %v (code %v)", err, message.CodeOf(err))
				return
			}
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(accepted) }
	pbtest.WaitFor(t, "200 messages before the restart", func() bool { return count() >= 200 })
	start := time.Now()
	out, err := exec.Command(script, "restart", "rabbitmq").CombinedOutput()
	if err != nil {
		t.Fatalf("restart: %v\n%s", err, out)
	}
	restart := time.Since(start)
	before := count()
	pbtest.WaitFor(t, "200 messages after the restart", func() bool { return count() >= before+200 })
	close(stop)
	<-done

	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		missing, dups := 0, 0
		for _, id := range accepted {
			if delivered[id] == 0 {
				missing++
			}
		}
		for _, n := range delivered {
			dups += n - 1
		}
		n := len(accepted)
		mu.Unlock()
		if missing == 0 {
			t.Logf("restart took %s; published %d, failed %d publishes during the restart, lost 0, duplicates %d", restart, n, failures, dups)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d confirmed messages never delivered", missing, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
