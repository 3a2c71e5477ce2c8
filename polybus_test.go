package polybus_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/polybus/polybus"
	_ "github.com/polybus/polybus/adapters/memory"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/urlparam"
)

func TestRedact(t *testing.T) {
	cases := map[string]string{
		"amqp://user:s3cret@host:5672/vh": "amqp://user:xxxxx@host:5672/vh",
		"kafka://h1:9092,h2:9092":         "kafka://h1:9092,h2:9092",
		"amqp://u:s3cret@[bad":            "amqp://xxxxx@[bad",
		"nats://s3cret@host:4222":         "nats://xxxxx@host:4222",
		"nats://h:4222?token=s3cret&x=1":  "nats://h:4222?token=xxxxx&x=1",
		"mem://":                          "mem://",
	}
	for in, want := range cases {
		if got := polybus.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSchemesIncludeMemory(t *testing.T) {
	if s := polybus.Schemes(); !strings.Contains(strings.Join(s, ","), "mem") {
		t.Fatalf("Schemes() = %v", s)
	}
}

func TestUnknownSchemeListsKnownOnes(t *testing.T) {
	_, err := polybus.Open(context.Background(), "kafak://h:9092")
	if !errors.Is(err, message.ErrInvalidArgument) || !strings.Contains(err.Error(), "known: ") || !strings.Contains(err.Error(), "mem") {
		t.Fatalf("error %v", err)
	}
}

func TestURLParamsStrict(t *testing.T) {
	u, _ := url.Parse("x://h?a=1&b=2s&c=yes&d=z&e=q&e=r&extra=1")
	p := urlparam.New("x: open", u)
	if p.Int("a", 0) != 1 || p.Duration("b", 0).Seconds() != 2 {
		t.Fatal("values")
	}
	p.Bool("c", false)
	p.OneOf("d", "y", "y", "z")
	p.String("e", "")
	err := p.Err()
	if !errors.Is(err, message.ErrInvalidArgument) || !strings.Contains(err.Error(), `c="yes"`) {
		t.Fatalf("first bad value not reported: %v", err)
	}
	u, _ = url.Parse("x://h?a=1&extra=1&other=2")
	p = urlparam.New("x: open", u)
	p.Int("a", 0)
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), "unknown query parameter extra, other (known: a)") {
		t.Fatalf("unknown params: %v", err)
	}
}

// Example shows the whole API on the in-process broker.
func Example() {
	ctx := context.Background()
	c, err := polybus.Open(ctx, "mem://")
	if err != nil {
		panic(err)
	}
	defer c.Close(ctx)

	m := message.New([]byte(`{"order":"ord-1","total":42}`))
	m.Key = "ord-1"
	if err := c.Publisher().Publish(ctx, "orders", m); err != nil {
		panic(err)
	}

	ctx, stop := context.WithCancel(ctx)
	err = c.Subscriber().Subscribe(ctx, "orders", func(ctx context.Context, m *message.Message) error {
		fmt.Printf("%s %s\n", m.Key, m.Payload)
		stop()
		return nil
	})
	fmt.Println("subscribe returned", err)
	// Output:
	// ord-1 {"order":"ord-1","total":42}
	// subscribe returned <nil>
}
