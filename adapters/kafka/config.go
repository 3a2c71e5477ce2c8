package kafka

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

// SASL mechanisms for Config.SASL.
const (
	SASLPlain       = "plain"
	SASLScramSHA256 = "scram-sha-256"
	SASLScramSHA512 = "scram-sha-512"
)

// Config configures a Kafka client: the brokers and how to reach them, the
// topics that polybus creates, the consumer groups' timeouts and the
// portable publisher and subscriber. A URL fills it through
// [ConfigFromURL]; Go code can fill it directly and call [Open]. Every
// field documents its default, which the zero value gets.
type Config struct {
	// Brokers are the bootstrap brokers, host:port each. Required.
	Brokers []string
	// ClientID is the client id sent to the brokers. Default "polybus".
	ClientID string

	// SASL is the SASL mechanism: "" (none, the default), SASLPlain,
	// SASLScramSHA256 or SASLScramSHA512, with User and Password.
	SASL           string
	User, Password string
	// TLS turns TLS on. TLSCA names a PEM file of root CAs to trust
	// (default: the system's), TLSCert and TLSKey a client certificate and
	// its key, TLSServerName the name to verify the brokers' certificates
	// against (default: the host dialled); TLSInsecure skips verification.
	// Setting any of the other TLS fields implies TLS.
	TLS                    bool
	TLSCA, TLSCert, TLSKey string
	TLSServerName          string
	TLSInsecure            bool

	// ConnectTimeout bounds Open (the first metadata round trip) and each
	// later connection attempt. Default 10s.
	ConnectTimeout time.Duration

	// Partitions is the partition count of the topics that polybus
	// creates. Default 8, as the NATS and RabbitMQ adapters: a group's
	// work spreads over up to that many subscribers (with 1, one
	// subscriber of a group does all the work and the others wait).
	// Topics that exist already keep theirs.
	Partitions int
	// Replication is the replication factor of the topics that polybus
	// creates. Default 1, which suits a single broker; use 3 on a
	// production cluster.
	Replication int

	// SessionTimeout is how long the group coordinator waits for a
	// member's heartbeat before it removes the member and rebalances.
	// Default 10s; the broker's group.min.session.timeout.ms (6s) and
	// group.max.session.timeout.ms (30m) bound it.
	SessionTimeout time.Duration
	// HeartbeatInterval is how often members heartbeat, which is also how
	// soon they notice a rebalance. Default 1s; below SessionTimeout/3.
	HeartbeatInterval time.Duration
	// RebalanceTimeout is how long the coordinator waits for members to
	// rejoin during a rebalance. Default 30s; above RevokeTimeout.
	RebalanceTimeout time.Duration
	// RevokeTimeout bounds how long a member, when a rebalance begins,
	// waits for the handlers of messages already handed out to finish so
	// that it can commit them before giving its partitions up. Messages
	// still unfinished then are redelivered by the next owner. Default 10s.
	RevokeTimeout time.Duration

	// CommitInterval, when positive, makes acks asynchronous: Ack records
	// the messages as done and returns, and the subscription commits
	// every CommitInterval (and at each rebalance and at Close, before it
	// leaves the group). Default 0: every ack batch is committed before
	// Ack returns. An interval spares the group coordinator one commit
	// per ack batch, at a cost: a crash redelivers up to an interval's
	// worth of acked messages, and an at-most-once subscriber's acks are
	// no longer confirmed before its handlers run.
	CommitInterval time.Duration

	// MaxWait is how long a fetch waits at the broker for new messages
	// when there are none. Default 500ms.
	MaxWait time.Duration
	// FetchMaxBytes bounds one fetch response per partition. Default
	// 16 MiB (at least the broker's message size limit).
	FetchMaxBytes int

	// Publisher and Subscriber configure the portable publisher and
	// subscriber of the client.
	Publisher  publisher.Options
	Subscriber subscriber.Options
}

func (c *Config) fill() error {
	const op = "kafka: open"
	bad := func(format string, args ...any) error {
		return message.Errorf(message.InvalidArgument, op, format, args...)
	}
	if len(c.Brokers) == 0 {
		return bad("no brokers")
	}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return bad("broker %q: want host:port", b)
		}
	}
	if c.ConnectTimeout < 0 || c.SessionTimeout < 0 || c.HeartbeatInterval < 0 || c.RebalanceTimeout < 0 ||
		c.RevokeTimeout < 0 || c.CommitInterval < 0 || c.MaxWait < 0 || c.FetchMaxBytes < 0 || c.Partitions < 0 || c.Replication < 0 {
		return bad("negative duration or count in config")
	}
	if c.ClientID == "" {
		c.ClientID = "polybus"
	}
	switch c.SASL {
	case "":
		if c.User != "" || c.Password != "" {
			return bad("a user or password needs sasl=plain, scram-sha-256 or scram-sha-512")
		}
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if c.User == "" {
			return bad("sasl=%s needs a user (kafka://user:pass@host:9092)", c.SASL)
		}
	default:
		return bad("sasl %q: want plain, scram-sha-256 or scram-sha-512", c.SASL)
	}
	if c.TLSCA != "" || c.TLSCert != "" || c.TLSKey != "" || c.TLSServerName != "" || c.TLSInsecure {
		c.TLS = true
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return bad("tls_cert and tls_key go together")
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.Partitions == 0 {
		c.Partitions = 8
	}
	if c.Replication == 0 {
		c.Replication = 1
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = time.Second
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = 30 * time.Second
	}
	if c.RevokeTimeout == 0 {
		c.RevokeTimeout = 10 * time.Second
	}
	if c.MaxWait == 0 {
		c.MaxWait = 500 * time.Millisecond
	}
	if c.FetchMaxBytes == 0 {
		c.FetchMaxBytes = 16 << 20
	}
	if c.HeartbeatInterval*3 > c.SessionTimeout {
		return bad("heartbeat_interval %s must be at most a third of session_timeout %s", c.HeartbeatInterval, c.SessionTimeout)
	}
	if c.RevokeTimeout >= c.RebalanceTimeout {
		return bad("revoke_timeout %s must be below rebalance_timeout %s", c.RevokeTimeout, c.RebalanceTimeout)
	}
	return nil
}

// rebalanceBound is the declared Capabilities.Rebalance: a member that
// dies is noticed within the session timeout, the others learn of the
// rebalance at their next heartbeat, finish (at most RevokeTimeout) and
// rejoin; a few seconds more cover the join and sync round trips and a
// fetch's wait.
func (c *Config) rebalanceBound() time.Duration {
	return c.SessionTimeout + c.HeartbeatInterval + c.RevokeTimeout + c.MaxWait + 5*time.Second
}

// ConfigFromURL returns the Config that a kafka:// URL describes; the
// package documentation lists its query parameters. An unknown parameter
// is message.ErrInvalidArgument.
func ConfigFromURL(rawURL string) (Config, error) {
	u, err := polybus.ParseURL(rawURL)
	if err != nil {
		return Config{}, err
	}
	return configFromURL(u)
}

func configFromURL(u *url.URL) (Config, error) {
	const op = "kafka: open"
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, message.Errorf(message.InvalidArgument, op, format, args...)
	}
	if u.Scheme != Scheme {
		return bad("scheme %q is not %s", u.Scheme, Scheme)
	}
	if u.Opaque != "" || u.Path != "" && u.Path != "/" {
		return bad("%s: a kafka URL has no path", polybus.Redact(u.String()))
	}
	if u.Host == "" {
		return bad("%s: no host", polybus.Redact(u.String()))
	}
	var c Config
	for _, h := range strings.Split(u.Host, ",") {
		if h == "" {
			return bad("%s: empty host in list", polybus.Redact(u.String()))
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(strings.Trim(h, "[]"), "9092")
		}
		c.Brokers = append(c.Brokers, h)
	}
	if u.User != nil {
		c.User = u.User.Username()
		c.Password, _ = u.User.Password()
	}
	p := urlparam.New(op, u)
	c.ClientID = p.String("client_id", "")
	c.SASL = p.OneOf("sasl", "", SASLPlain, SASLScramSHA256, SASLScramSHA512)
	c.TLS = p.Bool("tls", false)
	c.TLSCA = p.String("tls_ca", "")
	c.TLSCert = p.String("tls_cert", "")
	c.TLSKey = p.String("tls_key", "")
	c.TLSServerName = p.String("tls_server_name", "")
	c.TLSInsecure = p.Bool("tls_insecure", false)
	c.ConnectTimeout = p.Duration("connect_timeout", 0)
	c.Partitions = p.Int("partitions", 0)
	c.Replication = p.Int("replication", 0)
	c.SessionTimeout = p.Duration("session_timeout", 0)
	c.HeartbeatInterval = p.Duration("heartbeat_interval", 0)
	c.RebalanceTimeout = p.Duration("rebalance_timeout", 0)
	c.RevokeTimeout = p.Duration("revoke_timeout", 0)
	c.CommitInterval = p.Duration("commit_interval", 0)
	c.MaxWait = p.Duration("max_wait", 0)
	c.FetchMaxBytes = p.Int("fetch_max_bytes", 0)
	if err := p.Err(); err != nil {
		return Config{}, err
	}
	if c.Partitions < 0 || c.Replication < 0 || c.FetchMaxBytes < 0 {
		return bad("partitions, replication and fetch_max_bytes must be positive")
	}
	if err := c.fill(); err != nil {
		return Config{}, err
	}
	return c, nil
}
