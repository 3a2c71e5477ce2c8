// Package kafka is polybus's Apache Kafka adapter, on
// github.com/segmentio/kafka-go.
//
//	import _ "github.com/polybus/polybus/adapters/kafka"
//
//	c, err := polybus.Open(ctx, "kafka://127.0.0.1:9092?partitions=6")
//
// or, from Go, [Open] with a [Config].
//
// # Semantics
//
// Layout: a polybus topic is a Kafka topic of the same name (ASCII letters,
// digits, '.', '_' and '-', at most 249 bytes; other names are
// message.ErrInvalidArgument). polybus creates it explicitly the first time
// a client publishes or subscribes to it, with Config.Partitions (default
// 8, so that a group's subscribers share the work) and
// Config.Replication (default 1, for a single broker), and never
// relies on the broker's auto-creation; a topic that exists keeps its own
// settings. Before the first use, it waits until the metadata names a
// leader for every partition and every leader answers for its partition
// (a ListOffsets), so the first write does not meet NotLeaderForPartition.
// Each client remembers the topics it has seen.
//
// Publishing: Message.Key is the record key (an empty key is a null key),
// Payload the value, and Time the record timestamp (milliseconds). The ID
// travels in the header "polybus-id" and the exact Time in "polybus-time"
// (decimal nanoseconds); each metadata entry is a header of the same name
// and value, byte for byte (those two names are reserved: metadata that
// uses them is message.ErrInvalidArgument). A keyed message goes to the
// partition that the Java client's default partitioner picks
// (murmur2(key) mod partitions, kafka-go's Murmur2Balancer), so polybus,
// the Java client and librdkafka's murmur2 partitioners agree on every
// key. The keyless messages of one batch go together to one partition,
// the next batch's to the next one. Each partition's records of a batch go
// in one produce request with acks=all (all in-sync replicas), partitions
// concurrently, with no linger: the portable publisher has already
// gathered concurrent Publish calls into the batch, so a lone Publish
// takes one round trip, not kafka-go Writer's one-second batch timeout.
// Publish returns nil only after the broker acknowledged every message.
// A partition whose records pass the broker's batch limit gets several
// requests, one after the other; after a failed one the rest of that
// partition's records are not sent, so a key's messages never land out of
// order. Failures are reported per message (a *publisher.BatchError).
//
// Size: Capabilities.MaxMessageSize is the broker's message.max.bytes
// (read with DescribeConfigs when the client opens; DefaultMessageMaxBytes
// when the broker does not say) less 1 KiB for the batch header and the
// ID and time headers. The portable publisher refuses a larger
// message.Message.Size before anything of the call is sent; a message
// under it whose record still passes the limit (very many metadata
// entries, a huge ID) fails alone with message.ErrTooLarge, before it is
// sent. A topic whose own max.message.bytes is lower makes the broker
// refuse such messages, also as ErrTooLarge.
//
// Kafka-go has no idempotent producer and no transactions: a publish that
// failed or timed out may have been written, and a retry then writes it
// again. Every copy keeps the same ID, so the dedupe middleware
// (middleware.Dedupe) drops the repeats on the consuming side; with
// middleware/sqlstore.TxDedupe the handler's own database work and the
// processed mark commit together, which gives effectively-once handling
// without Kafka transactions.
//
// Subscribing: each Subscribe call is a member of the Kafka consumer
// group named by subscriber.Group (kafka-go's ConsumerGroup, with its
// explicit generations and assignments; range, then round-robin
// assignment). For each partition that a generation assigns it, the member
// runs a partition reader from the group's committed offset; a new group
// starts at the earliest offset (subscriber.Earliest) or the latest
// (subscriber.Latest), resolved and committed when the group's first
// generation starts, which Subscribe waits for (at most connect_timeout).
// A key lives on one partition and a partition has one owner per
// generation, so per-key order holds across every subscriber of a group
// (OrderPerKeyScaleOut).
//
// Acks and commits: offsets are committed synchronously on every ack
// batch, for each partition up to its lowest message not yet acked (or,
// with none, just past the last one the subscription took from the
// partition's reader; what the reader fetched ahead is never passed): with
// handlers of different keys finishing out of order, a commit never
// passes a message whose handler has not finished. A crash therefore
// redelivers, to the partition's next owner, every unacked message and
// any acked ones behind it (at-least-once; duplicates keep their ID).
// commit_interval=D (Config.CommitInterval) trades that for fewer
// commits: Ack returns at once and the subscription commits every D, at
// each rebalance and at Close, so a crash can also redeliver up to D's
// worth of acked messages, and an at-most-once subscriber's acks are not
// confirmed before its handlers run. Use it for high-throughput
// at-least-once consumers; the default suits every mode.
//
// Rebalances: when a member joins or leaves (or dies, noticed within
// session_timeout), kafka-go ends the generation at the next heartbeat.
// The member then stops fetching and hands out nothing more of that
// generation, waits up to revoke_timeout for the handlers of what it
// already handed out, commits, and only then rejoins; messages still
// unfinished after revoke_timeout are redelivered by the next owner, in
// order, from the committed offset. No commit of an ended generation is
// ever sent (acks that arrive later are dropped, and the broker would
// refuse them), so a membership change may redeliver but never reorders a
// key. Capabilities.Rebalance declares session_timeout + heartbeat_interval
// + revoke_timeout + max_wait + 5s (26.5s by default).
//
// Nack: Kafka has no per-message nack, so a nack is handled in place by
// the subscription. The nacked message is held and handed back after the
// nack's delay (NackDelay is declared, with no upper limit); later
// messages of the same key (and partition) that the subscription has not
// handed out yet wait behind it, and nothing of its partition is
// committed past it meanwhile. Messages of other keys keep flowing. Later
// messages of the key that were handed out before the nack (queued in the
// portable subscriber) still run first, as on every broker: per-key order
// holds as long as none is nacked. When more than 4 x Prefetch messages
// wait behind held keys, fetching pauses until one is due. A rebalance or
// restart drops the holds: the next owner fetches those messages again at
// once, without the rest of the delay.
//
// Attempt count: there is no delivery counter in Kafka, so the
// subscription counts: a message is Attempt 1 when first handed out and
// rises with each nack it redelivers in place (Redelivered is Attempt >
// 1). The count lives in the subscription's memory: a message redelivered
// by another member (after a rebalance) or after a restart starts again
// at Attempt 1 (a member that gets the partition back continues its own
// count). AttemptCount is declared on that understanding; the retry and
// dead-letter middlewares then bound retries per owner, not forever.
// Carrying the count across owners was weighed and left out: a record
// cannot be rewritten, so a header cannot count re-reads; a retry topic or
// a per-group attempt log costs a write per nack and breaks a key's order
// or needs its own compaction; the offset commit's metadata string could
// hold the counts of a partition's nacked offsets at and above the
// committed one, but only if every nack were committed at once (a round
// trip per nack, and kafka-go's generation commits carry no metadata), and
// a crash would still lose the nacks since the last commit. An
// application that needs an exact bound across restarts counts attempts
// in its own store keyed by Message.ID (the dedupe store does the same).
//
// Delivery facts: Partition and Offset are the record's; BrokerID is
// "partition:offset". A record that no polybus publisher wrote (another
// client's) arrives with its headers as metadata (of a repeated header,
// the first value), the ID "topic:partition:offset" and its record
// timestamp as Time. There is no native dead-lettering.
//
// Capabilities: OrderPerKey, OrderPerKeyScaleOut (with Rebalance as
// above), ConsumerGroups, FanOut, Retained, Nack, NackDelay, AttemptCount
// (in the sense above), Persistent, MaxMessageSize as above; no
// NativeDeadLetter.
//
// # URLs
//
//	kafka://host[:9092][,host2:9092]   bootstrap brokers (port 9092 by default; with
//	                                   several hosts, give each its port)
//	kafka://user:pass@host?sasl=plain  SASL credentials from the userinfo
//
// Query parameters, each with its default:
//
//	partitions=8            partitions of the topics polybus creates
//	replication=1           replication factor of the topics polybus creates
//	client_id=polybus       client id sent to the brokers
//	connect_timeout=10s     bound on Open, and on each connection attempt
//	sasl=                   plain, scram-sha-256 or scram-sha-512 (needs user:pass)
//	tls=false               TLS (implied by the next five)
//	tls_ca=FILE             PEM root CAs to trust (default: the system's)
//	tls_cert=FILE, tls_key=FILE   a client certificate and its key
//	tls_server_name=NAME    name to verify the brokers' certificates against
//	tls_insecure=false      do not verify the brokers' certificates
//	session_timeout=10s     group session timeout (broker bounds: 6s..30m by default)
//	heartbeat_interval=1s   group heartbeat; at most session_timeout/3
//	rebalance_timeout=30s   how long the coordinator waits for members to rejoin
//	revoke_timeout=10s      how long a member finishes handed-out work at a
//	                        rebalance before it gives its partitions up
//	commit_interval=0       commit asynchronously this often instead of on every
//	                        ack batch (see Acks and commits)
//	max_wait=500ms          how long a fetch waits at the broker for new messages
//	fetch_max_bytes=16777216   most bytes of one partition fetch
//
// An unknown parameter, a malformed value, a user without sasl, or sasl
// without a user is message.ErrInvalidArgument, naming it.
//
// # Errors
//
// [ErrorCode] maps kafka-go and broker errors onto polybus codes:
// MESSAGE_TOO_LARGE and RECORD_LIST_TOO_LARGE are TooLarge; authorization
// and SASL failures are PermissionDenied; invalid topics, partition counts,
// replication factors and configurations are InvalidArgument; leader,
// coordinator, rebalance, replica, timeout and network errors (and any
// error the broker marks retriable) are Unavailable; quota and storage
// errors are ResourceExhausted; unsupported versions are Unimplemented.
// The kafka-go error (a kafka.Error code) stays reachable with errors.Is
// and errors.As. Open fails within connect_timeout, with Unavailable, when
// no broker answers (connection refused, or a listener that never
// replies). While the brokers are away, Publish fails with Unavailable,
// Receive reports Unavailable (the portable subscriber retries with
// backoff), and the group rejoins by itself once they are back.
//
// # As
//
// The publisher's and subscriber's As offer **kafka.Client (the client
// polybus publishes and creates topics with), **kafka.Transport (its
// connection pool and metadata cache) and **kafka.Dialer (what consumer
// groups and partition readers dial with), all of
// github.com/segmentio/kafka-go. A received message's As offers
// *kafka.Message: the record as fetched (topic, partition, offset, high
// water mark, key, value, headers, timestamp).
package kafka
