package rabbitmq

import (
	"net/url"
	"strings"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/publisher"
	"github.com/polybus/polybus/subscriber"
	"github.com/polybus/polybus/urlparam"
)

// QueueType is the RabbitMQ queue type of the groups' queues.
type QueueType string

const (
	// Quorum queues are replicated (Raft), always persistent, count
	// deliveries (x-delivery-count) and take a delivery limit.
	Quorum QueueType = "quorum"
	// Classic queues are RabbitMQ's older, single-node queue type. They
	// count no deliveries: AttemptCount is not declared with them.
	Classic QueueType = "classic"
)

// Defaults of the Config fields.
const (
	DefaultPartitions        = 8
	DefaultConnectTimeout    = 5 * time.Second
	DefaultReconnectWait     = time.Second
	DefaultHeartbeat         = 10 * time.Second
	DefaultMaxMessageSize    = 16 << 20
	DefaultPublisherChannels = 16
	DefaultRebalanceInterval = 500 * time.Millisecond
	DefaultDeadLetterGroup   = "polybus-dlq"
	// brokerMaxMessageSize is RabbitMQ 3.10's max_message_size default
	// (128 MiB); MaxMessageSize stays below it, leaving room for headers.
	brokerMaxMessageSize = 128 << 20
	headroom             = 64 << 10
)

// Config configures a RabbitMQ client: the connection, the topology that
// polybus declares and the portable publisher and subscriber. A URL fills
// it through [ConfigFromURL]; Go code can fill it directly and call [Open].
// Every field documents its default, which its zero value gets.
type Config struct {
	// URL is the broker's amqp:// or amqps:// URL, user, password and
	// vhost included, without query parameters. Default
	// amqp://guest:guest@localhost:5672/.
	URL string
	// TLSCA names a PEM file of root CAs to trust (default: the system's);
	// TLSCert and TLSKey a client certificate and its key; TLSServerName
	// the name to verify in the server's certificate (default: the URL's
	// host). They apply to amqps:// only.
	TLSCA, TLSCert, TLSKey, TLSServerName string
	// ConnectTimeout bounds Open (TCP, TLS and AMQP handshakes) and each
	// reconnection attempt. Default 5s.
	ConnectTimeout time.Duration
	// ReconnectWait is the longest pause between reconnection attempts; the
	// pause starts at a tenth of it and doubles. Reconnection never gives
	// up, except on an authentication failure. Default 1s.
	ReconnectWait time.Duration
	// Heartbeat is the AMQP heartbeat interval: a connection silent for
	// about twice as long is considered lost. Default 10s.
	Heartbeat time.Duration

	// QueueType is the type of the group queues of the unordered layout
	// (Ordered false). Partition queues are always quorum queues. Default
	// Quorum.
	QueueType QueueType
	// Unordered selects the plain layout: one queue per group, whose
	// subscribers compete for every message (per-key order holds only
	// within one subscriber). Default false: the ordered layout, with
	// Partitions single-active-consumer queues per group (see the package
	// documentation).
	Unordered bool
	// Partitions is the number of partitions of every topic: the
	// publisher hashes a message's key to one of them, and each group of
	// the ordered layout has one queue per partition. Every client of a
	// topic must use the same number. Default 8; at most 256.
	Partitions int
	// RebalanceInterval is how often a subscriber of the ordered layout
	// counts the group's subscribers and steps back from partitions above
	// its share. Default 500ms.
	RebalanceInterval time.Duration

	// DeliveryLimit, when above 0, is the quorum queues' x-delivery-limit:
	// after that many failed deliveries the broker drops the message, or
	// dead-letters it to DeadLetterTopic when set. Default 0: no limit.
	DeliveryLimit int
	// DeadLetterTopic, when set, makes the groups' queues dead-letter
	// (x-dead-letter-exchange) to this topic's exchange, where the queue
	// of group DeadLetterGroup is declared too. Default "": no native
	// dead-lettering (the portable middleware.DLQ works without it).
	DeadLetterTopic string
	// DeadLetterGroup is the group declared on DeadLetterTopic, the one
	// that `polybus dlq` reads. Default "polybus-dlq".
	DeadLetterGroup string

	// AllowUnroutable makes a publish that no queue receives succeed (the
	// broker drops it) instead of failing with message.ErrNotFound.
	// Default false: every message is published mandatory.
	AllowUnroutable bool
	// MaxMessageSize is the declared message size limit. Default 16 MiB;
	// at most 128 MiB less 64 KiB (the broker's own default limit less
	// room for headers).
	MaxMessageSize int
	// PublisherChannels is how many AMQP channels the publisher keeps
	// open for concurrent batches (more are opened when more batches run
	// at once, and closed after). Default 16.
	PublisherChannels int

	// Publisher and Subscriber configure the portable publisher and
	// subscriber of the client.
	Publisher  publisher.Options
	Subscriber subscriber.Options
}

func (c *Config) fill() error {
	const op = "rabbitmq: open"
	bad := func(format string, args ...any) error {
		return message.Errorf(message.InvalidArgument, op, format, args...)
	}
	if c.URL == "" {
		c.URL = "amqp://guest:guest@localhost:5672/"
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return bad("malformed URL %s", polybus.Redact(c.URL))
	}
	switch strings.ToLower(u.Scheme) {
	case Scheme:
		if c.TLSCA != "" || c.TLSCert != "" || c.TLSKey != "" || c.TLSServerName != "" {
			return bad("TLS options need an amqps:// URL")
		}
	case TLSScheme:
	default:
		return bad("URL %s: scheme is not amqp or amqps", polybus.Redact(c.URL))
	}
	if u.RawQuery != "" {
		return bad("Config.URL %s carries query parameters: use ConfigFromURL", polybus.Redact(c.URL))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return bad("tls_cert and tls_key go together")
	}
	if c.ConnectTimeout < 0 || c.ReconnectWait < 0 || c.Heartbeat < 0 || c.RebalanceInterval < 0 ||
		c.Partitions < 0 || c.DeliveryLimit < 0 || c.MaxMessageSize < 0 || c.PublisherChannels < 0 {
		return bad("negative duration or count in config")
	}
	switch c.QueueType {
	case "":
		c.QueueType = Quorum
	case Quorum, Classic:
	default:
		return bad("queue_type %q: want quorum or classic", c.QueueType)
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Partitions > 256 {
		return bad("partitions=%d: at most 256", c.Partitions)
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.ReconnectWait == 0 {
		c.ReconnectWait = DefaultReconnectWait
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.RebalanceInterval == 0 {
		c.RebalanceInterval = DefaultRebalanceInterval
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MaxMessageSize > brokerMaxMessageSize-headroom {
		return bad("max_message_size=%d: at most %d", c.MaxMessageSize, brokerMaxMessageSize-headroom)
	}
	if c.PublisherChannels == 0 {
		c.PublisherChannels = DefaultPublisherChannels
	}
	if c.DeliveryLimit > 0 && c.Unordered && c.QueueType == Classic {
		return bad("delivery_limit needs quorum queues (classic queues count no deliveries)")
	}
	if c.DeadLetterTopic != "" {
		if err := checkTopic(op, c.DeadLetterTopic); err != nil {
			return err
		}
		if c.DeadLetterGroup == "" {
			c.DeadLetterGroup = DefaultDeadLetterGroup
		}
		if err := checkGroup(op, c.DeadLetterGroup); err != nil {
			return err
		}
	} else if c.DeadLetterGroup != "" {
		return bad("dead_letter_group needs dead_letter_topic")
	}
	return nil
}

// ConfigFromURL returns the Config that an amqp:// or amqps:// URL
// describes; the package documentation lists its query parameters. An
// unknown parameter is message.ErrInvalidArgument.
func ConfigFromURL(rawURL string) (Config, error) {
	u, err := polybus.ParseURL(rawURL)
	if err != nil {
		return Config{}, err
	}
	return configFromURL(u)
}

func configFromURL(u *url.URL) (Config, error) {
	const op = "rabbitmq: open"
	if u.Scheme != Scheme && u.Scheme != TLSScheme {
		return Config{}, message.Errorf(message.InvalidArgument, op, "scheme %q is not %s or %s", u.Scheme, Scheme, TLSScheme)
	}
	if u.Host == "" {
		return Config{}, message.Errorf(message.InvalidArgument, op, "%s: no host", polybus.Redact(u.String()))
	}
	var c Config
	p := urlparam.New(op, u)
	c.QueueType = QueueType(p.OneOf("queue_type", "", string(Quorum), string(Classic)))
	c.Unordered = !p.Bool("ordered", true)
	c.Partitions = p.Int("partitions", 0)
	c.RebalanceInterval = p.Duration("rebalance_interval", 0)
	c.ConnectTimeout = p.Duration("connect_timeout", 0)
	c.ReconnectWait = p.Duration("reconnect_wait", 0)
	c.Heartbeat = p.Duration("heartbeat", 0)
	c.DeliveryLimit = p.Int("delivery_limit", 0)
	c.DeadLetterTopic = p.String("dead_letter_topic", "")
	c.DeadLetterGroup = p.String("dead_letter_group", "")
	c.AllowUnroutable = p.Bool("allow_unroutable", false)
	c.MaxMessageSize = p.Int("max_message_size", 0)
	c.PublisherChannels = p.Int("publisher_channels", 0)
	c.TLSCA = p.String("tls_ca", "")
	c.TLSCert = p.String("tls_cert", "")
	c.TLSKey = p.String("tls_key", "")
	c.TLSServerName = p.String("tls_server_name", "")
	if err := p.Err(); err != nil {
		return Config{}, err
	}
	if c.Partitions < 0 || c.DeliveryLimit < 0 || c.MaxMessageSize < 0 || c.PublisherChannels < 0 {
		return Config{}, message.Errorf(message.InvalidArgument, op, "partitions, delivery_limit, max_message_size and publisher_channels must not be negative")
	}
	bare := *u
	bare.RawQuery, bare.ForceQuery, bare.Fragment = "", false, ""
	c.URL = bare.String()
	if err := c.fill(); err != nil {
		return Config{}, err
	}
	return c, nil
}
