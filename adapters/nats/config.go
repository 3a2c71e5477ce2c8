package nats

import (
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
	"github.com/polybus/polybus/urlparam"
)

// Storage is where the streams that polybus creates keep their messages.
type Storage string

const (
	// FileStorage keeps messages on disk: they survive a server restart.
	FileStorage Storage = "file"
	// MemoryStorage keeps messages in the server's memory: faster, lost
	// when the server stops.
	MemoryStorage Storage = "memory"
)

// DefaultStoreDir is the embedded server's storage directory when none is
// given: relative to the working directory.
const DefaultStoreDir = "./.polybus"

// Config configures a NATS client: the connection (to servers, or to an
// embedded server that polybus starts), the streams and consumers that
// polybus creates, and the portable publisher and subscriber. A URL fills it
// through [ConfigFromURL]; Go code can fill it directly and call [Open].
// Every field documents its default, which the zero value gets.
type Config struct {
	// Embedded starts an in-process nats-server with JetStream and file
	// storage in StoreDir instead of connecting to Servers.
	Embedded bool
	// StoreDir is the embedded server's storage directory. Default
	// DefaultStoreDir. Opens of one directory in one process share one
	// server; another process cannot open it while one has it open.
	StoreDir string
	// Listen, when set, lets the embedded server also accept TCP clients
	// on host:port ("127.0.0.1:4222"; port 0 picks a free port). Default:
	// no listener, in-process clients only.
	Listen string

	// Servers are the URLs of the NATS servers to connect to, such as
	// "nats://host:4222". Required unless Embedded.
	Servers []string
	// User and Password authenticate with a user name and password; Token
	// with a token; CredsFile with a JWT and NKey seed file (.creds).
	User, Password string
	Token          string
	CredsFile      string
	// TLS turns TLS on. TLSCA names a PEM file of root CAs to trust
	// (default: the system's), TLSCert and TLSKey a client certificate and
	// key; TLSInsecure skips verification of the server's certificate.
	// Setting any of TLSCA, TLSCert, TLSKey or TLSInsecure implies TLS.
	TLS                    bool
	TLSCA, TLSCert, TLSKey string
	TLSInsecure            bool
	// ConnectTimeout bounds Open's connection to the servers, handshake
	// and JetStream check included. Default 5s.
	ConnectTimeout time.Duration
	// ReconnectWait is the pause between reconnection attempts after the
	// connection is lost; reconnection never gives up. Default 1s.
	ReconnectWait time.Duration

	// Replicas is the replica count of the streams that polybus creates.
	// Default 1. The embedded server takes only 1.
	Replicas int
	// Storage of the streams that polybus creates. Default FileStorage.
	Storage Storage
	// MaxAge is how long the streams that polybus creates keep a message.
	// Default 0: no age limit.
	MaxAge time.Duration
	// Duplicates is the streams' deduplication window: a message whose ID
	// the stream has stored within it is not stored again. Default 2m.
	Duplicates time.Duration

	// Partitions is the partition count of the streams that polybus
	// creates (see the package documentation, "Partitions"): the most
	// subscribers of one group that share its work. A stream keeps the
	// count it was created with; clients read it from the stream.
	// Default DefaultPartitions (8); at most 256.
	Partitions int

	// AckWait is how long the server waits for an ack before it
	// redelivers, for subscriptions whose AckDeadline is 0. Default 30s.
	AckWait time.Duration
	// ConfirmAcks makes each ack and nack wait for the server's reply
	// (JetStream's double ack) instead of only for the server to have
	// received it. Default false; see the package documentation.
	ConfirmAcks bool
	// PublishTimeout bounds the wait for one message's PubAck. Default 30s.
	PublishTimeout time.Duration

	// Publisher and Subscriber configure the portable publisher and
	// subscriber of the client.
	Publisher  publisher.Options
	Subscriber subscriber.Options
}

func (c *Config) fill() error {
	const op = "nats: open"
	bad := func(format string, args ...any) error {
		return message.Errorf(message.InvalidArgument, op, format, args...)
	}
	if c.ConnectTimeout < 0 || c.ReconnectWait < 0 || c.MaxAge < 0 || c.Duplicates < 0 || c.AckWait < 0 || c.PublishTimeout < 0 || c.Replicas < 0 || c.Partitions < 0 {
		return bad("negative duration or replica count in config")
	}
	if c.Embedded {
		if len(c.Servers) > 0 {
			return bad("Embedded and Servers are exclusive")
		}
		if c.StoreDir == "" {
			c.StoreDir = DefaultStoreDir
		}
		if c.Replicas > 1 {
			return bad("the embedded server is one node: replicas must be 1, not %d", c.Replicas)
		}
		if c.Listen != "" {
			if _, _, err := net.SplitHostPort(c.Listen); err != nil {
				return bad("listen %q: want host:port, such as 127.0.0.1:4222", c.Listen)
			}
		}
	} else {
		if len(c.Servers) == 0 {
			return bad("no servers: set Servers, or Embedded for an in-process server")
		}
		if c.StoreDir != "" || c.Listen != "" {
			return bad("StoreDir and Listen apply only to an embedded server")
		}
	}
	if c.TLSCA != "" || c.TLSCert != "" || c.TLSKey != "" || c.TLSInsecure {
		c.TLS = true
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return bad("tls_cert and tls_key go together")
	}
	if c.Token != "" && (c.User != "" || c.CredsFile != "") || c.User != "" && c.CredsFile != "" {
		return bad("choose one of user and password, token, or creds")
	}
	switch c.Storage {
	case "":
		c.Storage = FileStorage
	case FileStorage, MemoryStorage:
	default:
		return bad("storage %q: want file or memory", c.Storage)
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	switch {
	case c.Partitions == 0:
		c.Partitions = DefaultPartitions
	case c.Partitions > maxPartitions:
		return bad("partitions %d: at most %d", c.Partitions, maxPartitions)
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.ReconnectWait == 0 {
		c.ReconnectWait = time.Second
	}
	switch {
	case c.Duplicates == 0:
		// NATS's default, within the age limit, which it must not pass.
		c.Duplicates = 2 * time.Minute
		if c.MaxAge > 0 {
			c.Duplicates = min(c.Duplicates, c.MaxAge)
		}
	case c.MaxAge > 0 && c.Duplicates > c.MaxAge:
		return bad("duplicates window %s is longer than max_age %s", c.Duplicates, c.MaxAge)
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 30 * time.Second
	}
	return nil
}

// ConfigFromURL returns the Config that an embedded:// or nats:// URL
// describes; the package documentation lists the URL forms and their
// query parameters. An unknown parameter is message.ErrInvalidArgument.
func ConfigFromURL(rawURL string) (Config, error) {
	u, err := polybus.ParseURL(rawURL)
	if err != nil {
		return Config{}, err
	}
	return configFromURL(u)
}

func configFromURL(u *url.URL) (Config, error) {
	const op = "nats: open"
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, message.Errorf(message.InvalidArgument, op, format, args...)
	}
	var c Config
	p := urlparam.New(op, u)
	switch u.Scheme {
	case EmbeddedScheme:
		if u.User != nil {
			return bad("%s: an embedded URL takes no user", polybus.Redact(u.String()))
		}
		c.Embedded = true
		// embedded://PATH: the host and the path together are the
		// directory, so that embedded://data, embedded://./data and
		// embedded:///abs/data all read as written.
		if u.Opaque != "" {
			var err error
			if c.StoreDir, err = url.PathUnescape(u.Opaque); err != nil {
				return bad("%s: %v", u, err)
			}
		} else {
			c.StoreDir = u.Host + u.Path
		}
		c.Listen = p.String("listen", "")
	case Scheme:
		if u.Path != "" && u.Path != "/" || u.Opaque != "" {
			return bad("%s: a nats URL has no path", polybus.Redact(u.String()))
		}
		if u.Host == "" {
			return bad("%s: no host", polybus.Redact(u.String()))
		}
		for _, h := range strings.Split(u.Host, ",") {
			if h == "" {
				return bad("%s: empty host in list", polybus.Redact(u.String()))
			}
			if _, _, err := net.SplitHostPort(h); err != nil {
				h = net.JoinHostPort(strings.Trim(h, "[]"), "4222")
			}
			c.Servers = append(c.Servers, "nats://"+h)
		}
		if u.User != nil {
			if pw, ok := u.User.Password(); ok {
				c.User, c.Password = u.User.Username(), pw
			} else {
				// nats://TOKEN@host, as NATS's own clients read it.
				c.Token = u.User.Username()
			}
		}
		if tok := p.String("token", ""); tok != "" {
			c.Token = tok
		}
		c.CredsFile = p.String("creds", "")
		c.TLS = p.Bool("tls", false)
		c.TLSCA = p.String("tls_ca", "")
		c.TLSCert = p.String("tls_cert", "")
		c.TLSKey = p.String("tls_key", "")
		c.TLSInsecure = p.Bool("tls_insecure", false)
		c.ConnectTimeout = p.Duration("connect_timeout", 0)
		c.ReconnectWait = p.Duration("reconnect_wait", 0)
		c.Replicas = p.Int("replicas", 0)
	default:
		return bad("scheme %q is not %s or %s", u.Scheme, EmbeddedScheme, Scheme)
	}
	c.Storage = Storage(p.OneOf("storage", "", string(FileStorage), string(MemoryStorage)))
	c.MaxAge = p.Duration("max_age", 0)
	c.Duplicates = p.Duration("duplicates", 0)
	c.Partitions = p.Int("partitions", 0)
	c.AckWait = p.Duration("ack_wait", 0)
	c.ConfirmAcks = p.Bool("confirm_acks", false)
	c.PublishTimeout = p.Duration("publish_timeout", 0)
	if err := p.Err(); err != nil {
		return Config{}, err
	}
	if u.Scheme == Scheme && c.Replicas < 0 {
		return bad("replicas=%d: want 1 or more", c.Replicas)
	}
	if c.Partitions < 0 {
		return bad("partitions=%d: want 1 to %d", c.Partitions, maxPartitions)
	}
	if err := c.fill(); err != nil {
		return Config{}, err
	}
	return c, nil
}
