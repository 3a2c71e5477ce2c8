package brokertest_test

// Smoke tests: each broker takes exactly one message from its raw Go client
// and gives the same bytes back. They prove the brokers that scripts/brokers
// (or Docker) provides are real and correctly configured, not polybus code.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/segmentio/kafka-go"

	"github.com/polybus/polybus/internal/brokertest"
)

// roundTripper is one broker's raw client reduced to what the smoke tests
// need. Every wait is bounded by the context.
type roundTripper interface {
	// Setup creates the destination (topic, queue, stream, table).
	Setup(ctx context.Context) error
	// Publish sends one message and returns once the broker has durably
	// accepted it.
	Publish(ctx context.Context, payload []byte) error
	// Receive returns exactly one message and acknowledges it.
	Receive(ctx context.Context) ([]byte, error)
	// Teardown deletes the destination.
	Teardown(ctx context.Context) error
	Close() error
}

type opener func(t *testing.T, rawURL, dest string) roundTripper

var brokers = []struct {
	name string
	open opener
	// binary: the broker carries arbitrary bytes (SQS bodies must be text).
	binary bool
}{
	{"kafka", openKafka, true},
	{"rabbitmq", openAMQP, true},
	{"sqs", openSQS, false},
	{"nats", openNATS, true},
	{"postgres", openPostgres, true},
}

func uniqueName(prefix string) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return fmt.Sprintf("%s-%d-%s", prefix, time.Now().UnixNano(), hex.EncodeToString(b[:]))
}

func payloadFor(dest string, binary bool) []byte {
	p := []byte("polybus smoke " + dest)
	if binary {
		p = append(p, 0x00, 0x01, 0xfe, 0xff)
	}
	return p
}

func TestSmoke(t *testing.T) {
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			u := brokertest.URL(t, b.name)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			dest := uniqueName("smoke")
			rt := b.open(t, u, dest)
			defer rt.Close()
			if err := rt.Setup(ctx); err != nil {
				t.Fatalf("setup %s: %v", dest, err)
			}
			defer func() {
				if err := rt.Teardown(context.WithoutCancel(ctx)); err != nil {
					t.Logf("teardown %s: %v", dest, err)
				}
			}()
			want := payloadFor(dest, b.binary)
			if err := rt.Publish(ctx, want); err != nil {
				t.Fatalf("publish: %v", err)
			}
			got, err := rt.Receive(ctx)
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("payload mismatch:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// ---------------------------------------------------------------- kafka

type kafkaRT struct {
	addrs []string
	topic string
}

func openKafka(t *testing.T, rawURL, dest string) roundTripper {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "kafka" || u.Host == "" {
		t.Fatalf("bad kafka URL %q: %v", rawURL, err)
	}
	return &kafkaRT{addrs: strings.Split(u.Host, ","), topic: dest}
}

func (k *kafkaRT) dialController(ctx context.Context) (*kafka.Conn, error) {
	d := &kafka.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", k.addrs[0])
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return nil, err
	}
	return d.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
}

func (k *kafkaRT) Setup(ctx context.Context) error {
	conn, err := k.dialController(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: k.topic, NumPartitions: 1, ReplicationFactor: 1}); err != nil {
		return err
	}
	// The topic exists once every partition has a leader in the metadata.
	return poll(ctx, func() error {
		c, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", k.addrs[0])
		if err != nil {
			return err
		}
		defer c.Close()
		parts, err := c.ReadPartitions(k.topic)
		if err != nil {
			return err
		}
		if len(parts) != 1 || parts[0].Leader.Host == "" {
			return fmt.Errorf("topic %s: no leader yet (%d partitions)", k.topic, len(parts))
		}
		return nil
	})
}

func (k *kafkaRT) Publish(ctx context.Context, payload []byte) error {
	w := &kafka.Writer{
		Addr:         kafka.TCP(k.addrs...),
		Topic:        k.topic,
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
		MaxAttempts:  5,
	}
	defer w.Close()
	return w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: payload})
}

func (k *kafkaRT) Receive(ctx context.Context) ([]byte, error) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     k.addrs,
		Topic:       k.topic,
		GroupID:     "g-" + k.topic,
		StartOffset: kafka.FirstOffset,
		MaxWait:     250 * time.Millisecond,
	})
	defer r.Close()
	m, err := r.FetchMessage(ctx)
	// Right after a restart the group coordinator is still loading; the
	// reader reports that after its attempts and heals by itself, so a
	// transient error only means "ask again".
	for err != nil && ctx.Err() == nil && isTemporary(err) {
		m, err = r.FetchMessage(ctx)
	}
	if err != nil {
		return nil, err
	}
	err = r.CommitMessages(ctx, m)
	for err != nil && ctx.Err() == nil && isTemporary(err) {
		time.Sleep(100 * time.Millisecond) // back off while the coordinator loads
		err = r.CommitMessages(ctx, m)
	}
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return m.Value, nil
}

// isTemporary reports whether err is a Kafka error the broker marks
// retriable (coordinator loading or moving, leader elections).
func isTemporary(err error) bool {
	var ke kafka.Error
	return errors.As(err, &ke) && ke.Temporary()
}

func (k *kafkaRT) Teardown(ctx context.Context) error {
	conn, err := k.dialController(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.DeleteTopics(k.topic)
}

func (k *kafkaRT) Close() error { return nil }

// ---------------------------------------------------------------- rabbitmq

type amqpRT struct {
	conn  *amqp.Connection
	ch    *amqp.Channel
	queue string
}

func openAMQP(t *testing.T, rawURL, dest string) roundTripper {
	conn, err := amqp.DialConfig(rawURL, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
	if err != nil {
		t.Fatalf("amqp dial: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		t.Fatalf("amqp channel: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		conn.Close()
		t.Fatalf("amqp confirm mode: %v", err)
	}
	return &amqpRT{conn: conn, ch: ch, queue: dest}
}

func (a *amqpRT) Setup(ctx context.Context) error {
	_, err := a.ch.QueueDeclare(a.queue, true, false, false, false, nil)
	return err
}

func (a *amqpRT) Publish(ctx context.Context, payload []byte) error {
	dc, err := a.ch.PublishWithDeferredConfirmWithContext(ctx, "", a.queue, true, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent,
		ContentType:  "application/octet-stream",
		Body:         payload,
	})
	if err != nil {
		return err
	}
	if dc == nil {
		return errors.New("channel is not in confirm mode")
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("broker nacked the publish")
	}
	return nil
}

func (a *amqpRT) Receive(ctx context.Context) ([]byte, error) {
	tag := uniqueName("c")
	deliveries, err := a.ch.ConsumeWithContext(ctx, a.queue, tag, false, false, false, false, nil)
	if err != nil {
		return nil, err
	}
	defer a.ch.Cancel(tag, false) //nolint:errcheck
	select {
	case d, ok := <-deliveries:
		if !ok {
			return nil, errors.New("delivery channel closed")
		}
		return d.Body, d.Ack(false)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (a *amqpRT) Teardown(ctx context.Context) error {
	_, err := a.ch.QueueDelete(a.queue, false, false, false)
	return err
}

func (a *amqpRT) Close() error { return a.conn.Close() }

// ---------------------------------------------------------------- sqs

type sqsRT struct {
	client   *sqs.Client
	name     string
	queueURL string
}

// sqsEndpoint turns sqs://HOST:PORT?region=R into the plain-HTTP endpoint and
// region of a local SQS server (ElasticMQ).
func sqsEndpoint(rawURL string) (endpoint, region string, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", "", err
	}
	if u.Scheme != "sqs" || u.Host == "" {
		return "", "", fmt.Errorf("want sqs://host:port?region=..., got %q", rawURL)
	}
	region = u.Query().Get("region")
	if region == "" {
		region = "us-east-1"
	}
	return "http://" + u.Host, region, nil
}

func openSQS(t *testing.T, rawURL, dest string) roundTripper {
	endpoint, region, err := sqsEndpoint(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	client := sqs.New(sqs.Options{
		Region:       region,
		BaseEndpoint: aws.String(endpoint),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "polybus", SecretAccessKey: "polybus", Source: "brokertest"}, nil
		}),
	})
	return &sqsRT{client: client, name: dest}
}

func (s *sqsRT) url(ctx context.Context) (string, error) {
	if s.queueURL != "" {
		return s.queueURL, nil
	}
	// A restarted ElasticMQ answers before it has restored every queue
	// from its store (one by one: thousands take seconds), so a queue
	// that does not exist yet is asked for again until ctx ends.
	for {
		out, err := s.client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(s.name)})
		var missing *sqstypes.QueueDoesNotExist
		if errors.As(err, &missing) && ctx.Err() == nil {
			select {
			case <-time.After(200 * time.Millisecond):
				continue
			case <-ctx.Done():
			}
		}
		if err != nil {
			return "", err
		}
		s.queueURL = aws.ToString(out.QueueUrl)
		return s.queueURL, nil
	}
}

func (s *sqsRT) Setup(ctx context.Context) error {
	out, err := s.client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(s.name)})
	if err != nil {
		return err
	}
	s.queueURL = aws.ToString(out.QueueUrl)
	return nil
}

func (s *sqsRT) Publish(ctx context.Context, payload []byte) error {
	q, err := s.url(ctx)
	if err != nil {
		return err
	}
	_, err = s.client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(q), MessageBody: aws.String(string(payload))})
	return err
}

func (s *sqsRT) Receive(ctx context.Context) ([]byte, error) {
	q, err := s.url(ctx)
	if err != nil {
		return nil, err
	}
	for {
		out, err := s.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:            aws.String(q),
			MaxNumberOfMessages: 1,
			WaitTimeSeconds:     2, // long poll: the server holds the call
		})
		if err != nil {
			return nil, err
		}
		if len(out.Messages) == 1 {
			m := out.Messages[0]
			if _, err := s.client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(q), ReceiptHandle: m.ReceiptHandle}); err != nil {
				return nil, fmt.Errorf("delete: %w", err)
			}
			return []byte(aws.ToString(m.Body)), nil
		}
		if len(out.Messages) > 1 {
			return nil, fmt.Errorf("asked for 1 message, got %d", len(out.Messages))
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

func (s *sqsRT) Teardown(ctx context.Context) error {
	q, err := s.url(ctx)
	if err != nil {
		return err
	}
	_, err = s.client.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(q)})
	return err
}

func (s *sqsRT) Close() error { return nil }

// ---------------------------------------------------------------- nats

type natsRT struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  string
	subject string
}

func openNATS(t *testing.T, rawURL, dest string) roundTripper {
	nc, err := nats.Connect(rawURL, nats.Timeout(10*time.Second), nats.Name("brokertest"))
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatalf("jetstream: %v", err)
	}
	return &natsRT{nc: nc, js: js, stream: dest, subject: strings.ReplaceAll(dest, "-", ".")}
}

func (n *natsRT) Setup(ctx context.Context) error {
	_, err := n.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     n.stream,
		Subjects: []string{n.subject},
		Storage:  jetstream.FileStorage,
	})
	return err
}

func (n *natsRT) Publish(ctx context.Context, payload []byte) error {
	ack, err := n.js.Publish(ctx, n.subject, payload)
	if err != nil {
		return err
	}
	if ack.Stream != n.stream {
		return fmt.Errorf("ack from stream %q, want %q", ack.Stream, n.stream)
	}
	return nil
}

func (n *natsRT) Receive(ctx context.Context) ([]byte, error) {
	cons, err := n.js.CreateOrUpdateConsumer(ctx, n.stream, jetstream.ConsumerConfig{
		Durable:   "brokertest",
		AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		return nil, err
	}
	wait := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		wait = time.Until(dl)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, err
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			return nil, fmt.Errorf("ack: %w", err)
		}
		return m.Data(), nil
	}
	if err := batch.Error(); err != nil {
		return nil, err
	}
	return nil, errors.New("no message within the fetch wait")
}

func (n *natsRT) Teardown(ctx context.Context) error { return n.js.DeleteStream(ctx, n.stream) }

func (n *natsRT) Close() error {
	n.nc.Close()
	return nil
}

// ---------------------------------------------------------------- postgres

type pgRT struct {
	conn  *pgx.Conn
	table string
}

func openPostgres(t *testing.T, rawURL, dest string) roundTripper {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, rawURL)
	if err != nil {
		t.Fatalf("postgres connect: %v", err)
	}
	return &pgRT{conn: conn, table: pgx.Identifier{strings.ReplaceAll(dest, "-", "_")}.Sanitize()}
}

func (p *pgRT) Setup(ctx context.Context) error {
	_, err := p.conn.Exec(ctx, "create table "+p.table+" (id bigserial primary key, payload bytea not null)")
	return err
}

func (p *pgRT) Publish(ctx context.Context, payload []byte) error {
	_, err := p.conn.Exec(ctx, "insert into "+p.table+" (payload) values ($1)", payload)
	return err
}

func (p *pgRT) Receive(ctx context.Context) ([]byte, error) {
	var got []byte
	err := p.conn.QueryRow(ctx,
		"delete from "+p.table+" where id = (select min(id) from "+p.table+") returning payload").Scan(&got)
	return got, err
}

func (p *pgRT) Teardown(ctx context.Context) error {
	_, err := p.conn.Exec(ctx, "drop table if exists "+p.table)
	return err
}

func (p *pgRT) Close() error { return p.conn.Close(context.Background()) }

// ---------------------------------------------------------------- helpers

// poll calls f until it returns nil or ctx ends, backing off between tries.
func poll(ctx context.Context, f func() error) error {
	delay := 50 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-timer.C:
		}
		if delay < time.Second {
			delay *= 2
		}
	}
}
