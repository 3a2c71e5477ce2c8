package kafka_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/polybus/polybus"
	polykafka "github.com/polybus/polybus/adapters/kafka"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

func TestConfigFromURL(t *testing.T) {
	cases := []struct {
		url  string
		want func(c polykafka.Config) bool
	}{
		{"kafka://h1", func(c polykafka.Config) bool {
			return len(c.Brokers) == 1 && c.Brokers[0] == "h1:9092" && c.Partitions == 8 && c.Replication == 1 &&
				c.ConnectTimeout == 10*time.Second && c.SessionTimeout == 10*time.Second && c.HeartbeatInterval == time.Second &&
				c.RebalanceTimeout == 30*time.Second && c.RevokeTimeout == 10*time.Second && c.CommitInterval == 0 && c.MaxWait == 500*time.Millisecond &&
				c.FetchMaxBytes == 16<<20 && c.ClientID == "polybus" && !c.TLS && c.SASL == ""
		}},
		{"kafka://h1:9093,h2:9094/", func(c polykafka.Config) bool {
			return len(c.Brokers) == 2 && c.Brokers[0] == "h1:9093" && c.Brokers[1] == "h2:9094"
		}},
		{"kafka://h?partitions=6&replication=3&client_id=app&connect_timeout=2s&session_timeout=20s&heartbeat_interval=2s&rebalance_timeout=40s&revoke_timeout=15s&commit_interval=100ms&max_wait=1s&fetch_max_bytes=1048576",
			func(c polykafka.Config) bool {
				return c.Partitions == 6 && c.Replication == 3 && c.ClientID == "app" && c.ConnectTimeout == 2*time.Second &&
					c.SessionTimeout == 20*time.Second && c.HeartbeatInterval == 2*time.Second && c.RebalanceTimeout == 40*time.Second &&
					c.RevokeTimeout == 15*time.Second && c.CommitInterval == 100*time.Millisecond && c.MaxWait == time.Second && c.FetchMaxBytes == 1<<20
			}},
		{"kafka://u:p%40ss@h?sasl=scram-sha-512", func(c polykafka.Config) bool {
			return c.User == "u" && c.Password == "p@ss" && c.SASL == polykafka.SASLScramSHA512
		}},
		{"kafka://u:p@h?sasl=plain", func(c polykafka.Config) bool { return c.SASL == polykafka.SASLPlain }},
		{"kafka://u:p@h?sasl=scram-sha-256", func(c polykafka.Config) bool { return c.SASL == polykafka.SASLScramSHA256 }},
		{"kafka://h?tls=true", func(c polykafka.Config) bool { return c.TLS }},
		{"kafka://h?tls_ca=/ca.pem&tls_server_name=kafka.internal", func(c polykafka.Config) bool {
			return c.TLS && c.TLSCA == "/ca.pem" && c.TLSServerName == "kafka.internal"
		}},
		{"kafka://h?tls_cert=/c.pem&tls_key=/k.pem&tls_insecure=true", func(c polykafka.Config) bool {
			return c.TLS && c.TLSCert == "/c.pem" && c.TLSKey == "/k.pem" && c.TLSInsecure
		}},
	}
	for _, tc := range cases {
		c, err := polykafka.ConfigFromURL(tc.url)
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
		"kafka://h?bogus=1",
		"kafka://h?partitions=many",
		"kafka://h?partitions=-1",
		"kafka://h?partitions=1&partitions=2",
		"kafka://h?sasl=gssapi",
		"kafka://h?sasl=plain",  // no user
		"kafka://u:p@h",         // a user without sasl
		"kafka://h?tls_cert=/c", // no key
		"kafka://h?session_timeout=soon",
		"kafka://h?session_timeout=3s&heartbeat_interval=2s", // heartbeat over a third
		"kafka://h?revoke_timeout=40s",                       // over the rebalance timeout
		"kafka://h/path",
		"kafka://",
		"kafka://h1,,h2",
	} {
		_, err := polykafka.ConfigFromURL(u)
		if !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want InvalidArgument", u, err)
		}
		if _, err := polybus.Open(context.Background(), u); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("Open(%s): got %v, want InvalidArgument", u, err)
		}
	}
	_, err := polykafka.ConfigFromURL("kafka://h?bogus=1&partitions=2")
	if err == nil || !strings.Contains(err.Error(), "bogus") || !strings.Contains(err.Error(), "partitions") {
		t.Errorf("unknown parameter error should name it and list the known ones: %v", err)
	}
	if _, err := polykafka.ConfigFromURL("kafka://u:secret@h?sasl=gssapi"); err != nil && strings.Contains(err.Error(), "secret") {
		t.Errorf("error shows the password: %v", err)
	}
}

// TestUnreachable: a closed port fails Open within connect_timeout, with
// Unavailable.
func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	start := time.Now()
	_, err = polybus.Open(context.Background(), "kafka://"+addr+"?connect_timeout=1s")
	if !errors.Is(err, message.ErrUnavailable) {
		t.Fatalf("Open on a closed port: %v, want Unavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Open on a closed port took %s with connect_timeout=1s", d)
	}
}

// TestSilentBroker: a listener that accepts and never answers fails Open
// within connect_timeout too.
func TestSilentBroker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	start := time.Now()
	_, err = polybus.Open(context.Background(), "kafka://"+l.Addr().String()+"?connect_timeout=1s")
	if !errors.Is(err, message.ErrUnavailable) {
		t.Fatalf("Open on a silent listener: %v, want Unavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Open on a silent listener took %s with connect_timeout=1s", d)
	}
}

// TestBadNames: topics and groups that Kafka refuses fail with
// InvalidArgument before anything is sent.
func TestBadNames(t *testing.T) {
	c := open(t, kafkaURL(t, ""))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, topic := range []string{"has space", "slash/y", "..", strings.Repeat("x", 250), "ünï"} {
		if err := c.Publisher().Publish(ctx, topic, message.New(nil)); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("publish to %q: %v, want InvalidArgument", topic, err)
		}
		err := c.Subscriber().Subscribe(ctx, topic, func(context.Context, *message.Message) error { return nil })
		if !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("subscribe to %q: %v, want InvalidArgument", topic, err)
		}
	}
	m := message.New(nil)
	m.Metadata = message.Metadata{polykafka.HeaderID: "x"}
	if err := c.Publisher().Publish(ctx, unique("reserved"), m); !errors.Is(err, message.ErrInvalidArgument) {
		t.Errorf("publish with metadata %q: %v, want InvalidArgument", polykafka.HeaderID, err)
	}
}

// TestTopicCreated: a topic is created with the URL's partitions, and the
// capabilities follow the broker's message.max.bytes.
func TestTopicCreated(t *testing.T) {
	c := open(t, kafkaURL(t, "partitions=4"))
	topic := unique("created")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Publisher().Publish(ctx, topic, message.New([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	var kc *kafkago.Client
	if !c.Publisher().As(&kc) {
		t.Fatal("As(**kafka.Client) failed")
	}
	md, err := kc.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Topics) != 1 || len(md.Topics[0].Partitions) != 4 {
		t.Fatalf("topic metadata %+v, want 4 partitions", md.Topics)
	}
	caps := c.Capabilities()
	if caps.MaxMessageSize != polykafka.DefaultMessageMaxBytes-1024 || !caps.OrderPerKeyScaleOut || caps.Rebalance <= 0 {
		t.Errorf("capabilities %+v", caps)
	}
	var tr *kafkago.Transport
	var sd *kafkago.Dialer
	if !c.Subscriber().As(&tr) || !c.Subscriber().As(&sd) {
		t.Error("As(**kafka.Transport / **kafka.Dialer) failed")
	}
}

// TestNativeMessage: a received message's As reaches the kafka.Message.
func TestNativeMessage(t *testing.T) {
	u := kafkaURL(t, "")
	c := open(t, u)
	topic := unique("native")
	m := message.New([]byte("native"))
	m.Key = "k"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Publisher().Publish(ctx, topic, m); err != nil {
		t.Fatal(err)
	}
	got := make(chan kafkago.Message, 1)
	err := c.Subscriber().Subscribe(ctx, topic, func(_ context.Context, r *message.Message) error {
		var km kafkago.Message
		if !r.As(&km) {
			t.Error("As(*kafka.Message) failed")
		}
		select {
		case got <- km:
		default:
		}
		cancel()
		return nil
	}, subscriber.Group(unique("g")))
	if err != nil {
		t.Fatal(err)
	}
	km := <-got
	if string(km.Key) != "k" || string(km.Value) != "native" || km.Topic != topic {
		t.Errorf("native message %+v", km)
	}
}
