package nats_test

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/internal/pbtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m)
}

var nameSeq atomic.Int64

// unique returns a fresh topic or group name for one test.
func unique(kind string) string {
	return fmt.Sprintf("%s-%d-%d", kind, os.Getpid(), nameSeq.Add(1))
}

// embeddedURL returns an embedded:// URL on a fresh directory.
func embeddedURL(t testing.TB) string {
	return "embedded://" + t.TempDir()
}

// open opens rawURL and closes the client when the test ends.
func open(t testing.TB, rawURL string) *polybus.Client {
	t.Helper()
	return pbtest.Open(t, rawURL)
}

// natsServer is a nats-server with JetStream that a test starts and stops,
// listening on a loopback TCP port, so that clients reach it by nats://.
type natsServer struct {
	t    testing.TB
	dir  string
	port int
	srv  *server.Server
}

func startNATS(t testing.TB) *natsServer {
	t.Helper()
	ns := &natsServer{t: t, dir: t.TempDir(), port: server.RANDOM_PORT}
	ns.start()
	t.Cleanup(ns.stop)
	return ns
}

func (ns *natsServer) start() {
	ns.t.Helper()
	opts := &server.Options{
		ServerName: "polybus-test",
		Host:       "127.0.0.1",
		Port:       ns.port,
		JetStream:  true,
		StoreDir:   ns.dir,
		NoSigs:     true,
		NoLog:      true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		ns.t.Fatalf("nats-server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		ns.t.Fatalf("nats-server not ready")
	}
	ns.srv = srv
	ns.port = srv.Addr().(*net.TCPAddr).Port
}

func (ns *natsServer) stop() {
	if ns.srv != nil {
		ns.srv.Shutdown()
		ns.srv.WaitForShutdown()
		ns.srv = nil
	}
}

// restart stops the server and starts a new one on the same port and store.
func (ns *natsServer) restart() {
	ns.stop()
	ns.start()
}

// url returns the server's nats:// URL with extra query parameters.
func (ns *natsServer) url(query string) string {
	u := fmt.Sprintf("nats://127.0.0.1:%d", ns.port)
	if query != "" {
		u += "?" + query
	}
	return u
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
