// Package polybus opens a broker by URL and hands back one [Client] with the
// portable publisher and subscriber over it.
//
//	c, err := polybus.Open(ctx, "embedded://./data")
//	if err != nil { ... }
//	defer c.Close(ctx)
//	err = c.Publisher().Publish(ctx, "orders", message.New([]byte("hi")))
//	err = c.Subscriber().Subscribe(ctx, "orders", handle, subscriber.Group("billing"))
//
// # URLs
//
// Each adapter registers its scheme when its package is imported, so an
// application links in only the broker clients it deploys:
//
//	mem://[name]                        adapters/memory
//	embedded://[path]                   adapters/nats (in-process nats-server)
//	nats://host:4222[,host2:4222]       adapters/nats
//	kafka://host1:9092[,host2:9092]     adapters/kafka
//	amqp://user:pass@host:5672/vhost    adapters/rabbitmq
//	sqs://host:port?region=...          adapters/sqs
//
// Query parameters configure the adapter; each adapter documents its own.
// An unknown scheme, an unknown query parameter or a malformed URL is
// message.ErrInvalidArgument, and the error names what was wrong. Passwords
// in URLs are redacted in every error and log line ([Redact]).
//
// # Errors
//
// Errors carry the codes of package message.
package polybus

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
)

// Opener opens a Client for a URL of its scheme. It must fail within a
// bounded time when the broker is unreachable (honouring ctx).
type Opener func(ctx context.Context, u *url.URL) (*Client, error)

var (
	regMu   sync.RWMutex
	openers = map[string]Opener{}
)

// Register makes an adapter's scheme openable. Adapters call it from init;
// registering a scheme twice panics, as it is a programming error.
func Register(scheme string, o Opener) {
	regMu.Lock()
	defer regMu.Unlock()
	scheme = strings.ToLower(scheme)
	if _, dup := openers[scheme]; dup {
		panic("polybus: scheme registered twice: " + scheme)
	}
	openers[scheme] = o
}

// Schemes returns the registered schemes, sorted.
func Schemes() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	s := make([]string, 0, len(openers))
	for k := range openers {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// OpenOption changes the options of the Client that Open returns, over
// those its adapter chose: package telemetry's Options set the publisher's
// Hook this way.
type OpenOption func(*ClientOptions)

// WithPublisherHook sets the Client's publisher.Options.Hook.
func WithPublisherHook(h publisher.Hook) OpenOption {
	return func(o *ClientOptions) { o.Publisher.Hook = h }
}

// Open opens the broker that rawURL names with the adapter registered for
// its scheme; opts, if any, adjust the Client's publisher and subscriber
// options (its Close stays the adapter's).
func Open(ctx context.Context, rawURL string, opts ...OpenOption) (*Client, error) {
	const op = "open"
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	regMu.RLock()
	o := openers[u.Scheme]
	regMu.RUnlock()
	if o == nil {
		known := strings.Join(Schemes(), ", ")
		if known == "" {
			known = "none: import an adapter package"
		}
		return nil, message.Errorf(message.InvalidArgument, op,
			"unknown scheme %q in %s (known: %s)", u.Scheme, Redact(rawURL), known)
	}
	c, err := o(ctx, u)
	if err != nil || len(opts) == 0 {
		return c, err
	}
	if err := c.reconfigure(opts); err != nil {
		c.Close(ctx)
		return nil, err
	}
	return c, nil
}

// ParseURL parses a broker URL and checks that it has a scheme. Errors
// redact the password.
func ParseURL(rawURL string) (*url.URL, error) {
	const op = "open"
	if strings.TrimSpace(rawURL) == "" {
		return nil, message.Errorf(message.InvalidArgument, op, "empty URL")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, message.Errorf(message.InvalidArgument, op, "malformed URL %s: %v", Redact(rawURL), err)
	}
	if u.Scheme == "" {
		return nil, message.Errorf(message.InvalidArgument, op, "URL %s has no scheme (like mem:// or kafka://)", Redact(rawURL))
	}
	u.Scheme = strings.ToLower(u.Scheme)
	return u, nil
}

// Redact returns rawURL fit to print: a password becomes "xxxxx", so does a
// user name without a password (NATS and others carry tokens there), and so
// do the values of query parameters that hold secrets (token, password,
// secret, access_key, secret_key, session_token, api_key). A URL with none
// of these is returned as written. A string that does not parse as a URL
// has everything between "://" and "@" hidden.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		if i := strings.Index(rawURL, "://"); i >= 0 {
			if j := strings.LastIndex(rawURL, "@"); j > i {
				return rawURL[:i+3] + "xxxxx" + rawURL[j:]
			}
		}
		return rawURL
	}
	changed := false
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx")
		}
		changed = true
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			if secretParams[strings.ToLower(k)] {
				q[k] = []string{"xxxxx"}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	if !changed {
		return rawURL
	}
	return u.String()
}

var secretParams = map[string]bool{
	"token": true, "password": true, "passwd": true, "secret": true, "access_key": true,
	"secret_key": true, "session_token": true, "api_key": true,
}

// Client is an open broker: a publisher and a subscriber over one
// adapter, and the adapter's capabilities.
type Client struct {
	pub   *publisher.Publisher
	sub   *subscriber.Subscriber
	pd    publisher.Driver
	sd    subscriber.Driver
	opts  ClientOptions
	close func() error
	once  sync.Once
	err   error
}

// ClientOptions configures NewClient.
type ClientOptions struct {
	Publisher  publisher.Options
	Subscriber subscriber.Options
	// Close, when set, runs after the publisher and subscriber are closed:
	// it releases what they share (a connection, an embedded server).
	Close func() error
}

// NewClient builds a Client over an adapter's drivers. Adapters call it
// from their Opener; applications can too, to use an adapter without URLs.
func NewClient(pd publisher.Driver, sd subscriber.Driver, opts ClientOptions) (*Client, error) {
	p, err := publisher.New(pd, opts.Publisher)
	if err != nil {
		return nil, err
	}
	s, err := subscriber.New(sd, opts.Subscriber)
	if err != nil {
		return nil, err
	}
	return &Client{pub: p, sub: s, pd: pd, sd: sd, opts: opts, close: opts.Close}, nil
}

// reconfigure rebuilds c's publisher and subscriber with opts applied. It
// runs before Open hands c out, so nothing has used the ones it replaces
// (which hold no goroutine and no driver resource of their own).
func (c *Client) reconfigure(opts []OpenOption) error {
	co := c.opts
	for _, o := range opts {
		o(&co)
	}
	p, err := publisher.New(c.pd, co.Publisher)
	if err != nil {
		return err
	}
	s, err := subscriber.New(c.sd, co.Subscriber)
	if err != nil {
		return err
	}
	c.pub, c.sub, c.opts = p, s, co
	return nil
}

// Publisher returns the client's publisher.
func (c *Client) Publisher() *publisher.Publisher { return c.pub }

// Subscriber returns the client's subscriber.
func (c *Client) Subscriber() *subscriber.Subscriber { return c.sub }

// Capabilities returns the adapter's declared capabilities.
func (c *Client) Capabilities() message.Capabilities { return c.pub.Capabilities() }

// Close closes the subscriber (draining handlers until ctx ends), then the
// publisher, then what they share. It is idempotent.
func (c *Client) Close(ctx context.Context) error {
	c.once.Do(func() {
		errs := []error{c.sub.Close(ctx), c.pub.Close(ctx)}
		if c.close != nil {
			errs = append(errs, c.close())
		}
		c.err = errors.Join(errs...)
	})
	return c.err
}
