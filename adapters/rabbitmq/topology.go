package rabbitmq

import (
	"context"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
)

// Queue arguments that amqp091-go has no constant for.
const (
	argDeliveryLimit = "x-delivery-limit"
	argDLX           = "x-dead-letter-exchange"
	argDLRK          = "x-dead-letter-routing-key"
)

// delayBuckets are the delays of the retry queues: a nack's delay is
// rounded up to the next one, so a message never comes back early, and
// Capabilities.MaxNackDelay is the last.
var delayBuckets = []time.Duration{
	250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second,
	10 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute,
	10 * time.Minute, 30 * time.Minute, time.Hour,
}

// bucket returns the smallest delay bucket of at least d (the last for
// longer delays, which the portable layer does not pass).
func bucket(d time.Duration) time.Duration {
	for _, b := range delayBuckets {
		if b >= d {
			return b
		}
	}
	return delayBuckets[len(delayBuckets)-1]
}

// declared, when set (by tests), is told the name of every exchange and
// queue declared, so that the tests can delete them afterwards.
var declared func(exchange bool, name string)

func note(exchange bool, name string) {
	if declared != nil {
		declared(exchange, name)
	}
}

// declareExchange declares topic's exchange: durable, of type topic.
func declareExchange(ch *amqp.Channel, topic string) error {
	note(true, topic)
	return ch.ExchangeDeclare(topic, amqp.ExchangeTopic, true, false, false, false, nil)
}

// groupQueue is one queue of a group and the routing key it binds.
type groupQueue struct {
	name string
	key  string
	part int // -1 in the unordered layout
}

// groupQueues returns the queues of group on topic in c's layout.
func (c *core) groupQueues(topic, group string) []groupQueue { return c.cfg.groupQueues(topic, group) }

func (cfg *Config) groupQueues(topic, group string) []groupQueue {
	if cfg.Unordered {
		return []groupQueue{{name: QueueName(topic, group), key: "#", part: -1}}
	}
	qs := make([]groupQueue, cfg.Partitions)
	for p := range qs {
		qs[p] = groupQueue{name: PartitionQueueName(topic, group, p), key: RoutingKey(p), part: p}
	}
	return qs
}

// queueArgs returns the arguments of a group queue of topic. The queues
// of the dead-letter topic itself do not dead-letter.
func (cfg *Config) queueArgs(topic string, partitioned bool) amqp.Table {
	args := amqp.Table{}
	if partitioned {
		args[amqp.QueueTypeArg] = amqp.QueueTypeQuorum
		args[amqp.SingleActiveConsumerArg] = true
	} else {
		args[amqp.QueueTypeArg] = string(cfg.QueueType)
	}
	if topic == cfg.DeadLetterTopic {
		return args
	}
	if cfg.DeliveryLimit > 0 {
		args[argDeliveryLimit] = int64(cfg.DeliveryLimit)
	}
	if cfg.DeadLetterTopic != "" {
		args[argDLX] = cfg.DeadLetterTopic
	}
	return args
}

// declareGroup declares topic's exchange and group's queues bound to it.
// Declaring what exists with the same settings changes nothing; a queue
// that exists with other arguments (another queue type, layout or
// dead-letter setting) is message.ErrInvalidArgument, and closes ch.
func (c *core) declareGroup(ch *amqp.Channel, topic, group string) error {
	return c.cfg.declareGroup(ch, topic, group)
}

func (cfg *Config) declareGroup(ch *amqp.Channel, topic, group string) error {
	const op = "rabbitmq: declare"
	if err := declareExchange(ch, topic); err != nil {
		return declareError(op, "exchange "+topic, err)
	}
	for _, q := range cfg.groupQueues(topic, group) {
		note(false, q.name)
		if _, err := ch.QueueDeclare(q.name, true, false, false, false, cfg.queueArgs(topic, q.part >= 0)); err != nil {
			return declareError(op, "queue "+q.name, err)
		}
		if err := ch.QueueBind(q.name, q.key, topic, false, nil); err != nil {
			return declareError(op, "binding of "+q.name, err)
		}
	}
	return nil
}

// declareRetry declares the delay queue of bucket b for queue q: messages
// wait there b, then the broker dead-letters them back to q through the
// default exchange.
func declareRetry(ch *amqp.Channel, q string, b time.Duration) (string, error) {
	name := retryQueueName(q, b.String())
	note(false, name)
	_, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{
		amqp.QueueTypeArg:       amqp.QueueTypeClassic,
		amqp.QueueMessageTTLArg: b.Milliseconds(),
		argDLX:                  "",
		argDLRK:                 q,
	})
	if err != nil {
		return "", declareError("rabbitmq: nack", "retry queue "+name, err)
	}
	return name, nil
}

// declareDeadLetter declares the dead-letter topic and its group.
func (c *core) declareDeadLetter(ctx context.Context) error {
	ch, _, err := c.channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	// The dead-letter group itself must not dead-letter into itself.
	dl := c.cfg
	dl.DeadLetterTopic, dl.DeliveryLimit = "", 0
	return dl.declareGroup(ch, c.cfg.DeadLetterTopic, c.cfg.DeadLetterGroup)
}

func declareError(op, what string, err error) error {
	code := ErrorCode(err)
	if code == message.InvalidArgument {
		return message.Errorf(code, op, "%s exists with other settings (queue type, layout, partitions or dead-lettering): %w", what, err)
	}
	if code == message.Unknown {
		code = message.Unavailable
	}
	return message.Errorf(code, op, "%s: %w", what, err)
}

// DeclareGroup declares group on topic for a client opened by this
// package: the topic's exchange and the group's queues, bound to it, as
// the first Subscribe of the group does. On RabbitMQ a group receives only
// what is published after its queues exist, and a Publish that no group's
// queue receives fails with message.ErrNotFound: declare the groups first
// (or subscribe once) before publishing. It is idempotent.
func DeclareGroup(ctx context.Context, client *polybus.Client, topic, group string) error {
	const op = "rabbitmq: declare"
	var c *core
	if client == nil || !client.Subscriber().As(&c) || c == nil {
		return message.Errorf(message.InvalidArgument, op, "not a client of the rabbitmq adapter")
	}
	if err := checkTopic(op, topic); err != nil {
		return err
	}
	if err := checkGroup(op, group); err != nil {
		return err
	}
	ch, _, err := c.channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	return c.declareGroup(ch, topic, group)
}
