// Package rabbitmq is polybus's RabbitMQ adapter, on amqp091-go, proven
// against RabbitMQ 3.10 (no plugins needed).
//
//	import _ "github.com/polybus/polybus/adapters/rabbitmq"
//
//	c, err := polybus.Open(ctx, "amqp://guest:guest@localhost:5672/")
//
// or, from Go, [Open] with a [Config].
//
// # Semantics
//
// Topology, declared idempotently by the first Publish or Subscribe that
// needs it (and by [DeclareGroup]): one durable exchange of type topic per
// topic, named as the topic (so any AMQP client can publish to it), and
// durable queues per consumer group, bound to it. Every group gets every
// message (fan-out); the subscribers of one group compete for them. A topic
// is 1 to 160 bytes of UTF-8 without control characters, not starting with
// "amq."; a group is 1 to 64 of the characters A-Z a-z 0-9 . _ : - (other
// characters are message.ErrInvalidArgument), so that the queue names below
// stay injective.
//
// Partitions: every topic has Config.Partitions partitions (partitions=8
// by default). The publisher sends a message with routing key "p.<n>",
// where n is [Partition] of its key (FNV-1a, modulo the partition count),
// and a message without a key to the partitions in turn. Every client of a
// topic must use the same partition count: a message to a partition that
// a group has no queue for does not reach that group.
//
// Layouts. The ordered layout is the default: each group has one quorum
// queue per partition, named [PartitionQueueName] ("group#n@topic"), bound
// with "p.<n>" and declared with x-single-active-consumer. Every subscriber
// of the group consumes every partition queue, each on a channel of its own;
// the broker delivers a partition's messages to one of them at a time (the
// active one) and makes the next one active when it leaves or its
// connection dies. Per-key order therefore holds across all the group's
// subscribers (OrderPerKeyScaleOut). It is the default because per-key
// order that survives scaling out is what event consumers need and what is
// silently lost otherwise; its cost is one quorum queue per partition and
// group, and a throughput per group bounded by its partitions.
//
// The unordered layout (ordered=false) gives each group one queue,
// [QueueName] ("group@topic"), bound with "#", whose subscribers compete for
// every message: as much parallelism as subscribers, per-key order only
// within one subscriber. Its queues are quorum queues (queue_type=quorum,
// the default) or classic ones (queue_type=classic). Partition queues are
// always quorum queues: on 3.10, single active consumer on classic queues
// has a reported crash when several consumers attach before the first
// publish.
//
// Balancing (ordered layout). Each subscription also consumes the group's
// members queue ("group~members@topic", transient, expiring an hour after
// its last consumer leaves), whose consumer count is then the number of
// live subscribers. Every Config.RebalanceInterval (500ms) a subscription
// counts them and, when it is active on more partitions than its share (the
// partition count divided by the members, rounded up), steps back from the
// excess: it stops handing out that partition's messages, waits until every
// one it handed out has been acked or nacked, then closes the partition's
// channel, which returns the messages it had received but not handed out to
// the head of the queue in delivery order and lets the broker activate the
// next waiting subscriber; then it consumes the partition again, at the end
// of the line. As AMQP 0-9-1 says nothing about which consumer is active, a
// subscription publishes a small transient ping (header polybus-amqp-ping)
// straight to a partition queue when it starts consuming it and when the
// member count changes: whoever is active receives it, acks it and so knows.
// Other AMQP consumers of partition queues should ack and drop pings (the
// hand-overs below publish them too). With
// a partition count that is a multiple of the member count, every member
// ends up with the same number of partitions; otherwise some get one less
// (or, with more members than partitions, none). Capabilities.Rebalance is
// 4 rebalance intervals plus 8s (10s by default): a subscriber that joins,
// leaves or whose process dies (its kernel closes its connection) is seen at
// once; one cut off by the network is seen by the broker only after two
// missed heartbeats, which the bound does not cover.
//
// Hand-over: a partition changes hands only after its outgoing subscriber
// has settled every message of it that it handed to a handler, so a later
// message of a key is never handled before an earlier one. A subscriber
// that crashes leaves its unacked messages to be redelivered, which may
// repeat, never reorder. When a subscription stops, it leaves the messages
// it did not handle to the close of its channels (a nack would queue each
// behind later ones of its partition).
//
// Attempts across a hand-over. RabbitMQ 3.10 raises a quorum queue
// message's x-delivery-count whenever it comes back unsettled, whether by
// a nack, a reject, basic.recover or the close of the channel that held
// it: there is no uncounted way to give a delivery back. So the outgoing
// subscriber, before it closes a partition's channel, publishes pings
// straight to the queue (enough to fill its prefetch when it steps back;
// one when it stops) and waits until the broker can send it nothing more
// before them; it then knows every message it gives back without having
// handed it to a handler, and writes them, with a publisher confirm, to
// the partition's hand-over queue ("group#n~handover@topic", durable,
// classic, declared by the first hand-over or redelivery): message ID,
// the count its next delivery will carry, and how many of its deliveries
// no handler saw. The next owner reads that queue
// before it hands out its first delivery with a count, and leaves the
// unhandled deliveries out of Attempt. So a graceful step back keeps
// Attempt exact. Not corrected (Attempt counts one more): messages that
// the portable subscriber had received and handed back unhandled when a
// subscription stops (the adapter cannot tell them from a handler's
// failure), a message published during a stopping subscription's close,
// and everything unacked after a crash or a connection loss. Messages
// without a message ID get no correction. The unordered layout has no
// hand-overs and no correction.
//
// Retained is not declared: a group's queues receive only what is
// published after they exist, whatever subscriber.StartAt says. Create the
// groups before publishing: subscribe once or call [DeclareGroup]. A
// Publish that no queue receives fails with message.ErrNotFound: every
// message is published with the mandatory flag and the broker returns an
// unroutable one (allow_unroutable=true lets the broker drop it instead,
// for topics that may legitimately have no consumer yet).
//
// Publishing: messages are persistent (delivery mode 2) and publisher
// confirms are always on. Each batch takes an AMQP channel of its own from
// a pool (Config.PublisherChannels idle ones are kept; a channel is never
// used by two goroutines at once), publishes all its messages in order,
// then waits for all their confirms: Publish returns nil only when the
// broker has confirmed every message. A message the broker nacks, or whose
// confirm is lost with the connection, fails with message.ErrUnavailable
// (the caller retries; a retry may store a second copy). When ctx ends
// first, Publish returns ctx's error and the channel is drained in the
// background. A message's ID travels in the AMQP message-id property (in
// header polybus-amqp-id when over 255 bytes), its time in the timestamp
// property (seconds) and exactly in header polybus-amqp-time (Unix
// nanoseconds), its key in header polybus-amqp-key, each metadata entry as
// a header of the same name and string value, except names RabbitMQ acts on
// or sets (CC, BCC, x-death, x-delivery-count, x-received-from,
// x-first-death-*, x-last-death-*), names of polybus's own headers and names
// over 255 bytes, which travel as polybus-amqp-md-<base64url name>. A
// message from another client arrives with its headers as metadata (non
// string values in their text form), "<queue>:<delivery tag>" as ID when
// it has no message-id, and its timestamp property as time.
// MaxMessageSize is Config.MaxMessageSize (16 MiB by default; at most the
// broker's 128 MiB default less 64 KiB).
//
// Subscribing: each consumer's QoS prefetch is the subscriber's Prefetch
// (per partition queue in the ordered layout; the portable subscriber still
// hands out at most Prefetch at a time). Acks are AMQP acks, one per
// message (AMQP does not confirm them). A nack without delay is a nack with
// requeue (the message may then come after later ones of its key that the
// subscriber had already received). A nack with a delay publishes a copy (with confirm) to the delay
// queue of the delay's bucket, "group~<bucket>@topic" or
// "group#n~<bucket>@topic", a durable classic queue with that message TTL
// that dead-letters back to the group's queue through the default exchange,
// then acks the original: no plugin is needed. Delays are rounded up to the
// buckets 250ms, 500ms, 1s, 2s, 5s, 10s, 30s, 1m, 2m, 5m, 10m, 30m and 1h
// (MaxNackDelay), so a message never comes back early; delay queues are
// declared when first used. A copy that cannot be published is requeued at
// once instead. Attempt is declared with quorum queues (always in the
// ordered layout): it is x-delivery-count plus one, plus the deliveries
// before a delayed nack (carried in header polybus-amqp-attempts);
// classic queues count nothing, and their messages have Attempt 0 and
// RabbitMQ's redelivered flag. Delivery.Partition is the partition in the
// ordered layout (-1 otherwise) and BrokerID the delivery tag.
// OpenConfig.AckDeadline is not used: RabbitMQ's consumer timeout is a
// broker setting.
//
// Native dead-lettering: with dead_letter_topic=T the group queues are
// declared with x-dead-letter-exchange T, and T's exchange and the queue of
// group dead_letter_group (polybus-dlq, the group `polybus dlq` reads) are
// declared at Open. With delivery_limit=N too (x-delivery-limit, quorum
// queues), the broker dead-letters a message after N failed deliveries, and
// NativeDeadLetter is declared. The portable middleware.DLQ works with or
// without it. Queue arguments are fixed when a queue is created: opening a
// group with other settings (queue type, layout, partitions,
// dead-lettering) than its existing queues fails with
// message.ErrInvalidArgument naming the queue.
//
// Reconnection: the client holds one connection, shared by its publisher
// and subscribers, and dials again when it is lost, with a pause that
// starts at a tenth of Config.ReconnectWait and doubles up to it; a
// Publish meanwhile fails at once with message.ErrUnavailable and does not
// dial more often than that. Each subscription has a goroutine that, after
// a loss, declares its topology again and consumes again with the same
// backoff; the subscription resumes by itself. Messages unacked when the
// connection dropped are redelivered by the broker.
//
// Capabilities: OrderPerKey, OrderPerKeyScaleOut and Rebalance (ordered
// layout), ConsumerGroups, FanOut, Nack, NackDelay (MaxNackDelay 1h),
// AttemptCount (quorum queues), Persistent, MaxMessageSize as above,
// NativeDeadLetter with dead_letter_topic and delivery_limit; not Retained.
//
// # URLs
//
//	amqp://user:pass@host:5672/vhost     (the vhost is the URL's path; "/" is %2f, or empty)
//	amqps://user:pass@host:5671/vhost    AMQP over TLS (1.2 or later)
//
// Query parameters:
//
//	queue_type=quorum|classic   queues of the unordered layout (quorum)
//	ordered=true|false          the ordered layout (true) or the unordered one
//	partitions=8                partitions per topic (1..256; the same on every client)
//	rebalance_interval=500ms    how often a subscriber rebalances (ordered layout)
//	connect_timeout=5s          bound on Open and each reconnection attempt
//	reconnect_wait=1s           longest pause between reconnection attempts
//	heartbeat=10s               AMQP heartbeat
//	delivery_limit=0            x-delivery-limit of quorum queues (0: none)
//	dead_letter_topic=          native dead-lettering to this topic ("": none)
//	dead_letter_group=polybus-dlq   the group declared on dead_letter_topic
//	allow_unroutable=false      let the broker drop messages no queue receives
//	max_message_size=16777216   declared size limit in bytes
//	publisher_channels=16       idle publisher channels kept
//	tls_ca=FILE                 amqps: PEM root CAs (default: the system's)
//	tls_cert=FILE, tls_key=FILE amqps: a client certificate and its key
//	tls_server_name=NAME        amqps: the name to verify (default: the host)
//
// An unknown parameter, a malformed value, a TLS parameter on amqp:// or a
// parameter given twice is message.ErrInvalidArgument, naming it.
//
// # Errors
//
// [ErrorCode] maps amqp091-go and broker errors onto polybus codes: a lost
// or closed connection or channel, network errors and the broker's
// connection-forced and internal errors are Unavailable; access refused
// (a wrong login, an unknown vhost, permissions) and not-allowed are
// PermissionDenied; not-found and no-route are NotFound; precondition
// failed (a queue or exchange that exists with other arguments) and syntax
// errors are InvalidArgument; content-too-large is TooLarge; resource
// locked and resource errors are ResourceExhausted. The amqp091-go error
// stays reachable with errors.As. Open fails within connect_timeout with
// Unavailable when no broker answers (refused, or one that never completes
// the handshake), and with PermissionDenied, without retrying, when the
// broker refuses the credentials or the vhost (RabbitMQ itself answers a
// failed login after about 3s), or when the TLS handshake fails on a
// certificate: the server's (unknown CA, a name other than tls_server_name
// or the host, expired) or the client's (the server's alert that it is
// missing, unknown or bad). A subscription whose topology or login is
// refused after a reconnection ends with that error. The tests prove
// amqps through a TLS front that the test runs before the broker's plain
// port (a CA, a server and a client certificate made by the test, client
// certificates required): a round trip and each refusal above. RabbitMQ's
// own TLS listener is not tested.
//
// # As
//
// The publisher's and subscriber's As offer **amqp091.Connection, the
// client's current connection (nil while disconnected). A received
// message's As offers *amqp091.Delivery, with its headers, redelivered
// flag and delivery tag. Acking it directly bypasses the portable
// subscriber, which then acks it again (a channel error).
package rabbitmq
