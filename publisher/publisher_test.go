package publisher_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gate is a driver for testing the portable layer's batching: each
// SendBatch records its batch and waits until released. It stands in for
// no broker; adapters are tested against real ones.
type gate struct {
	mu      sync.Mutex
	batches [][]string
	entered chan int
	release chan error
	fail    func(i int, m *message.Message) error
}

func newGate() *gate { return &gate{entered: make(chan int, 100), release: make(chan error, 100)} }

func (g *gate) SendBatch(ctx context.Context, topic string, msgs []*message.Message) error {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = string(m.Payload)
	}
	g.mu.Lock()
	g.batches = append(g.batches, ids)
	g.mu.Unlock()
	g.entered <- len(msgs)
	select {
	case err := <-g.release:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	if g.fail != nil {
		errs := make([]error, len(msgs))
		var any bool
		for i, m := range msgs {
			errs[i] = g.fail(i, m)
			any = any || errs[i] != nil
		}
		if any {
			return &publisher.BatchError{Errs: errs}
		}
	}
	return nil
}
func (g *gate) Capabilities() message.Capabilities {
	return message.Capabilities{Name: "gate", MaxMessageSize: 100}
}
func (g *gate) ErrorCode(error) message.Code { return message.Unavailable }
func (g *gate) Close() error                 { return nil }

func msg(s string) *message.Message { return &message.Message{Payload: []byte(s)} }

func TestConcurrentCallsAreBatchedInOrder(t *testing.T) {
	g := newGate()
	p, err := publisher.New(g, publisher.Options{MaxInflight: 1, MaxBatch: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	ctx := context.Background()
	errs := make(chan error, 11)
	go func() { errs <- p.Publish(ctx, "t", msg("first")) }()
	<-g.entered
	// While the first batch is with the driver, ten calls queue up, one
	// after another so their order is known.
	for i := range 10 {
		go func() { errs <- p.Publish(ctx, "t", msg(string(rune('a'+i))), msg(string(rune('A'+i)))) }()
		waitQueued(t, p, i+1)
	}
	g.release <- nil
	if n := <-g.entered; n != 20 {
		t.Fatalf("second batch has %d messages, want the 20 queued", n)
	}
	g.release <- nil
	for range 11 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	want := []string{"a", "A", "b", "B", "c", "C", "d", "D", "e", "E", "f", "F", "g", "G", "h", "H", "i", "I", "j", "J"}
	if got := g.batches[1]; len(got) != len(want) {
		t.Fatalf("batch %v", got)
	} else {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("batch %v, want %v", got, want)
			}
		}
	}
}

// waitQueued waits until n calls are waiting for the topic.
func waitQueued(t *testing.T, p *publisher.Publisher, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for publisher.Waiting(p, "t") != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", publisher.Waiting(p, "t"), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCancelledQueuedCallIsNeverSent(t *testing.T) {
	g := newGate()
	p, _ := publisher.New(g, publisher.Options{MaxInflight: 1})
	defer p.Close(context.Background())
	go p.Publish(context.Background(), "t", msg("first"))
	<-g.entered
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- p.Publish(ctx, "t", msg("withdrawn")) }()
	waitQueued(t, p, 1)
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Publish: %v", err)
	}
	g.release <- nil
	g.release <- nil // for the next call
	if err := p.Publish(context.Background(), "t", msg("after")); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.batches) != 2 || g.batches[1][0] != "after" || len(g.batches[1]) != 1 {
		t.Fatalf("driver saw %v; the withdrawn call must never be sent", g.batches)
	}
}

func TestPartialFailureNamesEachFailedMessage(t *testing.T) {
	g := newGate()
	g.fail = func(i int, m *message.Message) error {
		if string(m.Payload) == "bad" {
			return errors.New("rejected")
		}
		return nil
	}
	p, _ := publisher.New(g, publisher.Options{})
	defer p.Close(context.Background())
	g.release <- nil
	err := p.Publish(context.Background(), "t", msg("ok"), msg("bad"), msg("ok2"))
	var pe *publisher.PublishError
	if !errors.As(err, &pe) || pe.Total != 3 || len(pe.Failed) != 1 || pe.Failed[0].Index != 1 {
		t.Fatalf("error %v", err)
	}
	if !errors.Is(err, message.ErrUnavailable) {
		t.Fatalf("failure not classified by the driver's ErrorCode: %v", err)
	}
}

func TestCloseWaitsThenRefuses(t *testing.T) {
	g := newGate()
	p, _ := publisher.New(g, publisher.Options{})
	res := make(chan error, 1)
	go func() { res <- p.Publish(context.Background(), "t", msg("in flight")) }()
	<-g.entered
	closed := make(chan error, 1)
	go func() { closed <- p.Close(context.Background()) }()
	select {
	case <-closed:
		t.Fatal("Close returned with a send in flight")
	case <-time.After(20 * time.Millisecond):
	}
	g.release <- nil
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(context.Background(), "t", msg("late")); !errors.Is(err, message.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestIDAndTimeStamped(t *testing.T) {
	g := newGate()
	p, _ := publisher.New(g, publisher.Options{})
	defer p.Close(context.Background())
	g.release <- nil
	m := msg("x")
	if err := p.Publish(context.Background(), "t", m); err != nil {
		t.Fatal(err)
	}
	if m.ID == "" || m.Time.IsZero() {
		t.Fatalf("not stamped: %+v", m)
	}
}
