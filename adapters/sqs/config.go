package sqs

import (
	"context"
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

// What a topic with no consumer group does with a Publish (Config.NoGroup).
const (
	// NoGroupDefault creates the queue of subscriber.DefaultGroup for the
	// topic, as a holding queue (see the package documentation), and sends
	// there, so that nothing is dropped.
	NoGroupDefault = "default"
	// NoGroupFail fails the Publish with message.ErrNotFound.
	NoGroupFail = "fail"
)

// Limits of SQS on the durations of Config.
const (
	maxWaitTime   = 20 * time.Second
	maxVisibility = 12 * time.Hour
	minRetention  = time.Minute
	maxRetention  = 14 * 24 * time.Hour
)

// Config configures an SQS client: where SQS is and how to authenticate,
// how topics and groups map to queues, how subscriptions receive, and the
// portable publisher and subscriber. A URL fills it through
// [ConfigFromURL]; Go code can fill it directly and call [Open]. Every field
// documents its default, which the zero value gets.
type Config struct {
	// Endpoint is the base URL of an SQS-compatible server, such as
	// "http://127.0.0.1:9324" for ElasticMQ. Default "": AWS's own
	// endpoint for Region.
	Endpoint string
	// Region is the AWS region. Default: "us-east-1" with an Endpoint,
	// and the standard chain's (AWS_REGION, the shared config file)
	// without one, where it is required.
	Region string
	// AccessKey, SecretKey and SessionToken are static credentials. With
	// an Endpoint and no AccessKey, polybus signs with the dummy key
	// "polybus" (local servers check none) and never looks further, so it
	// never waits on instance metadata. Without an Endpoint and with no
	// AccessKey, the standard AWS credential chain applies (environment,
	// shared files, SSO, web identity, container and instance roles).
	AccessKey, SecretKey, SessionToken string
	// CredentialChain uses the standard credential chain even with an
	// Endpoint (an AWS VPC endpoint, say). Default false.
	CredentialChain bool

	// FIFO makes every topic of the client a FIFO topic: its queues are
	// FIFO queues (names end in ".fifo"), a message's Key is its
	// MessageGroupId and its ID its MessageDeduplicationId, and the
	// capabilities declare per-key order, across subscribers too. Default
	// false: standard queues, no order, and topics whose name ends in
	// ".fifo" are refused.
	FIFO bool
	// Prefix starts the name of every queue that polybus creates or
	// looks for (up to 20 letters, digits, '-' or '_'). Default "pb-".
	Prefix string
	// NoGroup is what Publish does on a topic with no group yet:
	// NoGroupDefault (the default) or NoGroupFail.
	NoGroup string
	// GroupRefresh is how long a publisher trusts the list of a topic's
	// groups before it lists the topic's queues again: a group created
	// by another client gets messages published at most this long after
	// its queue was created. Default 1s.
	GroupRefresh time.Duration
	// MaxReceives, when above 0, gives every group queue that polybus
	// opens a RedrivePolicy: SQS moves a message received that many times
	// without being deleted to the queue of group [DLQGroup] on
	// [DLQTopic](topic). Default 0: no native dead-lettering.
	MaxReceives int
	// Retention is the MessageRetentionPeriod of the queues that polybus
	// creates, 1m to 14d. Default 0: SQS's own default, 4 days.
	Retention time.Duration

	// WaitTime is the long-polling wait of each ReceiveMessage call, up to
	// 20s, in whole seconds. Default 5s. Closing a subscription waits for
	// its calls in flight (see the package documentation), so this is
	// also how long a Close can take on an idle queue; 20s makes the
	// fewest calls on an idle queue.
	WaitTime time.Duration
	// VisibilityTimeout is how long a received message stays invisible to
	// the group's other subscribers before SQS redelivers it, for
	// subscriptions whose AckDeadline is 0; whole seconds, 1s to 12h.
	// polybus extends it while a handler runs. Default 30s.
	VisibilityTimeout time.Duration
	// Receivers is how many ReceiveMessage calls each subscription keeps
	// going at once. Default 2.
	Receivers int

	// ConnectTimeout bounds Open's first call to SQS and every
	// connection's dial. Default 5s.
	ConnectTimeout time.Duration

	// Publisher and Subscriber configure the portable publisher and
	// subscriber of the client.
	Publisher  publisher.Options
	Subscriber subscriber.Options

	// wrapDial, when set (by this package's tests), wraps the dialer of
	// every connection.
	wrapDial func(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (c *Config) fill() error {
	const op = "sqs: open"
	bad := func(format string, args ...any) error {
		return message.Errorf(message.InvalidArgument, op, format, args...)
	}
	if c.GroupRefresh < 0 || c.Retention < 0 || c.WaitTime < 0 || c.VisibilityTimeout < 0 || c.ConnectTimeout < 0 || c.Receivers < 0 || c.MaxReceives < 0 {
		return bad("negative duration or count in config")
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("endpoint %q: want http://host:port or https://host", polybus.Redact(c.Endpoint))
		}
	} else if c.CredentialChain {
		return bad("CredentialChain applies to an Endpoint; without one the chain is the default")
	}
	if c.Endpoint != "" && c.Region == "" {
		c.Region = "us-east-1"
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return bad("an access key and a secret key go together")
	}
	if c.SessionToken != "" && c.AccessKey == "" {
		return bad("a session token needs an access key and a secret key")
	}
	if c.CredentialChain && c.AccessKey != "" {
		return bad("choose static credentials or the credential chain, not both")
	}
	if c.Prefix == "" {
		c.Prefix = "pb-"
	}
	if len(c.Prefix) > 20 || readable(c.Prefix, 20) != c.Prefix {
		return bad("prefix %q: want up to 20 letters, digits, '-' or '_'", c.Prefix)
	}
	switch c.NoGroup {
	case "":
		c.NoGroup = NoGroupDefault
	case NoGroupDefault, NoGroupFail:
	default:
		return bad("no_group %q: want %s or %s", c.NoGroup, NoGroupDefault, NoGroupFail)
	}
	if c.GroupRefresh == 0 {
		c.GroupRefresh = time.Second
	}
	if c.Retention != 0 && (c.Retention < minRetention || c.Retention > maxRetention) {
		return bad("retention %s: want 1m to 336h (14 days)", c.Retention)
	}
	if c.WaitTime == 0 {
		c.WaitTime = 5 * time.Second
	}
	if c.WaitTime > maxWaitTime || c.WaitTime%time.Second != 0 {
		return bad("wait_time %s: want whole seconds up to 20s", c.WaitTime)
	}
	if c.VisibilityTimeout == 0 {
		c.VisibilityTimeout = 30 * time.Second
	}
	if c.VisibilityTimeout > maxVisibility || c.VisibilityTimeout%time.Second != 0 {
		return bad("visibility_timeout %s: want whole seconds, 1s to 12h", c.VisibilityTimeout)
	}
	if c.Receivers == 0 {
		c.Receivers = 2
	}
	if c.MaxReceives > 1000 {
		return bad("max_receives %d: SQS takes 1 to 1000", c.MaxReceives)
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	return nil
}

// ConfigFromURL returns the Config that an sqs:// URL describes; the
// package documentation lists the URL forms and their query parameters. An
// unknown parameter is message.ErrInvalidArgument.
func ConfigFromURL(rawURL string) (Config, error) {
	u, err := polybus.ParseURL(rawURL)
	if err != nil {
		return Config{}, err
	}
	return configFromURL(u)
}

func configFromURL(u *url.URL) (Config, error) {
	const op = "sqs: open"
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, message.Errorf(message.InvalidArgument, op, format, args...)
	}
	if u.Scheme != Scheme {
		return bad("scheme %q is not %s", u.Scheme, Scheme)
	}
	if u.Opaque != "" || u.Path != "" && u.Path != "/" {
		return bad("%s: an sqs URL has no path", polybus.Redact(u.String()))
	}
	var c Config
	p := urlparam.New(op, u)
	scheme := p.OneOf("scheme", "http", "http", "https")
	if u.Host != "" {
		if strings.Contains(u.Host, ",") {
			return bad("%s: one host only", polybus.Redact(u.String()))
		}
		host := u.Host
		if _, _, err := net.SplitHostPort(host); err != nil && scheme == "http" {
			host = net.JoinHostPort(strings.Trim(host, "[]"), "9324")
		}
		c.Endpoint = scheme + "://" + host
	}
	if u.User != nil {
		c.AccessKey = u.User.Username()
		c.SecretKey, _ = u.User.Password()
		if c.SecretKey == "" {
			return bad("%s: credentials in a URL are ACCESS_KEY:SECRET_KEY@", polybus.Redact(u.String()))
		}
	}
	if v := p.String("access_key", ""); v != "" {
		c.AccessKey = v
	}
	if v := p.String("secret_key", ""); v != "" {
		c.SecretKey = v
	}
	c.SessionToken = p.String("session_token", "")
	c.CredentialChain = p.Bool("credential_chain", false)
	c.Region = p.String("region", "")
	c.FIFO = p.Bool("fifo", false)
	c.Prefix = p.String("prefix", "")
	c.NoGroup = p.OneOf("no_group", "", NoGroupDefault, NoGroupFail)
	c.GroupRefresh = p.Duration("group_refresh", 0)
	c.MaxReceives = p.Int("max_receives", 0)
	c.Retention = p.Duration("retention", 0)
	c.WaitTime = p.Duration("wait_time", 0)
	c.VisibilityTimeout = p.Duration("visibility_timeout", 0)
	c.Receivers = p.Int("receivers", 0)
	c.ConnectTimeout = p.Duration("connect_timeout", 0)
	if err := p.Err(); err != nil {
		return Config{}, err
	}
	if u.Host == "" && scheme != "http" {
		return bad("scheme applies to an endpoint host")
	}
	if err := c.fill(); err != nil {
		return Config{}, err
	}
	return c, nil
}
