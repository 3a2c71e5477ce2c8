package nats_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	polynats "github.com/polybus/polybus/adapters/nats"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TestMigrateUnpartitionedStream builds the layout of polybus before
// partitions (one stream per topic, subject = topic, one durable consumer
// per group) with a raw client, with a group that has acked part of it,
// then uses the topic with this version: the stream gains the partition
// subjects; the existing group gets its unacked old messages first, in
// order, then the new ones; a new group gets every old and new message;
// the old consumers are deleted once drained.
func TestMigrateUnpartitionedStream(t *testing.T) {
	c := open(t, embeddedURL(t))
	var js jetstream.JetStream
	if !c.Publisher().As(&js) {
		t.Fatal("no JetStream")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topic := unique("old")
	stream := "PB_" + topic
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{topic}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	old, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: "g", DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxDeliver: -1, FilterSubject: topic,
	})
	if err != nil {
		t.Fatal(err)
	}
	// What the old version published: subject = topic, the key and ID in
	// headers; keys a and b interleaved.
	var want []string
	for i := range 10 {
		m := natsgo.NewMsg(topic)
		id := fmt.Sprintf("old-%02d", i)
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Header.Set(polynats.HeaderKey, []string{"a", "b"}[i%2])
		m.Data = []byte(id)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	// The group had handled and acked the first three.
	batch, err := old.Fetch(3)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// This version publishes: the stream is migrated.
	var newer []*message.Message
	for i := range 10 {
		m := message.New([]byte(fmt.Sprint(i)))
		m.ID, m.Key = fmt.Sprintf("new-%02d", i), []string{"a", "b"}[i%2]
		newer = append(newer, m)
		want = append(want, m.ID)
	}
	publish(t, c, topic, newer...)
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; !slices.Equal(cfg.Subjects, []string{topic, "_PB.*." + topic}) || cfg.Metadata["polybus-partitions"] != "8" {
		t.Fatalf("stream not migrated: %+v", cfg)
	}

	perKey := func(got []*message.Message) map[string][]string {
		m := map[string][]string{}
		for _, x := range got {
			m[x.Key] = append(m[x.Key], x.ID)
		}
		return m
	}
	wantKey := func(from int) map[string][]string {
		m := map[string][]string{}
		for i, id := range want {
			if i >= from || id[:3] == "new" {
				m[[]string{"a", "b"}[i%2]] = append(m[[]string{"a", "b"}[i%2]], id)
			}
		}
		return m
	}
	// The existing group: old-03..old-09 first, then the new ones.
	s := newSink()
	subscribe(t, c, topic, s.handle, subscriber.Group("g"))
	got := s.waitCount(t, 17)
	if w := wantKey(3); !mapsEqual(perKey(got), w) {
		t.Fatalf("existing group per key: %v, want %v", perKey(got), w)
	}
	for i, m := range got {
		if isOld := m.ID[:3] == "old"; isOld != (i < 7) {
			t.Fatalf("existing group got %v: the old messages not all first", ids(got))
		}
	}
	// A new group reads everything, the old messages first.
	s2 := newSink()
	subscribe(t, c, topic, s2.handle, subscriber.Group("fresh"))
	got2 := s2.waitCount(t, 20)
	if w := wantKey(0); !mapsEqual(perKey(got2), w) {
		t.Fatalf("new group per key: %v, want %v", perKey(got2), w)
	}
	for i, m := range got2 {
		if isOld := m.ID[:3] == "old"; isOld != (i < 10) {
			t.Fatalf("new group got %v: the old messages not all first", ids(got2))
		}
	}
	// Drained old consumers are deleted.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err1 := js.Consumer(ctx, stream, "g")
		_, err2 := js.Consumer(ctx, stream, "fresh")
		if err1 != nil && err2 != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old consumers not deleted after draining: %v, %v", err1, err2)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A plain NATS client publishing to the topic itself lands in
	// partition 0 and reaches the groups.
	raw := natsgo.NewMsg(topic)
	raw.Data = []byte("plain")
	if _, err := js.PublishMsg(ctx, raw); err != nil {
		t.Fatal(err)
	}
	last := s.waitCount(t, 18)[17]
	if d, _ := last.Delivery(); string(last.Payload) != "plain" || d.Partition != 0 {
		t.Fatalf("plain publish: payload %q partition %d", last.Payload, d.Partition)
	}
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
