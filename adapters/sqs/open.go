package sqs

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
)

// Scheme is the URL scheme that this package registers: sqs://.
const Scheme = "sqs"

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

// Open connects to SQS as cfg says and returns a Client over it. It makes
// one call (ListQueues under cfg.Prefix) to check the endpoint and the
// credentials, and fails within cfg.ConnectTimeout (or when ctx ends) with
// message.ErrUnavailable when SQS does not answer.
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
// the SQS client, its HTTP transport, the naming and the group registry.
type core struct {
	cfg   Config
	api   *sqs.Client
	tr    *http.Transport
	names namer
	reg   *registry
	caps  message.Capabilities
	merge merger
}

// where describes the endpoint in errors.
func (c *core) where() string {
	if c.cfg.Endpoint != "" {
		return c.cfg.Endpoint
	}
	return "AWS SQS in " + c.cfg.Region
}

func connect(ctx context.Context, cfg *Config) (*core, error) {
	const op = "sqs: open"
	dial := (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext
	if cfg.wrapDial != nil {
		dial = cfg.wrapDial(dial)
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dial,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: cfg.ConnectTimeout,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		// Below the idle timeout of common servers (pekko-http, under
		// ElasticMQ: 60s), so that polybus drops an idle connection
		// before the server does.
		IdleConnTimeout:       30 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	hc := &http.Client{Transport: tr}
	c := &core{cfg: *cfg, tr: tr, names: namer{prefix: cfg.Prefix, fifo: cfg.FIFO}}

	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	opts := func(o *sqs.Options) {
		// The portable layer decides on retries (publisher.Driver and
		// subscriber.Subscription obligations): one attempt per call.
		o.Retryer = aws.NopRetryer{}
		o.RetryMaxAttempts = 1
		o.HTTPClient = memBodyClient{hc}
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	}
	if cfg.Endpoint != "" && !cfg.CredentialChain {
		// A local server: static credentials, dummy ones when none are
		// given, so that nothing waits on instance metadata.
		ak, sk := cfg.AccessKey, cfg.SecretKey
		if ak == "" {
			ak, sk = "polybus", "polybus"
		}
		c.api = sqs.New(sqs.Options{
			Region:      cfg.Region,
			Credentials: credentials.NewStaticCredentialsProvider(ak, sk, cfg.SessionToken),
		}, opts)
	} else {
		var load []func(*awsconfig.LoadOptions) error
		if cfg.Region != "" {
			load = append(load, awsconfig.WithRegion(cfg.Region))
		}
		if cfg.AccessKey != "" {
			load = append(load, awsconfig.WithCredentialsProvider(
				credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)))
		}
		ac, err := awsconfig.LoadDefaultConfig(ctx, load...)
		if err != nil {
			tr.CloseIdleConnections()
			return nil, message.Errorf(message.InvalidArgument, op, "load the AWS configuration: %w", err)
		}
		if ac.Region == "" {
			tr.CloseIdleConnections()
			return nil, message.Errorf(message.InvalidArgument, op, "no region: give region=... or set AWS_REGION")
		}
		c.cfg.Region = ac.Region
		if bc, ok := ac.HTTPClient.(*awshttp.BuildableClient); ok {
			// The configuration's transport carries what it loaded (a CA
			// bundle, a proxy); polybus's own settings go on top of it, on
			// a transport whose idle connections Close can close.
			tr.CloseIdleConnections()
			tr = bc.GetTransport()
			tr.DialContext = dial
			tr.TLSHandshakeTimeout = cfg.ConnectTimeout
			tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 256
			hc.Transport = tr
			c.tr = tr
		}
		ac.HTTPClient = memBodyClient{hc}
		c.api = sqs.NewFromConfig(ac, opts)
	}
	// One call to learn that the endpoint answers and takes the
	// credentials; tried again (it changes nothing) after a transient
	// failure (a server that is still starting, a connection reset).
	var err error
	for attempt := 1; ; attempt++ {
		_, err = c.api.ListQueues(ctx, &sqs.ListQueuesInput{QueueNamePrefix: aws.String(cfg.Prefix), MaxResults: aws.Int32(1)})
		if err == nil || ctx.Err() != nil || attempt == 3 || ErrorCode(err) != message.Unavailable || isRefused(err) {
			break
		}
		select {
		case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if err != nil {
		tr.CloseIdleConnections()
		if ctx.Err() != nil {
			return nil, message.Errorf(message.Unavailable, op, "no SQS endpoint answered at %s within %s: %w", c.where(), cfg.ConnectTimeout, err)
		}
		code := ErrorCode(err)
		if code == message.Unknown {
			code = message.Unavailable
		}
		return nil, message.Errorf(code, op, "%s: %w", c.where(), err)
	}
	c.caps = capabilities(&c.cfg)
	c.reg = newRegistry(c)
	return c, nil
}

// memBodyClient sends every request with its body as an in-memory reader
// that net/http knows, instead of the SDK's wrapper.
//
// The SDK (smithy-go) hands net/http a body wrapper that it closes as soon
// as Do returns, and whose WriteTo answers io.EOF once closed. net/http,
// not knowing that wrapper, flushes the headers and copies the body straight
// to the socket, then reads the body once more to check that it is at its
// end: the server may have answered in between, Do returned, the SDK closed
// the wrapper, and that last read (a WriteTo) fails with io.EOF. The
// transport's write loop then closes the connection under the response
// body that the caller is still reading ("use of closed network
// connection" after an HTTP 200), and a ReceiveMessage so cut short leaves
// its messages invisible until their visibility timeout ends. A
// bytes.Reader of net/http's own kind is written with the headers in one
// flush and cannot fail that way.
type memBodyClient struct{ *http.Client }

func (c memBodyClient) Do(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		b, err := readBody(req.Body, req.ContentLength)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		req.ContentLength = int64(len(b))
	}
	return c.Client.Do(req)
}

// readBody reads body whole: into one buffer of its declared length n
// when it has one (the SDK's serialised requests do), so that the copy is
// made once, with no growing of a buffer.
func readBody(body io.Reader, n int64) ([]byte, error) {
	if n <= 0 {
		return io.ReadAll(body)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(body, b); err != nil {
		return nil, err
	}
	return b, nil
}

// capabilities is the one declaration of what a client of cfg guarantees.
func capabilities(cfg *Config) message.Capabilities {
	caps := message.Capabilities{
		Name:             "sqs",
		ConsumerGroups:   true,
		FanOut:           true,
		Retained:         false,
		Nack:             true,
		NackDelay:        true,
		MaxNackDelay:     maxVisibility,
		AttemptCount:     true,
		MaxMessageSize:   MaxMessageSize,
		NativeDeadLetter: true,
		Persistent:       true,
	}
	if cfg.FIFO {
		caps.Name = "sqs-fifo"
		caps.OrderPerKey = true
		caps.OrderPerKeyScaleOut = true
		// A subscriber that dies holds its messages, and so their
		// groups, until their visibility timeout ends.
		caps.Rebalance = cfg.VisibilityTimeout
	}
	return caps
}

// close releases the HTTP connections. It runs once, as the client's last
// step.
func (c *core) close() error {
	c.reg.close()
	c.merge.wg.Wait()
	c.tr.CloseIdleConnections()
	return nil
}

// as implements the drivers' As.
func (c *core) as(target any) bool {
	switch t := target.(type) {
	case **sqs.Client:
		*t = c.api
	case **core: // DeleteTopic's way in
		*t = c
	default:
		return false
	}
	return true
}
