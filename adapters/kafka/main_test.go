package kafka_test

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/internal/pbtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var nameSeq atomic.Int64

// unique returns a fresh topic or group name for one test.
func unique(kind string) string {
	return fmt.Sprintf("pbk-%s-%d-%d-%d", kind, os.Getpid(), time.Now().UnixNano()%1e6, nameSeq.Add(1))
}

// kafkaURL returns the broker's URL with extra query parameters, or skips
// the test (fails it under CI=true).
func kafkaURL(t testing.TB, query string) string {
	t.Helper()
	return withQuery(brokertest.URL(t, "kafka"), query)
}

// open opens rawURL and closes the client when the test ends.
func open(t testing.TB, rawURL string) *polybus.Client {
	t.Helper()
	return pbtest.Open(t, rawURL)
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
