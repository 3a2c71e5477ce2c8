package sqs_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/polybus/polybus"
	polysqs "github.com/polybus/polybus/adapters/sqs"
	"github.com/polybus/polybus/message"
)

func TestConfigFromURL(t *testing.T) {
	cases := []struct {
		url  string
		want func(c polysqs.Config) bool
	}{
		{"sqs://127.0.0.1:9324?region=us-east-1", func(c polysqs.Config) bool {
			return c.Endpoint == "http://127.0.0.1:9324" && c.Region == "us-east-1" && c.AccessKey == "" && !c.FIFO &&
				c.Prefix == "pb-" && c.NoGroup == polysqs.NoGroupDefault && c.GroupRefresh == time.Second &&
				c.WaitTime == 5*time.Second && c.VisibilityTimeout == 30*time.Second && c.Receivers == 2 &&
				c.ConnectTimeout == 5*time.Second && c.MaxReceives == 0 && c.Retention == 0
		}},
		{"sqs://localhost", func(c polysqs.Config) bool { return c.Endpoint == "http://localhost:9324" && c.Region == "us-east-1" }},
		{"sqs://sqs.eu-west-1.amazonaws.com?scheme=https&region=eu-west-1&credential_chain=true", func(c polysqs.Config) bool {
			return c.Endpoint == "https://sqs.eu-west-1.amazonaws.com" && c.CredentialChain && c.Region == "eu-west-1"
		}},
		{"sqs://AKID:s%2Fcret@h:1?session_token=tok", func(c polysqs.Config) bool {
			return c.AccessKey == "AKID" && c.SecretKey == "s/cret" && c.SessionToken == "tok"
		}},
		{"sqs://h:1?access_key=a&secret_key=b", func(c polysqs.Config) bool { return c.AccessKey == "a" && c.SecretKey == "b" }},
		{"sqs://?region=eu-west-1", func(c polysqs.Config) bool { return c.Endpoint == "" && c.Region == "eu-west-1" }},
		{"sqs://h:1?fifo=true&prefix=app_&no_group=fail&group_refresh=250ms&max_receives=5&retention=48h&wait_time=2s&visibility_timeout=1m&receivers=4&connect_timeout=2s",
			func(c polysqs.Config) bool {
				return c.FIFO && c.Prefix == "app_" && c.NoGroup == polysqs.NoGroupFail && c.GroupRefresh == 250*time.Millisecond &&
					c.MaxReceives == 5 && c.Retention == 48*time.Hour && c.WaitTime == 2*time.Second &&
					c.VisibilityTimeout == time.Minute && c.Receivers == 4 && c.ConnectTimeout == 2*time.Second
			}},
	}
	for _, tc := range cases {
		c, err := polysqs.ConfigFromURL(tc.url)
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
		"sqs://h:1?bogus=1",
		"sqs://h:1?region=a&region=b",
		"sqs://h:1/path",
		"sqs://h1:1,h2:2",
		"sqs://user@h:1",                      // a key without a secret
		"sqs://h:1?access_key=a",              // likewise
		"sqs://h:1?session_token=t",           // a token without keys
		"sqs://a:b@h:1?credential_chain=true", // two kinds of credentials
		"sqs://?region=r&credential_chain=true",
		"sqs://?scheme=https",
		"sqs://h:1?scheme=ftp",
		"sqs://h:1?fifo=maybe",
		"sqs://h:1?prefix=no.dots",
		"sqs://h:1?prefix=" + strings.Repeat("p", 21),
		"sqs://h:1?no_group=drop",
		"sqs://h:1?wait_time=21s",
		"sqs://h:1?wait_time=1500ms",
		"sqs://h:1?visibility_timeout=13h",
		"sqs://h:1?visibility_timeout=1.5s",
		"sqs://h:1?receivers=-1",
		"sqs://h:1?max_receives=1001",
		"sqs://h:1?retention=30s",
		"sqs://h:1?retention=15d",
		"sqs://h:1?connect_timeout=soon",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := polybus.Open(ctx, u)
		cancel()
		if !errors.Is(err, message.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want InvalidArgument", u, err)
		}
	}
}

func TestSecretRedacted(t *testing.T) {
	for _, u := range []string{
		"sqs://AKID:hunter2@127.0.0.1:1?connect_timeout=500ms",
		"sqs://127.0.0.1:1?access_key=AKID&secret_key=hunter2&connect_timeout=500ms",
	} {
		_, err := polybus.Open(context.Background(), u)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: got %v: want an error without the secret", polybus.Redact(u), err)
		}
	}
}

// TestUnreachable checks that Open fails with Unavailable within
// connect_timeout, for a port that refuses and for a server that accepts
// connections and never answers.
func TestUnreachable(t *testing.T) {
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close()

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 16)
	go func() {
		defer close(accepted)
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		silent.Close()
		for c := range accepted {
			c.Close()
		}
	}()

	for _, addr := range []string{refusedAddr, silent.Addr().String()} {
		u := "sqs://" + addr + "?connect_timeout=700ms"
		start := time.Now()
		_, err := polybus.Open(context.Background(), u)
		took := time.Since(start)
		if !errors.Is(err, message.ErrUnavailable) {
			t.Errorf("%s: got %v, want Unavailable", u, err)
		}
		if took > 2*time.Second {
			t.Errorf("%s: Open took %s with connect_timeout=700ms", u, took)
		}
	}
}

// TestAWSNoCredentialsBounded opens AWS itself (no host) with no
// credentials anywhere and instance metadata pointed at a silent port: the
// standard chain must give up within connect_timeout, not hang.
func TestAWSNoCredentialsBounded(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://"+silent.Addr().String())
	start := time.Now()
	_, err = polybus.Open(context.Background(), "sqs://?region=us-east-1&connect_timeout=1s")
	if err == nil {
		t.Fatal("Open without credentials succeeded")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Open took %s with connect_timeout=1s: %v", took, err)
	}
	if c := message.CodeOf(err); c != message.Unavailable && c != message.PermissionDenied {
		t.Errorf("got %v (code %s), want Unavailable or PermissionDenied", err, c)
	}
	t.Logf("failed as it should, in %s: %v", time.Since(start).Round(time.Millisecond), err)
	// The SDK's credential cache finishes its lookup of instance
	// metadata in the background, bounded by the IMDS client's own
	// timeouts, after Open has given up on it.
	waitGone(t, "ec2rolecreds", 60*time.Second)
}

// waitGone waits until no goroutine has fn on its stack.
func waitGone(t *testing.T, fn string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if !strings.Contains(string(buf[:n]), fn) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a goroutine running %s is still there after %s", fn, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAs checks the escape hatches.
func TestAs(t *testing.T) {
	c := open(t, sqsURL(t, ""))
	var api *sqs.Client
	if !c.Publisher().As(&api) || api == nil {
		t.Fatal("publisher As(**sqs.Client) failed")
	}
	api = nil
	if !c.Subscriber().As(&api) || api == nil {
		t.Fatal("subscriber As(**sqs.Client) failed")
	}
	var other *int
	if c.Publisher().As(&other) {
		t.Fatal("As(**int) succeeded")
	}
}
