package nats

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
)

// The URL schemes that this package registers.
const (
	// Scheme is nats://host:4222[,host2:4222]: a NATS server or cluster.
	Scheme = "nats"
	// EmbeddedScheme is embedded://PATH: an in-process nats-server.
	EmbeddedScheme = "embedded"
)

// headroom is what MaxMessageSize leaves of the server's max_payload for
// the headers that polybus adds around a message's own bytes (see the
// package documentation).
const headroom = 1024

func init() {
	polybus.Register(Scheme, openURL)
	polybus.Register(EmbeddedScheme, openURL)
}

func openURL(ctx context.Context, u *url.URL) (*polybus.Client, error) {
	cfg, err := configFromURL(u)
	if err != nil {
		return nil, err
	}
	return Open(ctx, cfg)
}

// Open connects to the NATS servers of cfg, or starts (or shares) the
// embedded server of cfg, and returns a Client over JetStream. It fails
// within cfg.ConnectTimeout (or when ctx ends) when no server answers.
// Closing the client closes the connection and, for the last client of an
// embedded server, shuts the server down.
func Open(ctx context.Context, cfg Config) (*polybus.Client, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	c, err := connect(ctx, &cfg)
	if err != nil {
		return nil, err
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
// the connection, its JetStream context, the streams known so far and,
// for embedded://, the server.
type core struct {
	cfg     Config
	nc      *natsgo.Conn
	js      jetstream.JetStream
	emb     *embedded // nil unless embedded
	caps    message.Capabilities
	state   *connState
	streams *streamCache

	// kv is the members' bucket, once looked up (membersBucket).
	kvMu sync.Mutex
	kv   jetstream.KeyValue

	closeOnce sync.Once
}

func connect(ctx context.Context, cfg *Config) (*core, error) {
	const op = "nats: open"
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()

	state := newConnState()
	dialer := &ctxDialer{ctx: ctx, timeout: cfg.ConnectTimeout}
	opts := []natsgo.Option{
		natsgo.Name("polybus"),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(cfg.ReconnectWait),
		// No buffering while disconnected: a publish (or ack) then fails
		// at once with an Unavailable error instead of waiting, unseen,
		// for a server that may not come back before the caller gives up.
		natsgo.ReconnectBufSize(-1),
		natsgo.Timeout(cfg.ConnectTimeout),
		natsgo.DisconnectErrHandler(func(*natsgo.Conn, error) { state.set(false) }),
		natsgo.ReconnectHandler(func(*natsgo.Conn) { state.set(true) }),
		natsgo.ClosedHandler(func(*natsgo.Conn) { state.set(false) }),
		// A dialer bound to ctx, so that a server that does not answer
		// cannot hold Open past its deadline.
		natsgo.SetCustomDialer(dialer),
	}
	var emb *embedded
	var url string
	if cfg.Embedded {
		var err error
		if emb, err = acquireEmbedded(cfg.StoreDir, cfg.Listen); err != nil {
			return nil, err
		}
		opts = append(opts, natsgo.InProcessServer(emb.srv))
	} else {
		url = joinServers(cfg.Servers)
		opts = authOptions(cfg, opts)
	}
	nc, err := dial(ctx, url, opts)
	if err != nil {
		if emb != nil {
			emb.release()
		}
		if ctx.Err() != nil {
			return nil, message.Errorf(message.Unavailable, op, "no NATS server answered at %s within %s", redactServers(cfg.Servers), cfg.ConnectTimeout)
		}
		return nil, message.Wrap(ErrorCode(err), op, err)
	}
	// From here on dials are for reconnection, which ctx must not bound.
	dialer.opened.Store(true)

	c := &core{cfg: *cfg, nc: nc, emb: emb, state: state}
	fail := func(err error) (*core, error) {
		c.close()
		return nil, err
	}
	c.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout),
		// The portable publisher bounds what is in flight (batch size
		// times batches in flight, per topic); a stall here would only
		// turn a slow server into errors.
		jetstream.WithPublishAsyncMaxPending(1<<16),
		// No async ack or error handler: the publisher reuses a message
		// value across a batch (see envelope), which a handler would see.
	)
	if err != nil {
		return fail(message.Wrap(message.Unknown, op, err))
	}
	if _, err := c.js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fail(message.Errorf(message.Unimplemented, op, "JetStream is not enabled on %s: %w", redactServers(cfg.Servers), err))
		}
		return fail(coded(op, err))
	}
	maxPayload := int(nc.MaxPayload())
	c.caps = message.Capabilities{
		Name:        "nats",
		OrderPerKey: true,
		// Per-partition pinned consumers: see partsub.go.
		OrderPerKeyScaleOut: true,
		Rebalance:           rebalanceBound,
		ConsumerGroups:      true,
		FanOut:              true,
		Retained:            true,
		Nack:                true,
		NackDelay:           true,
		AttemptCount:        true,
		MaxMessageSize:      max(maxPayload-headroom, 1),
		Persistent:          cfg.Storage == FileStorage,
	}
	c.streams = &streamCache{c: c, m: map[string]*streamEntry{}}
	return c, nil
}

// dial runs nats.Connect, which takes no context, and gives up when ctx
// ends; a connection that arrives later is closed.
func dial(ctx context.Context, url string, opts []natsgo.Option) (*natsgo.Conn, error) {
	type result struct {
		nc  *natsgo.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		nc, err := natsgo.Connect(url, opts...)
		ch <- result{nc, err}
	}()
	select {
	case r := <-ch:
		return r.nc, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// close closes the connection and releases the embedded server. It runs
// once, as the client's last step.
func (c *core) close() error {
	c.closeOnce.Do(func() {
		c.nc.Close()
		if c.emb != nil {
			c.emb.release()
		}
	})
	return nil
}

// as implements the drivers' As.
func (c *core) as(target any) bool {
	switch t := target.(type) {
	case **natsgo.Conn:
		*t = c.nc
	case *jetstream.JetStream:
		*t = c.js
	case **server.Server:
		if c.emb == nil {
			return false
		}
		*t = c.emb.srv
	default:
		return false
	}
	return true
}

// ctxDialer dials within Open's context until the connection is open, and
// within its timeout alone afterwards, for reconnections.
type ctxDialer struct {
	ctx     context.Context
	timeout time.Duration
	opened  atomic.Bool
}

func (d *ctxDialer) Dial(network, address string) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	if d.opened.Load() {
		return nd.Dial(network, address)
	}
	return nd.DialContext(d.ctx, network, address)
}

func joinServers(servers []string) string { return strings.Join(servers, ",") }

func redactServers(servers []string) string {
	if len(servers) == 0 {
		return "the embedded server"
	}
	r := make([]string, len(servers))
	for i, srv := range servers {
		r[i] = polybus.Redact(srv)
	}
	return strings.Join(r, ",")
}

// authOptions adds cfg's credentials and TLS settings to opts.
func authOptions(cfg *Config, opts []natsgo.Option) []natsgo.Option {
	switch {
	case cfg.User != "":
		opts = append(opts, natsgo.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, natsgo.Token(cfg.Token))
	case cfg.CredsFile != "":
		opts = append(opts, natsgo.UserCredentials(cfg.CredsFile))
	}
	if cfg.TLS {
		opts = append(opts, natsgo.Secure(&tls.Config{InsecureSkipVerify: cfg.TLSInsecure, MinVersion: tls.VersionTLS12}))
		if cfg.TLSCA != "" {
			opts = append(opts, natsgo.RootCAs(cfg.TLSCA))
		}
		if cfg.TLSCert != "" {
			opts = append(opts, natsgo.ClientCert(cfg.TLSCert, cfg.TLSKey))
		}
	}
	return opts
}

// connState follows the connection: up or not, and a channel closed at each
// change, which a blocked Receive selects on.
type connState struct {
	mu      sync.Mutex
	up      bool
	changed chan struct{}
}

func newConnState() *connState { return &connState{up: true, changed: make(chan struct{})} }

func (s *connState) set(up bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.up != up {
		s.up = up
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

func (s *connState) get() (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up, s.changed
}
