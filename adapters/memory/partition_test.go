package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// These tests drive the broker's subscriptions directly, one step at a
// time, so every hand-over is observed exactly.

func newTestBroker(t *testing.T, partitions int) *Broker {
	t.Helper()
	b, err := New(Options{Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func openSub(t *testing.T, b *Broker, topic, group string) *subscription {
	t.Helper()
	s, err := b.SubscriberDriver().Open(context.Background(), topic, subscriber.OpenConfig{Group: group})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*subscription)
}

// keyOn returns a key that the broker puts on partition p.
func keyOn(t *testing.T, b *Broker, topic string, p int) string {
	t.Helper()
	tp := b.topic(topic)
	for i := range 10000 {
		k := fmt.Sprintf("key-%d", i)
		if tp.partition(k) == p {
			return k
		}
	}
	t.Fatalf("no key found for partition %d", p)
	return ""
}

func seqs(t *testing.T, b *Broker, topic, key string, n int) []*message.Message {
	t.Helper()
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = &message.Message{ID: fmt.Sprintf("%s-%d", key, i), Key: key, Payload: []byte(fmt.Sprint(i))}
	}
	if err := b.topic(topic).append(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	return msgs
}

// receive takes up to max messages, failing the test if none comes within
// a second.
func receive(t *testing.T, s *subscription, max int) []subscriber.Received {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	recs, err := s.Receive(ctx, max)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return recs
}

// receiveNone checks that s gets nothing in a short observation window.
func receiveNone(t *testing.T, s *subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	recs, err := s.Receive(ctx, 10)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("receive: got %d messages (%v), want none", len(recs), err)
	}
}

func ids(recs []subscriber.Received) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Msg.ID)
	}
	return out
}

// A partition moves to a new member only after the old owner has settled
// what it held of it: the new member cannot receive a key's next message
// while the old owner still handles an earlier one.
func TestHandOverWaitsForTheOldOwnerToSettle(t *testing.T) {
	b := newTestBroker(t, 16)
	a := openSub(t, b, "t", "g")
	if got := b.Members("t", "g"); !slices.Equal(got, []int{16}) {
		t.Fatalf("members %v, want [16]", got)
	}
	// The second member takes partitions 8..15 (the first keeps the
	// first 8 it owns: sticky).
	key := keyOn(t, b, "t", 12)
	msgs := seqs(t, b, "t", key, 3)
	first := receive(t, a, 1)
	if got := ids(first); !slices.Equal(got, []string{msgs[0].ID}) {
		t.Fatalf("first member received %v, want %s", got, msgs[0].ID)
	}
	bsub := openSub(t, b, "t", "g")
	// Partition 12 is assigned to the second member but still owned by
	// the first, which holds message 0 of the key.
	if got := b.Members("t", "g"); !slices.Equal(got, []int{8, 7}) {
		t.Fatalf("members %v, want [8 7] while partition 12 is handed over", got)
	}
	receiveNone(t, bsub)
	receiveNone(t, a) // nor does the old owner receive more of it
	if err := a.Ack(context.Background(), []any{first[0].AckID}); err != nil {
		t.Fatal(err)
	}
	if got := b.Members("t", "g"); !slices.Equal(got, []int{8, 8}) {
		t.Fatalf("members %v after the ack, want [8 8]", got)
	}
	got := receive(t, bsub, 10)
	if !slices.Equal(ids(got), []string{msgs[1].ID, msgs[2].ID}) {
		t.Fatalf("new owner received %v, want messages 1 and 2", ids(got))
	}
	if d, _ := got[0].Msg.Delivery(); d.Partition != 12 || d.Attempt != 1 {
		t.Fatalf("delivery %+v, want partition 12, attempt 1", d)
	}
}

// A nack settles too: the nacked message goes to the new owner, first.
func TestHandOverAfterNack(t *testing.T) {
	b := newTestBroker(t, 2)
	a := openSub(t, b, "t", "g")
	key := keyOn(t, b, "t", 1)
	msgs := seqs(t, b, "t", key, 2)
	first := receive(t, a, 1)
	bsub := openSub(t, b, "t", "g")
	receiveNone(t, bsub)
	if err := a.Nack(context.Background(), []any{first[0].AckID}, 0); err != nil {
		t.Fatal(err)
	}
	got := receive(t, bsub, 10)
	if !slices.Equal(ids(got), []string{msgs[0].ID, msgs[1].ID}) {
		t.Fatalf("new owner received %v, want 0 then 1", ids(got))
	}
	if d, _ := got[0].Msg.Delivery(); d.Attempt != 2 {
		t.Fatalf("redelivered message has attempt %d, want 2", d.Attempt)
	}
}

// A member that leaves with messages in flight (a crash) gives them back
// in order; the next owner receives them before anything newer.
func TestLeaverInFlightGoesBackInOrder(t *testing.T) {
	b := newTestBroker(t, 4)
	a := openSub(t, b, "t", "g")
	key := keyOn(t, b, "t", 0)
	msgs := seqs(t, b, "t", key, 8)
	held := receive(t, a, 5)
	if len(held) != 5 {
		t.Fatalf("received %d, want 5", len(held))
	}
	// Acks in another order than delivery: only message 1 is settled.
	if err := a.Ack(context.Background(), []any{held[1].AckID}); err != nil {
		t.Fatal(err)
	}
	bsub := openSub(t, b, "t", "g") // gets partitions 2 and 3: nothing moves to it yet
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got := b.Members("t", "g"); !slices.Equal(got, []int{4}) {
		t.Fatalf("members %v after the leave, want [4]", got)
	}
	var got []string
	var attempts []int
	for len(got) < 7 {
		for _, r := range receive(t, bsub, 10) {
			got = append(got, r.Msg.ID)
			d, _ := r.Msg.Delivery()
			attempts = append(attempts, d.Attempt)
		}
	}
	want := []string{msgs[0].ID, msgs[2].ID, msgs[3].ID, msgs[4].ID, msgs[5].ID, msgs[6].ID, msgs[7].ID}
	if !slices.Equal(got, want) {
		t.Fatalf("survivor received %v, want %v", got, want)
	}
	if !slices.Equal(attempts, []int{2, 2, 2, 2, 1, 1, 1}) {
		t.Fatalf("attempts %v, want the four given back at 2, the rest at 1", attempts)
	}
}

// Joins and leaves move only the partitions they must, and the shares
// differ by one at most.
func TestRebalanceIsStickyAndEven(t *testing.T) {
	b := newTestBroker(t, 16)
	assigned := func() []*subscription {
		tp := b.topic("t")
		tp.mu.Lock()
		defer tp.mu.Unlock()
		out := make([]*subscription, 0, 16)
		if tp.groups["g"] == nil {
			return make([]*subscription, 16)
		}
		for _, gp := range tp.groups["g"].parts {
			out = append(out, gp.assigned)
		}
		return out
	}
	moved := func(before, after []*subscription) int {
		n := 0
		for i := range before {
			if before[i] != after[i] {
				n++
			}
		}
		return n
	}
	var subs []*subscription
	steps := []struct {
		members []int
		moves   int
	}{{[]int{16}, 16}, {[]int{8, 8}, 8}, {[]int{6, 5, 5}, 5}, {[]int{4, 4, 4, 4}, 4}}
	for _, st := range steps {
		before := assigned()
		subs = append(subs, openSub(t, b, "t", "g"))
		after := assigned()
		if got := b.Members("t", "g"); !slices.Equal(got, st.members) {
			t.Fatalf("after %d joins: members %v, want %v", len(subs), got, st.members)
		}
		if n := moved(before, after); n != st.moves {
			t.Fatalf("join %d moved %d partitions, want %d", len(subs), n, st.moves)
		}
	}
	// The second member leaves: only its 4 partitions move.
	before := assigned()
	if err := subs[1].Close(); err != nil {
		t.Fatal(err)
	}
	if n := moved(before, assigned()); n != 4 {
		t.Fatalf("leave moved %d partitions, want 4", n)
	}
	if got := b.Members("t", "g"); !slices.Equal(got, []int{6, 5, 5}) {
		t.Fatalf("after the leave: members %v, want [6 5 5]", got)
	}
}

// A key always maps to one partition; keyless messages go round-robin.
func TestPartitioning(t *testing.T) {
	b := newTestBroker(t, 4)
	s := openSub(t, b, "t", "g")
	var msgs []*message.Message
	for i := range 8 {
		msgs = append(msgs, &message.Message{ID: fmt.Sprint("keyless-", i)})
	}
	for i := range 8 {
		msgs = append(msgs, &message.Message{ID: fmt.Sprint("keyed-", i), Key: "same"})
	}
	if err := b.topic("t").append(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	var parts []int
	for len(parts) < 16 {
		for _, r := range receive(t, s, 16) {
			d, _ := r.Msg.Delivery()
			parts = append(parts, d.Partition)
		}
	}
	want := b.topic("t").partition("same")
	if !slices.Equal(parts[:8], []int{0, 1, 2, 3, 0, 1, 2, 3}) {
		t.Errorf("keyless partitions %v, want round-robin", parts[:8])
	}
	for i, p := range parts[8:] {
		if p != want {
			t.Errorf("keyed message %d on partition %d, want %d", i, p, want)
		}
	}
}

func TestPartitionsOption(t *testing.T) {
	for _, n := range []int{-1, maxPartitions + 1} {
		if _, err := New(Options{Partitions: n}); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("partitions %d: %v, want ErrInvalidArgument", n, err)
		}
	}
	b, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if b.opts.Partitions != 16 {
		t.Errorf("default partitions %d, want 16", b.opts.Partitions)
	}
}
