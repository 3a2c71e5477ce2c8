package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
)

// Scheme is the URL scheme that this package registers:
// kafka://host1:9092[,host2:9092].
const Scheme = "kafka"

// DefaultMessageMaxBytes is the broker's message.max.bytes default, used
// when the broker does not describe its configuration (no DescribeConfigs
// permission).
const DefaultMessageMaxBytes = 1048588

// headroom is what MaxMessageSize leaves of message.max.bytes for the
// record batch header and polybus's own headers around a message's bytes.
const headroom = 1024

func init() {
	polybus.Register(Scheme, openURL)
}

func openURL(ctx context.Context, u *url.URL) (*polybus.Client, error) {
	cfg, err := configFromURL(u)
	if err != nil {
		return nil, err
	}
	return Open(ctx, cfg)
}

// Open connects to the Kafka brokers of cfg and returns a Client. It fails
// with message.ErrUnavailable within cfg.ConnectTimeout (or when ctx ends)
// when no broker answers.
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
// the transport (a pool of connections and the cluster's metadata), a
// client over it, the dialer that consumer groups and partition readers
// use, and the topics known so far.
type core struct {
	cfg       Config
	stop      context.CancelFunc // ends the transport's background context
	transport *kafkago.Transport
	client    *kafkago.Client
	dialer    *kafkago.Dialer
	caps      message.Capabilities
	// batchLimit is the largest record batch that one produce request may
	// carry: message.max.bytes less the batch header.
	batchLimit int
	topics     *topicCache

	closeOnce sync.Once
}

func connect(ctx context.Context, cfg *Config) (*core, error) {
	const op = "kafka: open"
	tlsCfg, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	mech, err := saslMechanism(cfg)
	if err != nil {
		return nil, err
	}
	bg, stop := context.WithCancel(context.Background())
	transport := &kafkago.Transport{
		// The transport's own goroutines (metadata refresh, idle
		// connections) end with the client.
		Context:     bg,
		DialTimeout: cfg.ConnectTimeout,
		ClientID:    cfg.ClientID,
		TLS:         tlsCfg,
		SASL:        mech,
	}
	c := &core{
		cfg:       *cfg,
		stop:      stop,
		transport: transport,
		client:    &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: transport},
		dialer: &kafkago.Dialer{
			ClientID:      cfg.ClientID,
			Timeout:       cfg.ConnectTimeout,
			DualStack:     true,
			TLS:           tlsCfg,
			SASLMechanism: mech,
		},
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	// A metadata request for no topic: the first round trip, which proves
	// a broker answers (and authenticates us), and names the brokers.
	md, err := c.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{}})
	if err != nil {
		c.close()
		if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
			return nil, message.Errorf(message.Unavailable, op, "no Kafka broker answered at %s within %s: %w", strings.Join(cfg.Brokers, ","), cfg.ConnectTimeout, err)
		}
		return nil, message.Wrap(codeOrUnavailable(err), op, err)
	}
	maxBytes := c.messageMaxBytes(ctx, md)
	c.batchLimit = maxBytes - batchHeader
	c.caps = message.Capabilities{
		Name:                "kafka",
		OrderPerKey:         true,
		OrderPerKeyScaleOut: true,
		Rebalance:           cfg.rebalanceBound(),
		ConsumerGroups:      true,
		FanOut:              true,
		Retained:            true,
		Nack:                true,
		NackDelay:           true,
		AttemptCount:        true,
		MaxMessageSize:      max(maxBytes-headroom, 1),
		Persistent:          true,
	}
	c.topics = &topicCache{c: c, m: map[string]*topicEntry{}}
	return c, nil
}

// messageMaxBytes reads message.max.bytes from the first broker's
// configuration, or returns DefaultMessageMaxBytes when it cannot.
func (c *core) messageMaxBytes(ctx context.Context, md *kafkago.MetadataResponse) int {
	if len(md.Brokers) == 0 {
		return DefaultMessageMaxBytes
	}
	res, err := c.client.DescribeConfigs(ctx, &kafkago.DescribeConfigsRequest{
		Resources: []kafkago.DescribeConfigRequestResource{{
			ResourceType: kafkago.ResourceTypeBroker,
			ResourceName: strconv.Itoa(md.Brokers[0].ID),
			ConfigNames:  []string{"message.max.bytes"},
		}},
	})
	if err != nil {
		return DefaultMessageMaxBytes
	}
	for _, r := range res.Resources {
		if r.Error != nil {
			continue
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "message.max.bytes" {
				if n, err := strconv.Atoi(e.ConfigValue); err == nil && n > headroom {
					return n
				}
			}
		}
	}
	return DefaultMessageMaxBytes
}

// close releases the transport's connections. It runs once, as the
// client's last step.
func (c *core) close() error {
	c.closeOnce.Do(func() {
		c.stop()
		c.transport.CloseIdleConnections()
	})
	return nil
}

// as implements the drivers' As.
func (c *core) as(target any) bool {
	switch t := target.(type) {
	case **kafkago.Client:
		*t = c.client
	case **kafkago.Transport:
		*t = c.transport
	case **kafkago.Dialer:
		*t = c.dialer
	default:
		return false
	}
	return true
}

func tlsConfig(cfg *Config) (*tls.Config, error) {
	const op = "kafka: open"
	if !cfg.TLS {
		return nil, nil
	}
	t := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         cfg.TLSServerName,
		InsecureSkipVerify: cfg.TLSInsecure, //nolint:gosec // asked for by tls_insecure=true
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
		t.RootCAs = pool
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, message.Errorf(message.InvalidArgument, op, "tls_cert/tls_key: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

func saslMechanism(cfg *Config) (sasl.Mechanism, error) {
	const op = "kafka: open"
	switch cfg.SASL {
	case "":
		return nil, nil
	case SASLPlain:
		return plain.Mechanism{Username: cfg.User, Password: cfg.Password}, nil
	case SASLScramSHA256, SASLScramSHA512:
		algo := scram.SHA256
		if cfg.SASL == SASLScramSHA512 {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, cfg.User, cfg.Password)
		if err != nil {
			return nil, message.Errorf(message.InvalidArgument, op, "sasl=%s: %w", cfg.SASL, err)
		}
		return m, nil
	}
	return nil, message.Errorf(message.InvalidArgument, op, "sasl %q: want plain, scram-sha-256 or scram-sha-512", cfg.SASL)
}

// codeOrUnavailable is ErrorCode, with Unknown read as Unavailable: at
// open, an error nobody classified is most likely the network's.
func codeOrUnavailable(err error) message.Code {
	if c := ErrorCode(err); c != message.Unknown {
		return c
	}
	return message.Unavailable
}

// sleepCtx waits d or until ctx ends, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
