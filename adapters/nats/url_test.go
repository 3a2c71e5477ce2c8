package nats_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus"
	polynats "github.com/polybus/polybus/adapters/nats"
	"github.com/polybus/polybus/message"
)

func TestConfigFromURL(t *testing.T) {
	cases := []struct {
		url  string
		want func(c polynats.Config) bool
	}{
		{"embedded://", func(c polynats.Config) bool { return c.Embedded && c.StoreDir == polynats.DefaultStoreDir }},
		{"embedded://data", func(c polynats.Config) bool { return c.StoreDir == "data" }},
		{"embedded://./rel/dir", func(c polynats.Config) bool { return c.StoreDir == "./rel/dir" }},
		{"embedded://../up", func(c polynats.Config) bool { return c.StoreDir == "../up" }},
		{"embedded:///abs/path", func(c polynats.Config) bool { return c.StoreDir == "/abs/path" }},
		{"embedded:///tmp/with%20space", func(c polynats.Config) bool { return c.StoreDir == "/tmp/with space" }},
		{"embedded:rel", func(c polynats.Config) bool { return c.StoreDir == "rel" }},
		{"embedded:///x?listen=127.0.0.1:0&ack_wait=5s&storage=memory", func(c polynats.Config) bool {
			return c.Listen == "127.0.0.1:0" && c.AckWait == 5*time.Second && c.Storage == polynats.MemoryStorage
		}},
		{"nats://h1", func(c polynats.Config) bool { return len(c.Servers) == 1 && c.Servers[0] == "nats://h1:4222" }},
		{"nats://h1:4223,h2:4224/", func(c polynats.Config) bool {
			return len(c.Servers) == 2 && c.Servers[0] == "nats://h1:4223" && c.Servers[1] == "nats://h2:4224"
		}},
		{"nats://u:p%40ss@h", func(c polynats.Config) bool { return c.User == "u" && c.Password == "p@ss" && c.Token == "" }},
		{"nats://s3cr3t@h", func(c polynats.Config) bool { return c.Token == "s3cr3t" && c.User == "" }},
		{"nats://h?token=t&connect_timeout=2s&reconnect_wait=10ms&replicas=3&max_age=1h&duplicates=1m&confirm_acks=true&publish_timeout=3s",
			func(c polynats.Config) bool {
				return c.Token == "t" && c.ConnectTimeout == 2*time.Second && c.ReconnectWait == 10*time.Millisecond &&
					c.Replicas == 3 && c.MaxAge == time.Hour && c.Duplicates == time.Minute && c.ConfirmAcks && c.PublishTimeout == 3*time.Second
			}},
		{"nats://h?tls_ca=/ca.pem", func(c polynats.Config) bool { return c.TLS && c.TLSCA == "/ca.pem" }},
		{"nats://h?max_age=30s", func(c polynats.Config) bool { return c.Duplicates == 30*time.Second }},
		{"nats://h", func(c polynats.Config) bool {
			return c.ConnectTimeout == 5*time.Second && c.AckWait == 30*time.Second && c.Duplicates == 2*time.Minute &&
				c.Storage == polynats.FileStorage && c.Replicas == 1
		}},
	}
	for _, tc := range cases {
		c, err := polynats.ConfigFromURL(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if !tc.want(c) {
			t.Errorf("%s: unexpected config %+v", tc.url, c)
		}
	}
}

func TestBadURLs(t *testing.T) {
	for _, u := range []string{
		"embedded://x?bogus=1",
		"embedded://x?token=t",                 // a nats:// parameter
		"embedded://x?replicas=3",              // nats only
		"embedded://user@x",                    // no user for embedded
		"embedded://x?listen=nohostport",       // not host:port
		"embedded://x?storage=disk",            // unknown storage
		"embedded://x?ack_wait=soon",           // not a duration
		"embedded://x?ack_wait=1s&ack_wait=2s", // twice
		"nats://h?listen=127.0.0.1:1",          // embedded only
		"nats://h/path",                        // nats URLs have no path
		"nats://",                              // no host
		"nats://h1,,h2",                        // empty host
		"nats://h?tls_cert=/c.pem",             // cert without key
		"nats://u:p@h?creds=/x.creds",          // two kinds of credentials
		"nats://h?max_age=1m&duplicates=2m",    // window over the age limit
		"nats://h?replicas=-1",
		"nats://h?confirm_acks=maybe",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := polybus.Open(ctx, u)
		cancel()
		if !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want InvalidArgument", u, err)
		}
	}
}

func TestPasswordRedacted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := polybus.Open(ctx, "nats://user:hunter2@127.0.0.1:1?connect_timeout=500ms")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("got %v: want an error without the password", err)
	}
}

// TestUnreachable checks that Open fails with Unavailable within
// connect_timeout, for a port that refuses and for a server that accepts
// connections and never says a word.
func TestUnreachable(t *testing.T) {
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close()

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		silent.Close()
		for c := range accepted {
			c.Close()
		}
	}()

	for _, addr := range []string{refusedAddr, silent.Addr().String()} {
		u := "nats://" + addr + "?connect_timeout=700ms"
		start := time.Now()
		_, err := polybus.Open(context.Background(), u)
		took := time.Since(start)
		if !errors.Is(err, message.ErrUnavailable) {
			t.Errorf("%s: got %v, want Unavailable", u, err)
		}
		if took > 2*time.Second {
			t.Errorf("%s: Open took %s with connect_timeout=700ms", u, took)
		}
	}
}

// TestNoJetStream checks that a server without JetStream is refused at Open
// with Unimplemented.
func TestNoJetStream(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	_, err = polybus.Open(context.Background(), srv.ClientURL()+"?connect_timeout=2s")
	if !errors.Is(err, message.ErrUnimplemented) {
		t.Fatalf("got %v, want Unimplemented", err)
	}
}

// TestEmbeddedShared checks that two opens of one store share the server,
// that a conflicting listen is refused, that the server stops with the last
// client and that the store opens again afterwards with its data.
func TestEmbeddedShared(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c1, err := polybus.Open(ctx, "embedded://"+dir+"?listen=127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := polybus.Open(ctx, "embedded://"+dir) // same server, listen omitted
	if err != nil {
		t.Fatal(err)
	}
	var s1, s2 *server.Server
	if !c1.Publisher().As(&s1) || !c2.Subscriber().As(&s2) || s1 != s2 {
		t.Fatalf("the two clients do not share one server: %p %p", s1, s2)
	}
	if s1.Addr() == nil {
		t.Fatalf("listen=127.0.0.1:0 gave no TCP listener")
	}
	// A plain NATS client reaches it over TCP.
	nc, err := natsgo.Connect(s1.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if _, err := polybus.Open(ctx, "embedded://"+dir+"?listen=127.0.0.1:1"); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("conflicting listen: got %v, want InvalidArgument", err)
	}
	var conn *natsgo.Conn
	var js jetstream.JetStream
	if !c1.Publisher().As(&conn) || !c1.Subscriber().As(&js) || conn == nil || js == nil {
		t.Errorf("As(**nats.Conn) / As(*jetstream.JetStream) failed")
	}
	publish(t, c1, "shared", message.New([]byte("kept")))
	if err := c1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if s1.Running() != true {
		t.Fatalf("server stopped while a client still has it")
	}
	if err := c2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if s1.Running() {
		t.Fatalf("server still running after its last client closed")
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Fatalf("no jetstream directory in the store: %v", err)
	}
	c3 := open(t, "embedded://"+dir)
	s := newSink()
	subscribe(t, c3, "shared", s.handle)
	if got := s.waitCount(t, 1); string(got[0].Payload) != "kept" {
		t.Fatalf("got %q after reopening", got[0].Payload)
	}
}

// TestEmbeddedRelativePaths opens embedded://, embedded://./rel and
// embedded://rel from a temporary working directory and checks where the
// store lands.
func TestEmbeddedRelativePaths(t *testing.T) {
	wd := t.TempDir()
	t.Chdir(wd)
	for _, tc := range []struct{ url, dir string }{
		{"embedded://", ".polybus"},
		{"embedded://./rel", "rel"},
		{"embedded://plain/sub", "plain/sub"},
	} {
		c := open(t, tc.url)
		publish(t, c, "where", message.New([]byte("x")))
		if _, err := os.Stat(filepath.Join(wd, tc.dir, "jetstream")); err != nil {
			t.Errorf("%s: no store in %s: %v", tc.url, tc.dir, err)
		}
	}
}
