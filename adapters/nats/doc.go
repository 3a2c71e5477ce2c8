// Package nats is polybus's NATS JetStream adapter, and the embedded broker
// that is polybus's zero-setup default: a nats-server with JetStream and file
// storage running inside the process.
//
//	import _ "github.com/polybus/polybus/adapters/nats"
//
//	c, err := polybus.Open(ctx, "embedded://./data")   // or "nats://host:4222"
//
// or, from Go, [Open] with a [Config].
//
// # Semantics
//
// Layout: one stream per topic. A topic is a literal NATS subject: dots
// separate non-empty tokens ("orders.created"), and whitespace, control
// characters, the wildcards '*' and '>', a leading '$' (the server's own
// subjects), a leading "_INBOX." and a leading "_PB." (polybus's partition
// subjects, below) are refused with message.ErrInvalidArgument, as is
// invalid UTF-8 or a topic over 1024 bytes. One stream per topic (rather
// than one stream for all) keeps topics apart in retention, limits,
// deletion and monitoring, and lets a new group of one topic start without
// scanning the others.
//
// Partitions: a topic's stream is split into N partitions (Config.Partitions, URL
// partitions=N, default 8, fixed when the stream is created and recorded in
// its metadata under "polybus-partitions", where every client reads it).
// Partition p of topic T is the subject "_PB.<p>.T", and the stream's
// subjects are T and "_PB.*.T". A publisher puts a message on the subject
// of partition FNV-1a-32(key) mod N (the 32-bit FNV-1a hash of the key's
// bytes); a message without a key, which promises no order, goes to the
// partition of its ID instead, so keyless load spreads too. A message that
// a plain NATS client publishes to T itself is filed under partition 0 by
// the stream's subject transform (T -> "_PB.0.T"). A consumer in another
// language reads the stream as it is (each message's subject names its
// partition; the headers are below), and a producer that wants per-key
// order with polybus's groups publishes to the partition subject computed
// as above.
//
// A group has one durable pull consumer per partition, named after the
// group plus "_P<p>" (see Subscribing), under the priority policy
// pinned_client with the priority group "polybus": the server delivers a
// partition to one client at a time, and moves it after 5s (PinnedTTL)
// without pull requests from that client. The group's live subscribers
// register in the JetStream KV bucket "polybus_members", key
// "<stream>.<group>.<member>", written every second; a key not written for
// 5s (by the server's timestamps) is a dead member, and a closing
// subscriber deletes its key. Every member watches the group's keys and
// takes the partitions that the sorted list of live members gives it
// (partition p to member p mod M).
//
// Hand-over: a member that loses a partition stops pulling it, waits until
// the portable subscriber has settled every message of it that it handed
// to a handler, hands back what it pulled and did not hand out (and what was
// nacked meanwhile) in stream order, checks that its acks are applied, and
// unpins the partition. The next member asks for the partition only once
// it is unpinned, so the server redelivers the handed-back messages first,
// in order. So on a graceful change a key's messages are never handled out
// of order and none twice, and calls of one key never overlap across
// subscribers. When the hand-back is clean (every delivery since the ack
// floor is among the handed-back, none handled), it is a reset of the
// consumer to its ack floor instead of nacks: the same messages come next,
// as first deliveries (Attempt 1), and the reset is stored, so it holds
// across a restart of the server, which forgets plain nacks. A member that
// dies (SIGKILL, network loss) leaves its partitions pinned and its
// messages pending; after the pin and its key expire, the next owner finds
// the partition unpinned with messages pending that the server would
// redeliver only after their ack wait, behind newer ones, and resets the
// consumer to its ack floor: delivery resumes from the oldest unacked
// message, in stream order (messages acked above the floor come again:
// duplicates, never reordering). Capabilities.Rebalance, 15s, bounds the
// move after a death; graceful changes take a few round trips and the
// handlers' time. Delivery.Partition is the partition.
//
// Migration from the unpartitioned layout (before partitions: the topic
// the stream's only subject, one durable consumer per group named after
// the group): the first client of this version that uses the topic updates
// the stream in place (it gains the partition subjects, the transform and
// the count; nothing is copied). The stored messages stay on the topic's
// subject. A subscriber reads its group's old consumer to its end (nothing
// left to deliver or waiting for an ack) before any partition, then
// deletes it; a group new to the stream gets such a consumer for the old
// messages first. Old-version publishers still running publish to the
// topic, which lands in partition 0; old-version subscribers see nothing
// new (upgrade them together).
//
// A stream that someone else created and that captures the topic (say
// "ORDERS" on "orders.>") is used as it is, unpartitioned: the topic is its
// subject, a group is one durable consumer, and per-key order holds only
// within one subscriber of a group.
//
// The stream is created on the first Publish or Subscribe of the topic,
// once per client and concurrency-safe (concurrent creators race
// harmlessly: JetStream's create is idempotent for one config). Before
// creating one, polybus asks the server which stream already captures the
// subject: a stream that someone created beforehand (say "ORDERS" on
// "orders.>", with its own replicas, limits or retention) is used as it is.
// polybus's own streams are named "PB_" and the topic escaped: lower-case
// letters, digits and '-' stay, every other byte becomes '_' and two
// upper-case hex digits ("orders.created" is "PB_orders_2Ecreated"); the
// escaping is injective and case-proof, so "Orders" and "orders" get
// separate streams and directories even on case-insensitive file systems.
// Topics whose escaped name passes 255 bytes get "PBH_", a prefix and a
// hash. The streams use limits retention, file storage (Config.Storage),
// 1 replica (Config.Replicas), no age limit (Config.MaxAge) and a 2-minute
// deduplication window (Config.Duplicates).
//
// Publishing: each message is one JetStream message on its partition's
// subject, published asynchronously (PublishMsgAsync); a batch returns once
// every PubAck has arrived, so Publish returns nil only when the stream has
// stored every message. Failed messages of a batch are reported one by one
// (a *publisher.PublishError); after a connection failure the rest of the
// batch is not sent, as it would arrive out of order. nats.go's own retry
// on "no responders" is off for the same reason: the caller retries, and
// the stream drops a repeat whose ID it has stored within the
// deduplication window (the ID is the Nats-Msg-Id header), so a retried
// Publish never stores a message twice within the window.
//
// Headers: Message.ID travels in Nats-Msg-Id, Key in Polybus-Key, Time in
// Polybus-Time (decimal nanoseconds since the Unix epoch; Time comes back
// in the local time zone). Each metadata entry is a header
// of the same name and value when both survive a NATS header unchanged:
// the key is printable ASCII without the separators "():;<=>?@[\]{}/,
// and the double quote, does not start with Nats- (in any case; the server
// acts on some of those) or Polybus-, and the value has no CR, LF or NUL
// and no leading or trailing space or tab. Other entries travel as
// Polybus-Md-<key> with key and value in unpadded base64url; a key or ID
// that is not a plain header value travels as Polybus-Key-B64 or
// Polybus-Id-B64. NATS headers are case-sensitive end to end (nats.go does
// not canonicalise them), so every metadata key round-trips exactly,
// unicode and case included. A message published by a plain NATS client
// arrives with its headers as metadata (NATS's own Nats-* headers left
// out, the first value of a repeated header), the ID "<stream>:<sequence>"
// when it has no Nats-Msg-Id, and the stream's store time when it has no
// Polybus-Time.
//
// Size: Capabilities.MaxMessageSize is the server's max_payload (1 MiB by
// default) less 1 KiB, which covers the headers above for an ID of a few
// hundred bytes and some two hundred plain metadata entries. The portable
// publisher refuses a larger [message.Message.Size] before sending anything.
// A message under the limit whose encoded form still passes max_payload
// (very many or base64-encoded metadata entries, a huge ID) fails alone with
// message.ErrTooLarge.
//
// Subscribing: a group is a durable pull consumer per partition (see
// Partitions), named after the group (escaped like stream names) and
// "_P<p>", with explicit acks, unlimited deliveries, DeliverAll for
// subscriber.Earliest and DeliverNew for subscriber.Latest; all of a
// group's consumers are created when its first subscriber opens. AckWait
// is the subscriber's AckDeadline (default Config.AckWait, 30s) and
// MaxAckPending twice its Prefetch spread over the partitions (rounded
// up); they are shared by the group's subscribers, and the one that opens
// last sets them. Each held partition is pulled by one request at a time
// (500ms long polls, which also renew the pin) into a buffer that the
// portable subscriber reads, taking from the partitions in turn. A
// subscriber's messages of one key are handled in publish order as long as
// none is nacked or redelivered after its ack wait, and across the
// group's subscribers too (OrderPerKeyScaleOut). Messages of different
// keys are not handled in publish order, even by a single subscriber
// (they are in different partitions); with partitions=1, a group is
// served by one subscriber at a time, in stream order. On a stream
// created by someone else a group is one durable consumer on the topic,
// consumed with nats.go's Consume, as before partitions.
//
// Acks are JetStream acks followed by one flush of the connection for the
// whole batch: when Ack returns, the server has received every ack, at the
// cost of one round trip per batch instead of one per message. The server
// applies acks asynchronously, so a server crash right after can still
// redeliver, which at-least-once allows. Config.ConfirmAcks (confirm_acks=true)
// uses JetStream's double ack instead: each ack waits for the server's reply
// (all of a batch in flight at once), for at-most-once subscribers that must
// know that an ack has been applied; it costs a reply per message. A nack is
// a Nak, or NakWithDelay for a delay (honoured by the server: NackDelay is
// declared, with no upper limit), and also waits for the flush. A
// message's attempt is JetStream's delivery count, Redelivered is an attempt
// above 1, Delivery.BrokerID and Delivery.Offset are the stream sequence,
// and Delivery.Partition is -1. There is no native dead-lettering.
//
// When a subscription stops, it keeps its partitions pinned (pulling on)
// while the portable subscriber drains, then hands them over as above:
// what it had pulled and not handled goes to the next owner at once, in
// order, rather than after the ack wait, also when that owner is the next
// process on an embedded store.
//
// Reconnection: a nats:// client reconnects by itself, forever, every
// Config.ReconnectWait. While it is disconnected, Publish fails at once with
// message.ErrUnavailable (nothing is buffered for later: the caller decides
// whether to retry), Receive reports Unavailable and the portable
// subscriber retries with backoff until the connection is back; consuming
// then resumes by itself. Acks that failed while disconnected are lost, and
// those messages come again after the ack wait. A stream or consumer that
// disappeared (memory storage across a server restart, or deleted by an
// operator) is created again by the next Publish or Receive; a re-created
// consumer starts again from its start position.
//
// Capabilities: OrderPerKey, OrderPerKeyScaleOut with Rebalance 15s,
// ConsumerGroups, FanOut, Retained, Nack, NackDelay and AttemptCount;
// Persistent with file storage; no NativeDeadLetter; MaxMessageSize as
// above.
//
// # URLs
//
//	embedded://                 the store ./.polybus (DefaultStoreDir)
//	embedded://PATH             a relative store: embedded://data, embedded://./data
//	embedded:///ABS/PATH        an absolute store
//	nats://host[:4222][,host2:4222]     NATS servers (port 4222 by default; with
//	                            several hosts, give each its port: Go's URL
//	                            parser reads a port after the last colon)
//	nats://user:pass@host       with a user and password
//	nats://TOKEN@host           with a token
//
// For embedded://, the URL's host and path together are the directory, as
// written: embedded://data/x is "data/x", embedded://./data is "./data",
// embedded:///var/lib/x is "/var/lib/x" (percent-escapes are decoded; "~"
// is not expanded). The server keeps JetStream's files in PATH/jetstream
// and holds an exclusive lock on PATH/polybus.lock while it runs: opening a
// store that another process holds fails with message.ErrUnavailable ("in
// use by another process"). Every open of one directory in one process
// shares one server (counted: the last Close shuts it down, and a later
// open starts it again from disk). The server accepts no TCP clients unless
// listen is given.
//
// Query parameters, for both schemes unless marked:
//
//	listen=HOST:PORT       embedded: also accept TCP clients there (port 0: any free
//	                       port); a second open of the store may repeat or omit it
//	creds=FILE             nats: a .creds file (JWT and NKey seed)
//	token=TOKEN            nats: a token
//	tls=true               nats: TLS (implied by the next four)
//	tls_ca=FILE            nats: PEM root CAs to trust
//	tls_cert=FILE, tls_key=FILE   nats: a client certificate and its key
//	tls_insecure=true      nats: do not verify the server's certificate
//	connect_timeout=5s     nats: bound on Open when no server answers
//	reconnect_wait=1s      nats: pause between reconnection attempts
//	replicas=1             nats: replicas of the streams polybus creates
//	storage=file|memory    storage of the streams polybus creates (file)
//	max_age=0              age limit of those streams (0: none)
//	partitions=8           partitions of those streams (1 to 256)
//	duplicates=2m          their deduplication window (at most max_age)
//	ack_wait=30s           ack wait of the groups' consumers
//	confirm_acks=false     double acks (see # Semantics)
//	publish_timeout=30s    longest wait for one message's PubAck
//
// An unknown parameter, a malformed value or a parameter of the other
// scheme is message.ErrInvalidArgument, naming it.
//
// # Errors
//
// [ErrorCode] maps NATS errors onto polybus codes: no responders, timeouts,
// a lost, closed or reconnecting connection, a missing heartbeat, a server
// shutting down and JetStream API errors with status 503 are Unavailable;
// max_payload and the stream's size limit are TooLarge; a missing stream or
// consumer is NotFound; authentication and permission errors are
// PermissionDenied; JetStream disabled on the server is Unimplemented;
// resource and consumer limits and async publish back-pressure are
// ResourceExhausted; invalid subjects and options are InvalidArgument.
// The nats.go error stays reachable with errors.Is and errors.As. Open
// fails within connect_timeout, with Unavailable, when no server answers
// (connection refused, or a server that never completes the handshake),
// and with Unimplemented when the server has no JetStream.
//
// # As
//
// The publisher's and subscriber's As offer **nats.Conn (the client's
// connection), *jetstream.JetStream and, for embedded://, **server.Server
// (the nats-server, for its ClientURL or monitoring). A received message's
// As offers *jetstream.Msg: the JetStream message with its metadata
// (stream and consumer sequences, pending count), its subject (the
// partition's) and ack methods. Acking
// it directly bypasses the portable subscriber, which then acks it again
// (ignored by the server).
package nats
