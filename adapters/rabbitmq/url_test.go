package rabbitmq_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/adapters/rabbitmq"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/message"
)

func TestConfigFromURL(t *testing.T) {
	cases := []struct {
		url  string
		want func(c rabbitmq.Config) bool
	}{
		{"amqp://guest:guest@h:5672/", func(c rabbitmq.Config) bool {
			return c.URL == "amqp://guest:guest@h:5672/" && c.QueueType == rabbitmq.Quorum && !c.Unordered &&
				c.Partitions == rabbitmq.DefaultPartitions && c.ConnectTimeout == 5*time.Second &&
				c.ReconnectWait == time.Second && c.Heartbeat == 10*time.Second &&
				c.MaxMessageSize == rabbitmq.DefaultMaxMessageSize && c.PublisherChannels == 16 &&
				!c.AllowUnroutable && c.DeliveryLimit == 0 && c.DeadLetterTopic == "" &&
				c.RebalanceInterval == 500*time.Millisecond
		}},
		{"amqp://h/vh?queue_type=classic&ordered=false", func(c rabbitmq.Config) bool {
			return c.URL == "amqp://h/vh" && c.QueueType == rabbitmq.Classic && c.Unordered
		}},
		{"amqp://h?partitions=3&prefetch_unused=0", nil},
		{"amqp://h?partitions=3&rebalance_interval=1s&connect_timeout=2s&reconnect_wait=50ms&heartbeat=3s", func(c rabbitmq.Config) bool {
			return c.Partitions == 3 && c.RebalanceInterval == time.Second && c.ConnectTimeout == 2*time.Second &&
				c.ReconnectWait == 50*time.Millisecond && c.Heartbeat == 3*time.Second
		}},
		{"amqp://h?delivery_limit=5&dead_letter_topic=dead", func(c rabbitmq.Config) bool {
			return c.DeliveryLimit == 5 && c.DeadLetterTopic == "dead" && c.DeadLetterGroup == rabbitmq.DefaultDeadLetterGroup
		}},
		{"amqp://h?dead_letter_topic=dead&dead_letter_group=ops", func(c rabbitmq.Config) bool { return c.DeadLetterGroup == "ops" }},
		{"amqp://h?allow_unroutable=true&max_message_size=1024&publisher_channels=2", func(c rabbitmq.Config) bool {
			return c.AllowUnroutable && c.MaxMessageSize == 1024 && c.PublisherChannels == 2
		}},
		{"amqps://u:p@h:5671/?tls_server_name=rabbit.example&tls_ca=/ca.pem", func(c rabbitmq.Config) bool {
			return c.TLSServerName == "rabbit.example" && c.TLSCA == "/ca.pem" && c.URL == "amqps://u:p@h:5671/"
		}},
	}
	for _, tc := range cases {
		c, err := rabbitmq.ConfigFromURL(tc.url)
		if tc.want == nil {
			if !errors.Is(err, message.ErrInvalidArgument) {
				t.Errorf("%s: got %v, want ErrInvalidArgument", tc.url, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if !tc.want(c) {
			t.Errorf("%s: unexpected config %+v", tc.url, c)
		}
	}
}

func TestConfigFromURLErrors(t *testing.T) {
	for _, u := range []string{
		"amqp://h?nope=1",
		"amqp://h?queue_type=stream",
		"amqp://h?partitions=-1",
		"amqp://h?partitions=257",
		"amqp://h?ordered=maybe",
		"amqp://h?connect_timeout=soon",
		"amqp://h?tls_ca=/ca.pem",
		"amqps://h?tls_cert=/c.pem",
		"amqp://h?delivery_limit=3&ordered=false&queue_type=classic",
		"amqp://h?dead_letter_group=x",
		"amqp://h?dead_letter_topic=amq.x",
		"amqp://h?dead_letter_topic=d&dead_letter_group=bad@group",
		"amqp://h?max_message_size=999999999",
		"amqp://h?partitions=2&partitions=3",
		"amqp:///nohost",
		"kafka://h",
	} {
		_, err := rabbitmq.ConfigFromURL(u)
		if !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", u, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error shows a password: %v", u, err)
		}
	}
}

// TestUnreachable: a port where nothing listens fails at once, and one
// that accepts TCP but never speaks AMQP fails within connect_timeout, both
// with ErrUnavailable.
func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-acceptDone
		for _, c := range held {
			c.Close()
		}
	})
	silent := "amqp://guest:guest@" + ln.Addr().String() + "/?connect_timeout=500ms"

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "amqp://guest:secret@" + closed.Addr().String() + "/?connect_timeout=500ms"
	closed.Close()

	for _, u := range []string{silent, refused} {
		start := time.Now()
		_, err := polybus.Open(context.Background(), u)
		took := time.Since(start)
		if !errors.Is(err, message.ErrUnavailable) {
			t.Errorf("%s: got %v, want ErrUnavailable", polybus.Redact(u), err)
		}
		if took > 2*time.Second {
			t.Errorf("%s: failed after %s, connect_timeout is 500ms", polybus.Redact(u), took)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

// TestWrongCredentials: the broker refuses the login: Open fails at once
// with ErrPermissionDenied, without retrying. RabbitMQ itself waits about
// 3s before it closes a connection whose login failed.
func TestWrongCredentials(t *testing.T) {
	u := brokertest.URL(t, "rabbitmq")
	bad := strings.Replace(u, "guest:guest@", "guest:wrong-secret@", 1)
	if bad == u {
		t.Skip("the broker URL has no guest:guest credentials to spoil")
	}
	start := time.Now()
	_, err := polybus.Open(context.Background(), bad)
	if !errors.Is(err, message.ErrPermissionDenied) {
		t.Fatalf("got %v, want ErrPermissionDenied", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s", took)
	}
	if strings.Contains(err.Error(), "wrong-secret") {
		t.Errorf("error shows the password: %v", err)
	}
	_, err = polybus.Open(context.Background(), withQuery(strings.TrimSuffix(u, "/")+"/no-such-vhost", ""))
	if !errors.Is(err, message.ErrPermissionDenied) {
		t.Errorf("unknown vhost: got %v, want ErrPermissionDenied", err)
	}
}

// TestBadNames: topics and groups that cannot name RabbitMQ objects are
// refused before anything reaches the broker.
func TestBadNames(t *testing.T) {
	c := open(t, brokertest.URL(t, "rabbitmq"))
	ctx := context.Background()
	for _, topic := range []string{"", "amq.direct", strings.Repeat("x", 161), "bad\x00topic", "\xff"} {
		if err := c.Publisher().Publish(ctx, topic, message.New(nil)); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("publish to %q: got %v, want ErrInvalidArgument", topic, err)
		}
	}
	for _, group := range []string{"has@at", "has#hash", "has~tilde", "sp ace", strings.Repeat("g", 65)} {
		if err := rabbitmq.DeclareGroup(ctx, c, "ok-topic", group); !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("group %q: got %v, want ErrInvalidArgument", group, err)
		}
	}
}
