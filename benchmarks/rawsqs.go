package benchmarks

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/bench"
)

// RawSQS is aws-sdk-go-v2's SQS client tuned as the polybus adapter uses
// it, on the adapter's own SDK client (the same HTTP transport, no SDK
// retries): one standard queue per topic (raw-<topic>; SQS has no
// consumer groups without SNS, so the workload's one group is the queue),
// a publish call sent as SendMessageBatch calls of 10, all in flight at
// once (at most 16), the payload base64-encoded (SQS bodies are text); each
// consumer keeps 2 ReceiveMessage calls going (10 messages, a 5s long
// poll, visibility 30s: the adapter's defaults), runs the handler on each
// message and deletes the received batch with DeleteMessageBatch.
// Closing stops new receives and waits for the calls in flight, whose
// messages are handled and deleted, as the adapter waits for them.
type RawSQS struct {
	api       *sqs.Client
	receivers int

	mu   sync.Mutex
	urls map[string]string
}

// NewRawSQS uses the SDK client of c, a polybus client of sqs://.
func NewRawSQS(c *polybus.Client) (*RawSQS, error) {
	var api *sqs.Client
	if !c.Publisher().As(&api) {
		return nil, errors.New("raw sqs: the polybus client has no SQS client")
	}
	return &RawSQS{api: api, receivers: 2, urls: map[string]string{}}, nil
}

func sqsQueue(topic string) string {
	return "raw-" + strings.NewReplacer(".", "-", "/", "-").Replace(topic)
}

func (q *RawSQS) url(ctx context.Context, topic string) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if u, ok := q.urls[topic]; ok {
		return u, nil
	}
	out, err := q.api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(sqsQueue(topic)),
		Attributes: map[string]string{string(types.QueueAttributeNameVisibilityTimeout): "30"}})
	if err != nil {
		return "", fmt.Errorf("raw sqs: create queue: %w", err)
	}
	q.urls[topic] = aws.ToString(out.QueueUrl)
	return q.urls[topic], nil
}

func (q *RawSQS) Publisher(ctx context.Context, topic string) (bench.Publisher, error) {
	u, err := q.url(ctx, topic)
	if err != nil {
		return nil, err
	}
	return &sqsPub{q: q, url: u}, nil
}

type sqsPub struct {
	q   *RawSQS
	url string
}

func (p *sqsPub) Publish(ctx context.Context, msgs []bench.Message) error {
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for off := 0; off < len(msgs); off += 10 {
		chunk := msgs[off:min(off+10, len(msgs))]
		entries := make([]types.SendMessageBatchRequestEntry, len(chunk))
		for i, m := range chunk {
			entries[i] = types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)),
				MessageBody: aws.String(base64.StdEncoding.EncodeToString(m.Payload))}
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out, err := p.q.api.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(p.url), Entries: entries})
			if err == nil && len(out.Failed) > 0 {
				err = fmt.Errorf("raw sqs: %d of %d messages failed: %s", len(out.Failed), len(entries), aws.ToString(out.Failed[0].Message))
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (p *sqsPub) Close(context.Context) error { return nil }

func (q *RawSQS) Subscribe(ctx context.Context, topic, group string, consumers int, handle func([]byte)) (bench.Subscription, error) {
	u, err := q.url(ctx, topic)
	if err != nil {
		return nil, err
	}
	s, stop := bench.NewConsumers(ctx)
	calls := context.WithoutCancel(ctx)
	for range consumers * q.receivers {
		s.Go(func() {
			for stop.Err() == nil {
				out, err := q.api.ReceiveMessage(calls, &sqs.ReceiveMessageInput{QueueUrl: aws.String(u),
					MaxNumberOfMessages: 10, WaitTimeSeconds: 5, VisibilityTimeout: 30})
				if err != nil {
					s.Fail(err)
					return
				}
				if len(out.Messages) == 0 {
					continue
				}
				entries := make([]types.DeleteMessageBatchRequestEntry, len(out.Messages))
				for i, m := range out.Messages {
					p, err := base64.StdEncoding.DecodeString(aws.ToString(m.Body))
					if err == nil {
						handle(p)
					}
					entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle}
				}
				if _, err := q.api.DeleteMessageBatch(calls, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(u), Entries: entries}); err != nil {
					s.Fail(err)
					return
				}
			}
		})
	}
	return s, nil
}

// Cleanup deletes topic's queue.
func (q *RawSQS) Cleanup(ctx context.Context, topic string) error {
	q.mu.Lock()
	u, ok := q.urls[topic]
	delete(q.urls, topic)
	q.mu.Unlock()
	if !ok {
		return nil
	}
	_, err := q.api.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(u)})
	return err
}

func (q *RawSQS) Close(context.Context) error { return nil }
