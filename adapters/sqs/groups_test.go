package sqs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/polybus/polybus"
	_ "github.com/polybus/polybus/adapters/memory"
	polysqs "github.com/polybus/polybus/adapters/sqs"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// collector records the payloads a handler saw.
type collector struct {
	mu  sync.Mutex
	got []string
}

func (c *collector) handle(_ context.Context, m *message.Message) error {
	c.mu.Lock()
	c.got = append(c.got, string(m.Payload))
	c.mu.Unlock()
	return nil
}

func (c *collector) has(p string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range c.got {
		if g == p {
			return true
		}
	}
	return false
}

func (c *collector) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

// TestNoGroupHolding: a Publish to a topic with no group goes to the
// default group's holding queue; once the topic has a group, publishers
// leave the holding queue out; a subscriber of the default group then
// claims it and reads what it held, and gets later messages too.
func TestNoGroupHolding(t *testing.T) {
	c := open(t, sqsURL(t, "group_refresh=100ms"))
	topic := unique("holding")
	var api *sqs.Client
	c.Publisher().As(&api)
	if err := c.Publisher().Publish(t.Context(), topic, message.New([]byte("early"))); err != nil {
		t.Fatal(err)
	}
	holding := queueNamed(t, api, false, topic, subscriber.DefaultGroup)
	tags, err := api.ListQueueTags(t.Context(), &sqs.ListQueueTagsInput{QueueUrl: aws.String(holding)})
	if err != nil || tags.Tags[polysqs.TagHolding] != "true" {
		t.Fatalf("default queue tags %v (%v), want %s=true", tags, err, polysqs.TagHolding)
	}

	// A second client (its own group list) subscribes group g.
	other := open(t, sqsURL(t, "group_refresh=100ms"))
	var g collector
	pbtest.Consume(t, other, topic, g.handle, subscriber.Group("g"))
	pbtest.WaitFor(t, "group g to get a message", func() bool {
		if err := c.Publisher().Publish(t.Context(), topic, message.New([]byte("probe"))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // one probe per 50ms
		return g.has("probe")
	})
	// The list that sent the probe to g left the holding queue out (a
	// listing that finds another group does), and so does every later one.
	if err := c.Publisher().Publish(t.Context(), topic, message.New([]byte("after"))); err != nil {
		t.Fatal(err)
	}
	pbtest.WaitFor(t, "the marker in group g", func() bool { return g.has("after") })

	var d collector
	pbtest.Consume(t, other, topic, d.handle, subscriber.Group(subscriber.DefaultGroup))
	pbtest.WaitFor(t, "the default group to read the held message", func() bool { return d.has("early") })
	if d.has("after") {
		t.Errorf("the holding queue got %q, published after group g existed: %v", "after", d.all())
	}
	tags, err = api.ListQueueTags(t.Context(), &sqs.ListQueueTagsInput{QueueUrl: aws.String(holding)})
	if err != nil || tags.Tags[polysqs.TagHolding] != "" {
		t.Fatalf("claimed default queue tags %v (%v): want no %s", tags, err, polysqs.TagHolding)
	}
}

// TestNoGroupFail: with no_group=fail, a Publish to a topic with no group
// fails with NotFound and creates nothing.
func TestNoGroupFail(t *testing.T) {
	c := open(t, sqsURL(t, "no_group=fail"))
	topic := unique("nogroup")
	err := c.Publisher().Publish(t.Context(), topic, message.New([]byte("x")))
	if !errors.Is(err, message.ErrNotFound) {
		t.Fatalf("got %v, want NotFound", err)
	}
	var api *sqs.Client
	c.Publisher().As(&api)
	if _, err := api.GetQueueUrl(t.Context(), &sqs.GetQueueUrlInput{QueueName: aws.String(polysqs.QueueName(runPrefix, false, topic, subscriber.DefaultGroup))}); err == nil {
		t.Fatal("a default queue was created")
	}
}

// TestFIFOTopicOnStandardClient: a topic ending in .fifo needs fifo=true.
func TestFIFOTopicOnStandardClient(t *testing.T) {
	c := open(t, sqsURL(t, ""))
	if err := c.Publisher().Publish(t.Context(), "orders.fifo", message.New([]byte("x"))); !errors.Is(err, message.ErrInvalidArgument) {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
}

// TestDeleteTopic: DeleteTopic removes each group's queue and the holding
// queue of a topic, and no other topic's; DeleteTopics also takes the
// dead-letter topic's; a client of another adapter is refused.
func TestDeleteTopic(t *testing.T) {
	c := open(t, sqsURL(t, "wait_time=1s"))
	var api *sqs.Client
	c.Publisher().As(&api)
	topic, other := unique("delete"), unique("kept")
	if err := c.Publisher().Publish(t.Context(), topic, message.New([]byte("held"))); err != nil {
		t.Fatal(err)
	}
	// Subscribing makes a group's queue; the subscribers stop before the
	// deletion (ElasticMQ answers a long poll of a deleted queue only
	// after its ask timeout).
	nop := func(context.Context, *message.Message) error { return nil }
	made := func(topic, group string) string {
		stop := pbtest.Consume(t, c, topic, nop, subscriber.Group(group))
		defer stop()
		return queueNamed(t, api, false, topic, group)
	}
	made(topic, "a")
	made(topic, "b")
	kept := made(other, "a")
	made(polysqs.DLQTopic(topic), "a")

	n, err := polysqs.DeleteTopic(t.Context(), c, topic)
	if err != nil || n != 3 {
		t.Fatalf("DeleteTopic = %d, %v; want 3 queues (a, b and the holding queue)", n, err)
	}
	for _, g := range []string{"a", "b", subscriber.DefaultGroup} {
		if _, err := api.GetQueueUrl(t.Context(), &sqs.GetQueueUrlInput{QueueName: aws.String(polysqs.QueueName(runPrefix, false, topic, g))}); err == nil {
			t.Errorf("group %s's queue is still there", g)
		}
	}
	if _, err := api.GetQueueAttributes(t.Context(), &sqs.GetQueueAttributesInput{QueueUrl: aws.String(kept)}); err != nil {
		t.Fatalf("another topic's queue went too: %v", err)
	}
	if err := polysqs.DeleteTopics(t.Context(), c, []string{topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.GetQueueUrl(t.Context(), &sqs.GetQueueUrlInput{QueueName: aws.String(polysqs.QueueName(runPrefix, false, polysqs.DLQTopic(topic), "a"))}); err == nil {
		t.Error("the dead-letter topic's queue is still there")
	}

	mem, err := polybus.Open(t.Context(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close(context.Background())
	if _, err := polysqs.DeleteTopic(t.Context(), mem, topic); !errors.Is(err, message.ErrInvalidArgument) {
		t.Fatalf("DeleteTopic on a mem:// client: %v, want InvalidArgument", err)
	}
}
