package rabbitmq_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/polybus/polybus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var nameSeq atomic.Int64

// unique returns a fresh topic or group name for one test.
func unique(kind string) string {
	return fmt.Sprintf("%s-%d-%d-%d", kind, os.Getpid(), time.Now().UnixNano()%1e6, nameSeq.Add(1))
}

// open opens rawURL and closes the client when the test ends.
func open(t testing.TB, rawURL string) *polybus.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := polybus.Open(ctx, rawURL)
	if err != nil {
		t.Fatalf("open %s: %v", polybus.Redact(rawURL), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return c
}

// withQuery adds query parameters to rawURL.
func withQuery(rawURL, query string) string {
	if query == "" {
		return rawURL
	}
	if u, err := url.Parse(rawURL); err == nil && u.RawQuery != "" {
		return rawURL + "&" + query
	}
	if strings.Contains(rawURL, "?") {
		return rawURL + "&" + query
	}
	return rawURL + "?" + query
}
