package sqs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// Queue tags that name a queue's topic and group, for people and for the
// native dead-letter queue's metadata. Values that AWS does not take as a
// tag value are stored under the -b64 names in base64url instead.
const (
	TagTopic = "polybus-topic"
	TagGroup = "polybus-group"
	// TagHolding marks the default group's queue that a Publish created
	// for a topic with no group: publishers stop sending to it once the
	// topic has another group, until a subscriber of the default group
	// claims it (which removes the tag).
	TagHolding = "polybus-holding"
)

// vanishGrace is how long after a topic's queues were last listed a
// publisher refuses to treat an empty list as "no group" (a broker that
// restarts may list no queue for a while): it fails with Unavailable
// instead of sending to the default group.
const vanishGrace = time.Minute

// registry is a client's view of which groups (queues) each topic has:
// the publisher's fan-out list, refreshed from ListQueues under the
// topic's name prefix when it is older than Config.GroupRefresh.
type registry struct {
	c *core
	// bg runs background refreshes under ctx, which stop ends.
	bg   sync.WaitGroup
	ctx  context.Context
	stop context.CancelFunc

	mu     sync.Mutex
	topics map[string]*topicQueues
}

// topicQueues is one topic's list of queue URLs.
type topicQueues struct {
	// refresh is held while the list is being refreshed, so that
	// concurrent publishers make one ListQueues call between them.
	refresh sync.Mutex

	mu   sync.Mutex
	urls []string // never modified in place: replaced
	at   time.Time
	// seen is when a listing last found one of the topic's queues.
	seen time.Time
}

func newRegistry(c *core) *registry {
	ctx, stop := context.WithCancel(context.Background())
	return &registry{c: c, topics: map[string]*topicQueues{}, ctx: ctx, stop: stop}
}

// close stops the background refreshes and waits for them.
func (r *registry) close() {
	r.stop()
	r.bg.Wait()
}

func (r *registry) entry(topic string) *topicQueues {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.topics[topic]
	if e == nil {
		e = &topicQueues{}
		r.topics[topic] = e
	}
	return e
}

func (e *topicQueues) get(ttl time.Duration) ([]string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.urls, !e.at.IsZero() && time.Since(e.at) < ttl
}

// queues returns the URLs of topic's group queues, listing them again when
// the list is older than Config.GroupRefresh: in the background when there
// is a list to use meanwhile, before returning when there is none. A topic with no group gets
// its default group's queue (Config.NoGroup "default") or fails with
// NotFound ("fail").
func (r *registry) queues(ctx context.Context, topic string) ([]string, error) {
	e := r.entry(topic)
	ttl := r.c.cfg.GroupRefresh
	urls, fresh := e.get(ttl)
	if fresh {
		return urls, nil
	}
	if len(urls) > 0 {
		// Stale but known: publish to the list as it is and refresh it
		// in the background, so that no Publish waits for ListQueues.
		if e.refresh.TryLock() {
			r.bg.Go(func() {
				defer e.refresh.Unlock()
				if _, fresh := e.get(ttl); !fresh {
					_, _ = r.refreshLocked(r.ctx, topic, e)
				}
			})
		}
		return urls, nil
	}
	e.refresh.Lock()
	defer e.refresh.Unlock()
	if urls, fresh := e.get(ttl); fresh {
		return urls, nil // refreshed by another caller meanwhile
	}
	return r.refreshLocked(ctx, topic, e)
}

// refreshLocked lists topic's queues into e; the caller holds e.refresh.
func (r *registry) refreshLocked(ctx context.Context, topic string, e *topicQueues) ([]string, error) {
	const op = "sqs: publish"
	urls, err := r.list(ctx, topic)
	if err != nil {
		return nil, coded(op, err)
	}
	e.mu.Lock()
	seen := e.seen
	if len(urls) > 0 {
		e.seen = time.Now()
	}
	e.mu.Unlock()
	if len(urls) == 0 && !seen.IsZero() && time.Since(seen) < vanishGrace {
		return nil, message.Errorf(message.Unavailable, op,
			"the queues of topic %q, listed %s ago, are gone from %s (restarting?); not sending to a default group", topic, time.Since(seen).Round(time.Millisecond), r.c.where())
	}
	if len(urls) == 0 {
		if r.c.cfg.NoGroup == NoGroupFail {
			return nil, message.Errorf(message.NotFound, op,
				"topic %q has no consumer group on %s yet: SQS keeps messages only in group queues, so subscribe a group first (or use no_group=default)", topic, r.c.where())
		}
		url, err := r.c.ensureQueue(ctx, topic, subscriber.DefaultGroup, r.c.cfg.VisibilityTimeout, true)
		if err != nil {
			return nil, err
		}
		urls = []string{url}
	}
	e.mu.Lock()
	e.urls, e.at = urls, time.Now()
	e.mu.Unlock()
	return urls, nil
}

// list lists the queues of topic: those under its name prefix, of this
// client's kind (FIFO or standard).
func (r *registry) list(ctx context.Context, topic string) ([]string, error) {
	urls, err := r.all(ctx, topic)
	if err != nil {
		return nil, err
	}
	if len(urls) > 1 {
		// The default group's queue is left out while it only holds
		// what was published when the topic had no group.
		def := r.c.names.queueName(topic, subscriber.DefaultGroup)
		if i := slices.IndexFunc(urls, func(u string) bool { return queueNameOf(u) == def }); i >= 0 {
			tags, err := r.c.api.ListQueueTags(ctx, &sqs.ListQueueTagsInput{QueueUrl: aws.String(urls[i])})
			if err != nil {
				return nil, err
			}
			if tags.Tags[TagHolding] != "" {
				urls = slices.Delete(urls, i, i+1)
			}
		}
	}
	return urls, nil
}

// add puts url into topic's list at once, when a subscriber of this client
// opens a group: its own publisher need not wait for the next refresh.
func (r *registry) add(topic, url string) {
	e := r.entry(topic)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.at.IsZero() || slices.Contains(e.urls, url) {
		return
	}
	urls := append(slices.Clip(e.urls), url)
	slices.Sort(urls)
	e.urls = urls
}

// all lists every queue of topic of this client's kind, sorted, the
// default group's holding queue included.
func (r *registry) all(ctx context.Context, topic string) ([]string, error) {
	prefix := r.c.names.topicPrefix(topic)
	var urls []string
	pages := sqs.NewListQueuesPaginator(r.c.api, &sqs.ListQueuesInput{QueueNamePrefix: aws.String(prefix), MaxResults: aws.Int32(1000)})
	for pages.HasMorePages() {
		out, err := pages.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, u := range out.QueueUrls {
			if r.c.names.ours(queueNameOf(u)) {
				urls = append(urls, u)
			}
		}
	}
	slices.Sort(urls)
	return urls, nil
}

// forget makes the next publish to topic list its queues again, and wait
// for the listing.
func (r *registry) forget(topic string) {
	e := r.entry(topic)
	e.mu.Lock()
	e.urls, e.at = nil, time.Time{}
	e.mu.Unlock()
}

// tagValue reports whether AWS takes s as a tag value: up to 256 Unicode
// letters, digits, spaces and _ . : / = + - @.
func tagValue(s string) bool {
	if len(s) > 256 {
		return false
	}
	for _, r := range s {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.IsSpace(r) && !strings.ContainsRune("_.:/=+-@", r) {
			return false
		}
	}
	return true
}

func setTag(tags map[string]string, name, v string) {
	if tagValue(v) {
		tags[name] = v
		return
	}
	if enc := base64.RawURLEncoding.EncodeToString([]byte(v)); len(enc) <= 256 {
		tags[name+"-b64"] = enc
	}
}

// ensureQueue returns the URL of group's queue on topic, creating it when
// it does not exist. A new queue gets the client's attributes (FIFO,
// visibility timeout vt, retention, redrive policy) and the topic and group
// tags, and TagHolding when holding (a publisher's default group); an
// existing one keeps its attributes, except that the redrive policy is set
// when Config.MaxReceives asks for one, and a subscriber of the default
// group removes TagHolding.
func (c *core) ensureQueue(ctx context.Context, topic, group string, vt time.Duration, holding bool) (string, error) {
	const op = "sqs: create queue"
	name := c.names.queueName(topic, group)
	var redrive string
	if c.cfg.MaxReceives > 0 && group != DLQGroup {
		arn, err := c.dlqArn(ctx, topic)
		if err != nil {
			return "", err
		}
		js, _ := json.Marshal(map[string]string{"deadLetterTargetArn": arn, "maxReceiveCount": strconv.Itoa(c.cfg.MaxReceives)})
		redrive = string(js)
	}
	got, err := c.api.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	if err == nil {
		url := aws.ToString(got.QueueUrl)
		if group == subscriber.DefaultGroup && !holding {
			if _, err := c.api.UntagQueue(ctx, &sqs.UntagQueueInput{QueueUrl: got.QueueUrl, TagKeys: []string{TagHolding}}); err != nil {
				return "", coded(op, err)
			}
		}
		if redrive != "" {
			if _, err := c.api.SetQueueAttributes(ctx, &sqs.SetQueueAttributesInput{
				QueueUrl: got.QueueUrl, Attributes: map[string]string{string(types.QueueAttributeNameRedrivePolicy): redrive},
			}); err != nil {
				return "", coded(op, err)
			}
		}
		return url, nil
	}
	if !isNotFound(err) {
		return "", coded(op, err)
	}
	attrs := map[string]string{
		string(types.QueueAttributeNameVisibilityTimeout):  strconv.Itoa(int(vt / time.Second)),
		string(types.QueueAttributeNameMaximumMessageSize): strconv.Itoa(sqsMessageLimit),
	}
	if c.cfg.FIFO {
		attrs[string(types.QueueAttributeNameFifoQueue)] = "true"
		attrs[string(types.QueueAttributeNameContentBasedDeduplication)] = "false"
	}
	if c.cfg.Retention > 0 {
		attrs[string(types.QueueAttributeNameMessageRetentionPeriod)] = strconv.Itoa(int(c.cfg.Retention / time.Second))
	}
	if redrive != "" {
		attrs[string(types.QueueAttributeNameRedrivePolicy)] = redrive
	}
	tags := map[string]string{}
	setTag(tags, TagTopic, topic)
	setTag(tags, TagGroup, group)
	if holding {
		tags[TagHolding] = "true"
	}
	out, err := c.api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs, Tags: tags})
	if err != nil {
		// Created meanwhile by another subscriber, with other attributes.
		if got, gerr := c.api.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)}); gerr == nil {
			return aws.ToString(got.QueueUrl), nil
		}
		return "", coded(op, err)
	}
	return aws.ToString(out.QueueUrl), nil
}

// dlqArn returns the ARN of topic's native dead-letter queue, creating it.
func (c *core) dlqArn(ctx context.Context, topic string) (string, error) {
	const op = "sqs: create queue"
	url, err := c.ensureQueue(ctx, DLQTopic(topic), DLQGroup, c.cfg.VisibilityTimeout, false)
	if err != nil {
		return "", err
	}
	out, err := c.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return "", coded(op, err)
	}
	arn := out.Attributes[string(types.QueueAttributeNameQueueArn)]
	if arn == "" {
		return "", message.Errorf(message.Unimplemented, op, "%s gave no QueueArn for %s", c.where(), url)
	}
	return arn, nil
}

// DeleteTopic deletes every queue that c's adapter keeps for topic (each
// group's queue and the holding queue of the default group), with the
// messages in them, and returns how many it deleted. Queues of other kinds
// (FIFO or standard, per c's fifo setting) and of other prefixes are left
// alone, as is topic's dead-letter topic (DLQTopic), a topic of its own.
// It is for tooling and test clean-up; c must be a client of this adapter
// (message.InvalidArgument otherwise). SQS forgets a deleted queue's name
// for up to 60 seconds: creating it again meanwhile may fail.
func DeleteTopic(ctx context.Context, c *polybus.Client, topic string) (int, error) {
	const op = "sqs: delete topic"
	var cc *core
	if c == nil || !c.Publisher().As(&cc) {
		return 0, message.Errorf(message.InvalidArgument, op, "not a client of the sqs adapter")
	}
	if topic == "" {
		return 0, message.Errorf(message.InvalidArgument, op, "empty topic")
	}
	urls, err := cc.reg.all(ctx, topic)
	if err != nil {
		return 0, coded(op, err)
	}
	n := 0
	for _, u := range urls {
		if _, err := cc.api.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(u)}); err != nil {
			return n, coded(op, err)
		}
		n++
	}
	cc.reg.forget(topic)
	return n, nil
}

// DeleteTopics deletes the queues of each topic and of its dead-letter
// topic (see DeleteTopic), going on past failures; it returns them joined.
// Its signature is conformance.Options.Cleanup's.
func DeleteTopics(ctx context.Context, c *polybus.Client, topics []string) error {
	var errs []error
	for _, t := range topics {
		for _, name := range []string{t, DLQTopic(t)} {
			if _, err := DeleteTopic(ctx, c, name); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}
