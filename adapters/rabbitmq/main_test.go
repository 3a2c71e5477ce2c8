package rabbitmq_test

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/rabbitmq"
	"github.com/polybus/polybus/internal/pbtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	removeDeclared()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// removeDeclared deletes the queues and exchanges that the tests declared
// on the shared broker: quorum queues left behind slow its restarts.
// POLYBUS_RABBITMQ_KEEP=1 keeps them, to look at.
func removeDeclared() {
	u := os.Getenv("POLYBUS_AMQP_URL")
	if u == "" || os.Getenv("POLYBUS_RABBITMQ_KEEP") == "1" {
		return
	}
	exchanges, queues := rabbitmq.Declared()
	if len(exchanges)+len(queues) == 0 {
		return
	}
	conn, err := amqp.Dial(u)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cleanup: %v\n", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			if ch, err = conn.Channel(); err != nil {
				return
			}
		}
	}
	for _, e := range exchanges {
		if err := ch.ExchangeDelete(e, false, false); err != nil {
			if ch, err = conn.Channel(); err != nil {
				return
			}
		}
	}
}

var nameSeq atomic.Int64

// unique returns a fresh topic or group name for one test.
func unique(kind string) string {
	return fmt.Sprintf("%s-%d-%d-%d", kind, os.Getpid(), time.Now().UnixNano()%1e6, nameSeq.Add(1))
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
