package sqs_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// Facts about the SQS server that the adapter relies on or works around,
// checked with the raw SDK against the ElasticMQ of scripts/brokers.

// rawQueue creates a queue with attrs through c's SDK client.
func rawQueue(t *testing.T, api *sqs.Client, name string, attrs map[string]string) string {
	t.Helper()
	out, err := api.CreateQueue(t.Context(), &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
	if err != nil {
		t.Fatal(err)
	}
	url := aws.ToString(out.QueueUrl)
	t.Cleanup(func() { _, _ = api.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: aws.String(url)}) })
	return url
}

func bodies(ms []types.Message) []string {
	var b []string
	for _, m := range ms {
		b = append(b, aws.ToString(m.Body))
	}
	return b
}

// TestFIFOGroupLock: once a message of a group is received, no receiver
// gets another message of that group until it is deleted or visible again,
// and the group's messages come in order, to whichever receiver asks. Two
// receivers here are two SDK clients, as two subscribers would be.
func TestFIFOGroupLock(t *testing.T) {
	var a, b *sqs.Client
	open(t, sqsURL(t, "")).Publisher().As(&a)
	open(t, sqsURL(t, "")).Publisher().As(&b)
	q := rawQueue(t, a, unique("lock")+".fifo", map[string]string{"FifoQueue": "true"})
	for i := range 6 {
		for _, g := range []string{"k1", "k2"} {
			_, err := a.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(q), MessageBody: aws.String(fmt.Sprintf("%s/%d", g, i)),
				MessageGroupId: aws.String(g), MessageDeduplicationId: aws.String(fmt.Sprintf("%s-%d", g, i))})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	recv := func(c *sqs.Client, n int32) []types.Message {
		out, err := c.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(q), MaxNumberOfMessages: n, VisibilityTimeout: 30})
		if err != nil {
			t.Fatal(err)
		}
		return out.Messages
	}
	// A takes k1/0 and k1/1 (the oldest group first, in order).
	got := recv(a, 2)
	if want := []string{"k1/0", "k1/1"}; fmt.Sprint(bodies(got)) != fmt.Sprint(want) {
		t.Fatalf("first receive got %v, want %v", bodies(got), want)
	}
	// B gets k2 only: k1 is locked while A holds its messages.
	held := recv(b, 10)
	for _, m := range held {
		if aws.ToString(m.Body)[:2] == "k1" {
			t.Fatalf("B received %s while A held k1's messages: no group lock", aws.ToString(m.Body))
		}
	}
	if len(held) == 0 {
		t.Fatalf("B received nothing; want k2's messages")
	}
	if again := recv(b, 10); len(again) != 0 {
		t.Fatalf("B received %v with every group locked", bodies(again))
	}
	// A deletes k1/0 but still holds k1/1: k1 stays locked.
	if _, err := a.DeleteMessage(t.Context(), &sqs.DeleteMessageInput{QueueUrl: aws.String(q), ReceiptHandle: got[0].ReceiptHandle}); err != nil {
		t.Fatal(err)
	}
	if again := recv(b, 10); len(again) != 0 {
		t.Fatalf("B received %v while A still held k1/1", bodies(again))
	}
	// A hands k1/1 back (visibility 0, a nack): B now gets k1/1 first.
	if _, err := a.ChangeMessageVisibility(t.Context(), &sqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(q), ReceiptHandle: got[1].ReceiptHandle, VisibilityTimeout: 0}); err != nil {
		t.Fatal(err)
	}
	next := recv(b, 10)
	if len(next) == 0 || aws.ToString(next[0].Body) != "k1/1" {
		t.Fatalf("after the nack B got %v, want k1/1 first", bodies(next))
	}
	for i, m := range next {
		if w := fmt.Sprintf("k1/%d", i+1); aws.ToString(m.Body) != w {
			t.Fatalf("after the nack B got %v, want k1/1.. in order", bodies(next))
		}
	}
}

// TestAbandonedLongPoll: a long poll whose client gave up goes on in
// ElasticMQ and takes the next message, which then stays invisible for its
// visibility timeout: why a closing subscription waits for its receives
// instead of cancelling them.
func TestAbandonedLongPoll(t *testing.T) {
	var api *sqs.Client
	open(t, sqsURL(t, "")).Publisher().As(&api)
	q := rawQueue(t, api, unique("abandon"), map[string]string{"VisibilityTimeout": "2"})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	_, err := api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(q), WaitTimeSeconds: 3})
	cancel()
	if err == nil {
		t.Fatal("the long poll returned before its client gave up")
	}
	if _, err := api.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(q), MessageBody: aws.String("taken")}); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	out, err := api.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(q), WaitTimeSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Messages) != 0 {
		t.Skipf("this server does not continue abandoned long polls (received %v at once)", bodies(out.Messages))
	}
	out, err = api.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(q), WaitTimeSeconds: 5,
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Messages) != 1 {
		t.Fatalf("the message never came back after its visibility timeout")
	}
	t.Logf("the abandoned poll took it; visible again after %s, receive count %s",
		time.Since(sent).Round(100*time.Millisecond), out.Messages[0].Attributes["ApproximateReceiveCount"])
	if n := out.Messages[0].Attributes["ApproximateReceiveCount"]; n != "2" {
		t.Errorf("receive count %s, want 2 (the abandoned poll's receive counts)", n)
	}
}
