package sqs_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"go.uber.org/goleak"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/internal/pbtest"
)

// runPrefix is the queue name prefix of this test run: every test's
// queues are under it, and TestMain deletes them at the end, so that runs
// do not pile queues (and their messages) up on the shared ElasticMQ.
var runPrefix = func() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = 'a' + b[i]%26
	}
	return "t" + string(b) + "-"
}()

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		deleteQueues(runPrefix)
		os.Exit(code)
	}))
}

// deleteQueues deletes every queue whose name starts with prefix on the
// ElasticMQ of POLYBUS_SQS_ENDPOINT.
func deleteQueues(prefix string) {
	endpoint := os.Getenv("POLYBUS_SQS_ENDPOINT")
	if endpoint == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	api := sqs.New(sqs.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("x", "x", "")})
	pages := sqs.NewListQueuesPaginator(api, &sqs.ListQueuesInput{QueueNamePrefix: aws.String(prefix), MaxResults: aws.Int32(1000)})
	for pages.HasMorePages() {
		out, err := pages.NextPage(ctx)
		if err != nil {
			return
		}
		for _, u := range out.QueueUrls {
			_, _ = api.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(u)})
		}
	}
}

var nameSeq atomic.Int64

// unique returns a fresh topic or group name for one test: unique across
// runs too, as ElasticMQ keeps queues across restarts.
func unique(kind string) string {
	return fmt.Sprintf("%s-%d-%d-%d", kind, os.Getpid(), time.Now().UnixNano()%1e9, nameSeq.Add(1))
}

// sqsURL returns the ElasticMQ URL of scripts/brokers with extra query
// parameters, or skips the test (fails it under CI=true).
func sqsURL(t testing.TB, query string) string {
	t.Helper()
	return withQuery(withQuery(brokertest.URL(t, "sqs"), "prefix="+runPrefix), query)
}

// withQuery adds query parameters to rawURL.
func withQuery(rawURL, query string) string {
	if query == "" {
		return rawURL
	}
	if u, err := url.Parse(rawURL); err == nil && u.RawQuery != "" || strings.Contains(rawURL, "?") {
		return rawURL + "&" + query
	}
	return rawURL + "?" + query
}

// open opens rawURL and closes the client when the test ends.
func open(t testing.TB, rawURL string) *polybus.Client {
	t.Helper()
	return pbtest.Open(t, rawURL)
}

// brokersScript returns the path of scripts/brokers, or "".
func brokersScript() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	p := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "brokers")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// restartSQS restarts the ElasticMQ of scripts/brokers.
func restartSQS(ctx context.Context) error {
	script := brokersScript()
	if script == "" {
		return fmt.Errorf("scripts/brokers not found")
	}
	out, err := exec.CommandContext(ctx, script, "restart", "sqs").CombinedOutput()
	if err != nil {
		return fmt.Errorf("scripts/brokers restart sqs: %v\n%s", err, out)
	}
	return nil
}
