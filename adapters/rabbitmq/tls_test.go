package rabbitmq_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/internal/pbtest"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// TestTLS runs amqps:// through a TLS front of the shared broker: a
// listener in the test that terminates TLS (a certificate for
// broker.test from a CA the test makes, a client certificate required)
// and passes the bytes on to the broker's plain AMQP port. The broker of
// scripts/brokers has no TLS listener of its own, so this proves the
// adapter's side (tls_ca, tls_cert, tls_key, tls_server_name and the
// errors), not RabbitMQ's TLS configuration.
func TestTLS(t *testing.T) {
	plain := brokertest.URL(t, "rabbitmq")
	pu, err := url.Parse(plain)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	front := startTLSFront(t, pki, pu.Host)

	base := *pu
	base.Scheme, base.Host, base.RawQuery = "amqps", front, ""
	good := url.Values{
		"tls_ca": {pki.caFile}, "tls_cert": {pki.clientCert}, "tls_key": {pki.clientKey},
		"tls_server_name": {"broker.test"}, "connect_timeout": {"3s"},
	}
	with := func(v url.Values) string {
		u := base
		u.RawQuery = v.Encode()
		return u.String()
	}

	t.Run("round trip", func(t *testing.T) {
		c := open(t, with(good))
		var conn *amqp.Connection
		if !c.Publisher().As(&conn) || conn == nil {
			t.Fatal("As(**amqp091.Connection) failed")
		}
		if st := conn.ConnectionState(); !st.HandshakeComplete || st.ServerName != "broker.test" {
			t.Errorf("TLS state: handshake complete %v, server name %q", st.HandshakeComplete, st.ServerName)
		}
		topic, group := unique("tls"), unique("g")
		declare(t, c, topic, group)
		got := make(chan *message.Message, 1)
		pbtest.Consume(t, c, topic, func(_ context.Context, m *message.Message) error {
			got <- m
			return nil
		}, subscriber.Group(group))
		m := message.New([]byte("over tls"))
		m.Key, m.Metadata = "k", message.Metadata{"h": "v"}
		if err := c.Publisher().Publish(context.Background(), topic, m); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-got:
			if r.ID != m.ID || string(r.Payload) != "over tls" || r.Key != "k" || r.Metadata.Get("h") != "v" {
				t.Errorf("got %s %q key %q md %v, want %s", r.ID, r.Payload, r.Key, r.Metadata, m.ID)
			}
		case <-time.After(pbtest.Wait):
			t.Fatal("message not received over TLS")
		}
	})

	refused := func(name string, v url.Values, want error) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			c, err := polybus.Open(ctx, with(v))
			if err == nil {
				_ = c.Close(ctx)
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, want) {
				t.Fatalf("got %v, want %v", err, want)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s: want a failure at once, not a retry until connect_timeout", d)
			}
		})
	}
	clone := func(edit func(url.Values)) url.Values {
		v := url.Values{}
		for k, vs := range good {
			v[k] = vs
		}
		edit(v)
		return v
	}
	// The system's roots do not know the test's CA.
	refused("unknown CA", clone(func(v url.Values) { v.Del("tls_ca") }), message.ErrPermissionDenied)
	refused("wrong server name", clone(func(v url.Values) { v.Set("tls_server_name", "other.test") }), message.ErrPermissionDenied)
	// TLS 1.3: the server refuses the missing certificate after the
	// client's handshake, with an alert that the first read sees.
	refused("no client certificate", clone(func(v url.Values) { v.Del("tls_cert"); v.Del("tls_key") }), message.ErrPermissionDenied)
	refused("missing CA file", clone(func(v url.Values) { v.Set("tls_ca", filepath.Join(dir, "none.pem")) }), message.ErrInvalidArgument)
	refused("CA file without PEM", clone(func(v url.Values) { v.Set("tls_ca", pki.clientKey+".none") }), message.ErrInvalidArgument)
}

type testPKI struct {
	caFile, clientCert, clientKey string
	server                        tls.Certificate
	pool                          *x509.CertPool
}

// newTestPKI makes a CA, a server certificate for broker.test signed by it
// and a client certificate signed by it, and writes the CA and the client
// pair to dir as PEM.
func newTestPKI(t *testing.T, dir string) *testPKI {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := int64(1)
	sign := func(tmpl, parent *x509.Certificate, pub, priv any) *x509.Certificate {
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey := key()
	ca := sign(&x509.Certificate{
		Subject: pkix.Name{CommonName: "polybus test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, &caKey.PublicKey, caKey)
	srvKey := key()
	srv := sign(&x509.Certificate{
		Subject: pkix.Name{CommonName: "broker.test"}, DNSNames: []string{"broker.test"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &srvKey.PublicKey, caKey)
	cliKey := key()
	cli := sign(&x509.Certificate{
		Subject:  pkix.Name{CommonName: "polybus client"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, &cliKey.PublicKey, caKey)
	cliDER, err := x509.MarshalECPrivateKey(cliKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	p := &testPKI{
		caFile:     write("ca.pem", "CERTIFICATE", ca.Raw),
		clientCert: write("client.pem", "CERTIFICATE", cli.Raw),
		clientKey:  write("client.key", "EC PRIVATE KEY", cliDER),
		server:     tls.Certificate{Certificate: [][]byte{srv.Raw, ca.Raw}, PrivateKey: srvKey, Leaf: srv},
		pool:       pool,
	}
	// A file that exists and holds no certificate.
	if err := os.WriteFile(p.clientKey+".none", []byte("no pem here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startTLSFront listens on 127.0.0.1, terminates TLS (client certificate
// required) and copies each connection to and from target. It returns the
// listener's address; everything stops when the test ends.
func startTLSFront(t *testing.T, pki *testPKI, target string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{pki.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.pool,
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			c.Close()
			return false
		}
		conns[c] = true
		return true
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !track(c) {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if err := c.(*tls.Conn).HandshakeContext(context.Background()); err != nil {
					return
				}
				b, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				if !track(b) {
					return
				}
				defer b.Close()
				done := make(chan struct{})
				go func() {
					_, _ = io.Copy(b, c)
					b.Close()
					close(done)
				}()
				_, _ = io.Copy(c, b)
				c.Close()
				<-done
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
