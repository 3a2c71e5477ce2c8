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
// Layout: one stream per topic, whose only subject is the topic itself. A
// topic is therefore a literal NATS subject: dots separate non-empty tokens
// ("orders.created"), and whitespace, control characters, the wildcards
// '*' and '>', a leading '$' (the server's own subjects) and a leading
// "_INBOX." are refused with message.ErrInvalidArgument, as is invalid
// UTF-8 or a topic over 1024 bytes. Subject = topic keeps polybus
// interoperable: any NATS client publishing to "orders.created" feeds the
// topic, and a JetStream consumer of the stream reads it. One stream per
// topic (rather than one stream for all) keeps topics apart in retention,
// limits, deletion and monitoring, and lets a new group of one topic start
// without scanning the others.
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
// Publishing: each message is one JetStream message on the topic's
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
// Subscribing: a group is a durable pull consumer on the topic's stream,
// named after the group (escaped like stream names; on a stream created by
// someone else, the name also carries a hash of the topic), with explicit
// acks, unlimited deliveries, DeliverAll for subscriber.Earliest and
// DeliverNew for subscriber.Latest. MaxAckPending is the subscriber's
// Prefetch and AckWait its AckDeadline (default Config.AckWait, 30s);
// they are a property of the consumer, shared by the group's subscribers,
// and the subscriber that opens the group last sets them. Messages are
// pulled with nats.go's Consume, Prefetch at a time, in stream order, into
// a buffer that the portable subscriber reads: with one subscriber in the
// group, messages of a key are handled in publish order as long as none is
// nacked or redelivered after its ack wait (which reorders). Competing
// subscribers of a group split the stream between them.
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
// When a subscription stops, it stops pulling first and hands back every
// message that it had pulled and not handed to a handler, so that they go
// to the group's other subscribers at once rather than after the ack wait.
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
// Capabilities: OrderPerKey, ConsumerGroups, FanOut, Retained, Nack,
// NackDelay and AttemptCount; Persistent with file storage; no
// NativeDeadLetter; MaxMessageSize as above.
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
// (stream and consumer sequences, pending count) and ack methods. Acking
// it directly bypasses the portable subscriber, which then acks it again
// (ignored by the server).
package nats
