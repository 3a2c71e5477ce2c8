package rabbitmq

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
)

// The URL schemes that this package registers.
const (
	// Scheme is amqp://user:pass@host:5672/vhost.
	Scheme = "amqp"
	// TLSScheme is amqps://user:pass@host:5671/vhost, AMQP over TLS.
	TLSScheme = "amqps"
)

func init() {
	polybus.Register(Scheme, openURL)
	polybus.Register(TLSScheme, openURL)
}

func openURL(ctx context.Context, u *url.URL) (*polybus.Client, error) {
	cfg, err := configFromURL(u)
	if err != nil {
		return nil, err
	}
	return Open(ctx, cfg)
}

// Open connects to the broker of cfg and returns a Client over it. It fails
// within cfg.ConnectTimeout (or when ctx ends) with message.ErrUnavailable
// when no broker answers, and at once with message.ErrPermissionDenied when
// the broker refuses the credentials or the vhost.
func Open(ctx context.Context, cfg Config) (*polybus.Client, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	c, err := newCore(&cfg)
	if err != nil {
		return nil, err
	}
	if _, err := c.connection(ctx); err != nil {
		c.close()
		return nil, err
	}
	if cfg.DeadLetterTopic != "" {
		if err := c.declareDeadLetter(ctx); err != nil {
			c.close()
			return nil, err
		}
	}
	client, err := polybus.NewClient(&pubDriver{c: c}, &subDriver{c: c}, polybus.ClientOptions{
		Publisher:  cfg.Publisher,
		Subscriber: cfg.Subscriber,
		Close:      c.close,
	})
	if err != nil {
		c.close()
		return nil, err
	}
	return client, nil
}

// core is what the publisher and subscriber drivers of one client share:
// one AMQP connection, re-dialled when lost, and the publisher's channels.
type core struct {
	cfg  Config
	caps message.Capabilities
	tls  *tls.Config
	pool *chanPool
	// dialURL is the URL given to amqp091-go: cfg.URL, or for amqps the
	// same with scheme amqp and the port explicit, as dial makes the TLS
	// connection itself.
	dialURL string

	mu      sync.Mutex
	conn    *amqp.Connection
	gen     uint64        // incremented at each new connection
	lost    chan struct{} // closed when conn is lost
	lastErr error         // the last dial failure, while waiting
	retryAt time.Time     // no dial before this after a failure
	wait    time.Duration // the current pause between dials
	closed  bool
	done    chan struct{} // closed by close
	dialing chan struct{} // non-nil while a dial runs

	bg sync.WaitGroup // background goroutines (connection watcher, drains)
}

func newCore(cfg *Config) (*core, error) {
	c := &core{cfg: *cfg, done: make(chan struct{}), dialURL: cfg.URL}
	u, _ := url.Parse(cfg.URL)
	if strings.EqualFold(u.Scheme, TLSScheme) {
		tc, err := tlsConfig(cfg, u)
		if err != nil {
			return nil, err
		}
		c.tls = tc
		plain := *u
		plain.Scheme = Scheme
		if u.Port() == "" {
			plain.Host = net.JoinHostPort(u.Hostname(), "5671")
		}
		c.dialURL = plain.String()
	}
	attempts := cfg.QueueType == Quorum || !cfg.Unordered
	c.caps = message.Capabilities{
		Name:                "rabbitmq",
		OrderPerKey:         true,
		OrderPerKeyScaleOut: !cfg.Unordered,
		ConsumerGroups:      true,
		FanOut:              true,
		Retained:            false,
		Nack:                true,
		NackDelay:           true,
		MaxNackDelay:        delayBuckets[len(delayBuckets)-1],
		AttemptCount:        attempts,
		MaxMessageSize:      cfg.MaxMessageSize,
		NativeDeadLetter:    cfg.DeliveryLimit > 0 && cfg.DeadLetterTopic != "",
		Persistent:          true,
	}
	if !cfg.Unordered {
		c.caps.Rebalance = rebalanceBound(cfg)
	}
	c.pool = &chanPool{c: c}
	return c, nil
}

// rebalanceBound is the declared Rebalance: a few rebalance rounds, each a
// count of the members and the hand-over of partitions, and time for the
// hand-overs' in-flight handlers. A process that dies has its connection
// closed by its kernel, which the broker sees at once; a network cut is
// seen only after two missed heartbeats, which the bound does not cover.
func rebalanceBound(cfg *Config) time.Duration {
	return 4*cfg.RebalanceInterval + 8*time.Second
}

func tlsConfig(cfg *Config, u *url.URL) (*tls.Config, error) {
	const op = "rabbitmq: open"
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
	if cfg.TLSServerName != "" {
		tc.ServerName = cfg.TLSServerName
	}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, message.Errorf(message.InvalidArgument, op, "tls_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, message.Errorf(message.InvalidArgument, op, "tls_ca %s: no PEM certificate in it", cfg.TLSCA)
		}
		tc.RootCAs = pool
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, message.Errorf(message.InvalidArgument, op, "tls_cert/tls_key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// connection returns the open connection, dialling one when there is none.
// After a failed dial, calls fail with the same error, without dialling,
// until a backoff pause has passed: the callers' retries never storm the
// broker. A refused login (PermissionDenied) is no reason to wait less.
func (c *core) connection(ctx context.Context) (*amqp.Connection, error) {
	const op = "rabbitmq: connect"
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, message.Errorf(message.Closed, op, "client closed")
		}
		if c.conn != nil && !c.conn.IsClosed() {
			conn := c.conn
			c.mu.Unlock()
			return conn, nil
		}
		if c.dialing != nil {
			wait := c.dialing
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if c.lastErr != nil && time.Now().Before(c.retryAt) {
			err := c.lastErr
			c.mu.Unlock()
			return nil, err
		}
		c.dialing = make(chan struct{})
		c.mu.Unlock()

		conn, err := c.dial(ctx)

		c.mu.Lock()
		close(c.dialing)
		c.dialing = nil
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				c.mu.Unlock()
				return nil, err
			}
			c.lastErr = err
			c.wait = min(max(2*c.wait, c.cfg.ReconnectWait/10), c.cfg.ReconnectWait)
			c.retryAt = time.Now().Add(c.wait)
			c.mu.Unlock()
			return nil, err
		}
		if c.closed {
			c.mu.Unlock()
			_ = conn.Close()
			return nil, message.Errorf(message.Closed, op, "client closed")
		}
		c.lastErr, c.wait = nil, 0
		c.conn = conn
		c.gen++
		lost := make(chan struct{})
		c.lost = lost
		notify := conn.NotifyClose(make(chan *amqp.Error, 1))
		c.bg.Go(func() {
			// The notification channel is closed after the error (if any)
			// is sent, on every shutdown.
			for range notify {
			}
			close(lost)
		})
		c.mu.Unlock()
		return conn, nil
	}
}

// current returns the connection generation and its lost channel; lost is
// nil when there is no connection.
func (c *core) current() (uint64, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil || c.conn.IsClosed() {
		return c.gen, nil
	}
	return c.gen, c.lost
}

// dial opens one connection within ConnectTimeout and ctx.
func (c *core) dial(ctx context.Context) (*amqp.Connection, error) {
	const op = "rabbitmq: connect"
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	type result struct {
		conn *amqp.Connection
		err  error
	}
	ch := make(chan result, 1)
	var tc *alertConn // the TLS connection, when amqps
	cfg := amqp.Config{
		Heartbeat:  c.cfg.Heartbeat,
		Properties: amqp.Table{"connection_name": "polybus", "product": "polybus"},
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Deadline: deadline}
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The TLS and AMQP handshakes must finish by the deadline too;
			// amqp091-go clears it once the connection is open.
			_ = conn.SetDeadline(deadline)
			if c.tls == nil {
				return conn, nil
			}
			t := tls.Client(conn, c.tls)
			if err := t.HandshakeContext(ctx); err != nil {
				_ = conn.Close()
				return nil, err
			}
			tc = &alertConn{Conn: t}
			return tc, nil
		},
	}
	go func() {
		conn, err := amqp.DialConfig(c.dialURL, cfg)
		if err != nil && tc != nil {
			// With TLS 1.3 a server that refuses the client's certificate
			// says so in an alert after the handshake, which amqp091-go
			// reports as a closed connection.
			if rerr := tc.readErr(); certificateRefused(rerr) {
				err = rerr
			}
		}
		ch <- result{conn, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		// The dial's own deadline ends it soon; close what it returns.
		c.bg.Go(func() {
			if r := <-ch; r.conn != nil {
				_ = r.conn.Close()
			}
		})
		if ctx.Err() == context.DeadlineExceeded {
			return nil, message.Errorf(message.Unavailable, op, "no RabbitMQ broker answered at %s within %s", polybus.Redact(c.cfg.URL), c.cfg.ConnectTimeout)
		}
		return nil, ctx.Err()
	}
	if r.err != nil {
		// A refused login is final; every other failure to connect (a
		// refused or reset connection, a handshake that timed out or broke
		// off) is worth another try.
		if tlsRefused(r.err) {
			return nil, message.Errorf(message.PermissionDenied, op, "TLS handshake with %s failed on a certificate (tls_ca, tls_cert, tls_server_name): %w", polybus.Redact(c.cfg.URL), r.err)
		}
		if ErrorCode(r.err) == message.PermissionDenied {
			return nil, message.Errorf(message.PermissionDenied, op, "the broker at %s refused the login or vhost: %w", polybus.Redact(c.cfg.URL), r.err)
		}
		return nil, message.Errorf(message.Unavailable, op, "%s: %w", polybus.Redact(c.cfg.URL), r.err)
	}
	return r.conn, nil
}

// channel opens a channel on the connection.
func (c *core) channel(ctx context.Context) (*amqp.Channel, uint64, error) {
	const op = "rabbitmq: channel"
	conn, err := c.connection(ctx)
	if err != nil {
		return nil, 0, err
	}
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	ch, err := conn.Channel()
	if err != nil {
		return nil, 0, message.Wrap(message.Unavailable, op, err)
	}
	return ch, gen, nil
}

// close closes the connection and waits for the background goroutines. It
// runs once, as the client's last step.
func (c *core) close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	conn := c.conn
	c.mu.Unlock()
	c.pool.closeAll()
	if conn != nil {
		_ = conn.CloseDeadline(time.Now().Add(5 * time.Second))
	}
	c.bg.Wait()
	return nil
}

// as implements the drivers' As.
func (c *core) as(target any) bool {
	t, ok := target.(**amqp.Connection)
	if !ok {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	*t = c.conn
	return true
}

// alertConn is a TLS connection that remembers its first read error.
// amqp091-go's Connection.ConnectionState reaches the embedded *tls.Conn.
type alertConn struct {
	*tls.Conn
	mu  sync.Mutex
	err error
}

func (a *alertConn) Read(p []byte) (int, error) {
	n, err := a.Conn.Read(p)
	if err != nil {
		a.mu.Lock()
		if a.err == nil {
			a.err = err
		}
		a.mu.Unlock()
	}
	return n, err
}

func (a *alertConn) readErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}
