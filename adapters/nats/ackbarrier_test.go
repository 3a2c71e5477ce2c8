package nats_test

import (
	"context"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestAckAgainIsABarrier pins the server behaviour that a partition's
// hand-back relies on: acking an already acked message again, as a
// request, is answered, and only after the acks sent before it on the
// connection were applied (the consumer's ack floor covers them). Should a
// server version stop answering, hand-backs would wait out their bound and
// could nack messages that no handler saw.
func TestAckAgainIsABarrier(t *testing.T) {
	ns := startNATS(t)
	nc, err := natsgo.Connect(ns.url(""))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BARRIER", Subjects: []string{"barrier"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateConsumer(ctx, "BARRIER", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := range n {
		if _, err := js.Publish(ctx, "barrier", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var msgs []jetstream.Msg
	for len(msgs) < n {
		batch, err := cons.Fetch(n-len(msgs), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
	}
	for _, m := range msgs {
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	// The first ack again, after all of them: its answer must wait for
	// the last one.
	if _, err := nc.RequestWithContext(ctx, msgs[0].Reply(), []byte("+ACK")); err != nil {
		t.Fatalf("ack of an acked message, as a request: %v (the hand-back's barrier needs an answer)", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.AckFloor.Stream != n {
		t.Fatalf("after the barrier: %d pending, ack floor %d; want 0 pending, floor %d", info.NumAckPending, info.AckFloor.Stream, n)
	}
}
