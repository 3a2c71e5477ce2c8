package sqs

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// TestMergedSends: concurrent one-entry sends to one queue share calls,
// every entry is accepted once, and a failed entry fails only its own
// request.
func TestMergedSends(t *testing.T) {
	c, ct, prefix := scratchCore(t, "m", "")
	q := scratchQueue(t, c, prefix+"merge")
	const n = 40
	before := ct.posts.Load()
	var wg sync.WaitGroup
	res := make([]sendRes, n)
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf("m%d", i)
			if i == 7 {
				body = "bad \x00 body" // SQS refuses the character
			}
			res[i] = c.send(t.Context(), q, []types.SendMessageBatchRequestEntry{{MessageBody: aws.String(body)}}, len(body))
		})
	}
	wg.Wait()
	calls := ct.posts.Load() - before
	for i, r := range res {
		switch {
		case i == 7 && (r.err != nil || r.failed[0] == nil):
			t.Errorf("request %d (bad body): got err %v, failed %v; want its entry failed", i, r.err, r.failed)
		case i != 7 && (r.err != nil || !r.ok[0]):
			t.Errorf("request %d: got err %v, ok %v", i, r.err, r.ok)
		}
	}
	if calls >= n {
		t.Errorf("%d one-entry sends made %d calls: none merged", n, calls)
	}
	t.Logf("%d one-entry sends in %d calls", n, calls)
	// Exactly the 39 good bodies are in the queue, once each.
	got := map[string]int{}
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < n-1 && time.Now().Before(deadline) {
		r, err := c.api.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(q), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range r.Messages {
			got[aws.ToString(m.Body)]++
		}
	}
	for i := range n {
		if b := fmt.Sprintf("m%d", i); i != 7 && got[b] != 1 {
			t.Errorf("%s received %d times, want once", b, got[b])
		}
	}
	if len(got) != n-1 {
		t.Errorf("received %d distinct bodies, want %d: %v", len(got), n-1, got)
	}
}

// TestMergedSendCancel: a request whose caller's context ends before its
// call is withdrawn, and the caller gets the context's error.
func TestMergedSendCancel(t *testing.T) {
	c, _, _ := scratchCore(t, "m", "")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := c.send(ctx, "http://127.0.0.1:1/none", []types.SendMessageBatchRequestEntry{{MessageBody: aws.String("x")}}, 1)
	if r.err != context.Canceled {
		t.Fatalf("got %v, want context.Canceled", r.err)
	}
}
