// Package sqs is polybus's Amazon SQS adapter, on aws-sdk-go-v2, also
// proven against ElasticMQ (the SQS server that scripts/brokers runs).
//
//	import _ "github.com/polybus/polybus/adapters/sqs"
//
//	c, err := polybus.Open(ctx, "sqs://127.0.0.1:9324?region=us-east-1") // ElasticMQ
//	c, err := polybus.Open(ctx, "sqs://?region=eu-west-1")               // AWS
//
// or, from Go, [Open] with a [Config].
//
// # Semantics
//
// Mapping: SQS has queues, not topics. Each consumer group of a topic is
// one queue, and a publisher sends every message to every group queue of
// the topic: groups fan out, and the subscribers of one group compete for
// its queue's messages. A queue is named
//
//	PREFIX + hash(topic) + "-" + topic + "_" + group + "-" + hash(group) [+ ".fifo"]
//
// (PREFIX is Config.Prefix, "pb-"; the hashes are 8 base32 characters of
// SHA-256; the topic and group are shown with every character a queue name
// cannot hold as '_', cut to fit SQS's 80 characters). The registry of a
// topic's groups is SQS itself: ListQueues under the name prefix that ends
// after hash(topic) lists exactly the topic's queues, whatever the names
// hold. Each queue is also tagged polybus-topic and polybus-group with the
// names in full (polybus-topic-b64 and polybus-group-b64, base64url, for
// names AWS does not take as tag values).
//
// A subscriber creates its group's queue when it opens (or uses the one
// that exists, whose attributes it leaves alone). A publisher trusts each
// topic's list of queues for Config.GroupRefresh (1s), then lists them
// again in the background while the old list still serves (the first
// Publish of a topic waits for its listing): a group that another client
// created gets the messages published from about GroupRefresh after its
// queue appeared in ListQueues (on AWS, ListQueues may lag a new queue by
// a few seconds); a group opened by a subscriber of the same client is
// added to the list at once. Messages published before a group's
// queue exists never reach it: SQS cannot replay, so Retained is false and
// subscriber.Start has no effect (a new group starts with what is
// published after it). A topic with no group at all gets a holding queue,
// by default: Publish creates the queue of subscriber.DefaultGroup
// ("default"), tagged polybus-holding, and sends there, so nothing is
// dropped. Publishers leave a holding queue out once the topic has another
// group; a subscriber of the default group claims it (removing the tag),
// reads what it holds, and from then on it is a group like any other.
// Config.NoGroup "fail" (no_group=fail) makes such a Publish fail with
// message.ErrNotFound instead. When a topic's queues, once listed, are all
// gone from ListQueues, publishes fail with message.ErrUnavailable for a
// minute before that rule applies: a restarting server (ElasticMQ restores
// its queues one by one) lists none for a while. Likewise a subscription
// whose queue is missing creates it again only after 30s of receives that
// found it missing. A group's queue stays until someone deletes
// it, and gets every message of its topic meanwhile (up to the queues'
// retention, Config.Retention, SQS's default 4 days): delete the queue to
// remove a group.
//
// Publishing: a batch is encoded once and sent to each queue with
// SendMessageBatch calls of at most 10 entries and 1 MiB in all, cut in
// order; calls to standard queues go concurrently (16 at most per batch),
// calls to a FIFO queue one after the other. Publish returns nil only when
// every entry of every call is in SQS's Successful list: an HTTP 200 with
// failed entries is a failure of those messages (an [*EntryError] in a
// *publisher.BatchError, coded from SQS's code and SenderFault). On a FIFO
// queue, the first failure stops the batch there: later messages are
// reported failed unsent, so that a retry cannot put a key out of order.
// A message that some group queues accepted and others did not is
// reported failed; publishing it again sends it to all of them again (a
// duplicate for the ones that had it, dropped by FIFO queues'
// deduplication within 5 minutes). The SDK's own retries are off: every
// call is one attempt, and the portable layer's caller decides. Calls of
// fewer than 10 entries that concurrent publishes make to one queue share
// SendMessageBatch calls: at most 2 such calls are in flight per queue,
// and the ones that wait go out together, up to 10 entries and 1 MiB (a
// call's entries are never split, and go out in the order they came);
// each message still gets its own entry's outcome.
//
// Message form: the body is the payload when it is text SQS takes (valid
// UTF-8 without control characters other than tab, CR and LF); any other
// payload travels in standard base64 with the attribute polybus-enc =
// "base64", and an empty one as the body "." with polybus-enc = "empty".
// Message attributes: polybus-id (the ID), polybus-key (the key, when
// there is one) and polybus-time (Number: nanoseconds since the Unix
// epoch); a key or ID that is not SQS text goes as a Binary attribute.
// Metadata entries travel as one String attribute each when all of them
// can (names of letters, digits, '-', '_' and '.', not starting with
// "AWS." or "Amazon.", not polybus's own; non-empty text values) and fit
// SQS's 10 attributes beside polybus's own; otherwise the whole metadata
// travels as one Binary attribute, polybus-md, holding a JSON object of
// strings, so any number of entries fits (metadata that is not valid UTF-8
// is then refused with message.ErrInvalidArgument). A message that no
// polybus publisher wrote (boto3's, the console's) arrives with its
// attributes as metadata, its SQS MessageId as ID, its SentTimestamp as
// Time and, on FIFO queues, its MessageGroupId as Key.
//
// Size: SQS takes 1 MiB per message, body and attributes counted as AWS
// counts them (ElasticMQ 1.7 checks the body only). Capabilities.MaxMessageSize
// is (1 MiB - 4 KiB) * 3/4 = 783,360 bytes, what a binary payload can be
// in base64 with room for polybus's attributes; the portable publisher
// refuses a larger [message.Message.Size] before sending anything. A message
// under it whose SQS form still passes 1 MiB (metadata of thousands of
// entries, a huge ID) fails alone with message.ErrTooLarge.
//
// FIFO (Config.FIFO, fifo=true): every topic of the client is FIFO, its
// queues FIFO queues whose names end in ".fifo". A message's
// MessageGroupId is its Key, and its MessageDeduplicationId its ID, so a
// Publish repeated within SQS's 5-minute deduplication interval stores the
// message once. A keyless message's group is its own ID: no key, no order,
// and keyless messages do not wait for each other. A key or ID that SQS
// does not take as such an ID (over 128 characters, or other than ASCII
// letters, digits and punctuation) is replaced there by "pbh-" and its
// SHA-256 in hex; the exact key still travels in polybus-key. SQS's FIFO
// group lock is the per-key lock across subscribers: once a message of a
// group is received, SQS returns no more of that group, to anyone, until
// it is deleted or visible again, and one receive returns a group's
// messages in order. So a key's messages are handled in publish order
// across every subscriber of a group (as long as none is nacked, or
// redelivered after its visibility timeout), and the subscription keeps
// each receive's order. A subscriber that leaves hands its unhandled
// messages back at once; one that dies holds its groups until the
// visibility timeout ends (Capabilities.Rebalance). Without fifo=true,
// topics use standard queues, which keep no order, and a topic whose name
// ends in ".fifo" is refused with message.ErrInvalidArgument.
//
// Subscribing: each subscription runs Config.Receivers (2) receivers, each
// a loop of long-polling ReceiveMessage calls (WaitTimeSeconds
// Config.WaitTime, 5s; up to 10 messages, and never more than the
// subscriber's Prefetch in all, buffered or with handlers). The visibility
// timeout of each receive is the subscriber's AckDeadline, rounded up to
// whole seconds, or Config.VisibilityTimeout (30s). While a message is
// held (buffered, or with a handler that runs long), a heartbeat extends
// its visibility by that timeout whenever less than half of it is left,
// with ChangeMessageVisibilityBatch, up to SQS's 12 hours from its
// receipt. Acks are DeleteMessageBatch calls of 10, all in flight at
// once; a nack is ChangeMessageVisibilityBatch with the delay in whole
// seconds, rounded up (0: visible at once), so NackDelay is declared and
// MaxNackDelay is 12 hours (a delay that would pass 12 hours from the
// receipt is cut there). A message's attempt is SQS's
// ApproximateReceiveCount, Redelivered an attempt above 1,
// Delivery.BrokerID the SQS MessageId, Delivery.Partition -1. When a
// subscription closes it cancels its receivers' calls and hands back, with
// visibility 0, every message it received and had not handed to a handler.
// It does not cancel its ReceiveMessage calls in flight but waits for them
// (up to WaitTime, 5s, on an idle queue) and hands back what they return:
// SQS goes on with a long poll whose client went away, and the messages it
// takes would stay invisible to every subscriber for their visibility
// timeout (seen with ElasticMQ; AWS documents no cancellation either).
//
// Dead letters: besides the portable DLQ middleware, Config.MaxReceives
// (max_receives=N) gives each group queue that polybus opens a
// RedrivePolicy: SQS itself moves a message received N times without being
// deleted to the queue of group [DLQGroup] ("polybus-dlq") on the topic
// [DLQTopic] (topic + ".dlq"), which polybus creates. That is the queue
// that `polybus dlq ... --topic T.dlq` reads, and what the DLQ middleware
// publishes to T.dlq reaches it too. A message moved by SQS carries its
// original attributes, but none of the middleware's polybus-dlq-*
// metadata.
//
// Capabilities: ConsumerGroups, FanOut, Nack, NackDelay (MaxNackDelay 12h),
// AttemptCount, NativeDeadLetter, Persistent (SQS stores messages durably;
// ElasticMQ only with its messages-storage on, as scripts/brokers runs it),
// MaxMessageSize as above; not Retained. FIFO clients also declare
// OrderPerKey and OrderPerKeyScaleOut, with Rebalance = the visibility
// timeout, and are named "sqs-fifo" (standard clients "sqs"); standard
// clients declare no order. Capabilities are the same on
// every call of one client, as the portable layer requires: FIFO is a
// client's choice, not a topic's.
//
// Queues stay until deleted: [DeleteTopic] deletes a topic's queues (every
// group's and the holding queue), [DeleteTopics] also its dead-letter
// topic's; `polybus conformance` on SQS deletes its run's queues when it
// ends (conformance.Options.Cleanup).
//
// # URLs
//
//	sqs://HOST[:PORT]?region=R         an SQS-compatible server at http://HOST:PORT
//	                                   (port 9324, ElasticMQ's, when none is given)
//	sqs://KEY:SECRET@HOST:PORT?...     with static credentials
//	sqs://?region=R                    AWS, with the standard credential chain
//	sqs://KEY:SECRET@?region=R         AWS, with static credentials
//
// With a host and no credentials, requests are signed with the dummy key
// "polybus" (local servers check none): the standard chain, and with it
// instance metadata, is used only without a host, or with
// credential_chain=true.
//
// Query parameters, with their defaults:
//
//	region=R                  AWS region (us-east-1 with a host; the chain's without)
//	scheme=http|https         scheme of the endpoint host (http)
//	access_key=, secret_key=, session_token=   static credentials (also as userinfo)
//	credential_chain=false    use the standard credential chain with a host too
//	fifo=false                every topic FIFO (see # Semantics)
//	prefix=pb-                start of every queue name
//	no_group=default|fail     Publish to a topic with no group (default)
//	group_refresh=1s          how long a publisher trusts a topic's group list
//	max_receives=0            native dead-lettering after N receives (0: off)
//	retention=0               MessageRetentionPeriod of new queues (0: SQS's 4 days)
//	wait_time=5s              long-polling wait, whole seconds up to 20s (a Close waits for it)
//	visibility_timeout=30s    visibility timeout when the subscriber gives no AckDeadline
//	receivers=2               concurrent ReceiveMessage loops per subscription
//	connect_timeout=5s        bound on Open's first call and on each dial
//
// An unknown parameter or a malformed value is message.ErrInvalidArgument,
// naming it; so is a URL with a path or several hosts.
//
// # Errors
//
// [ErrorCode] maps SQS's error codes onto polybus codes: a missing queue
// is NotFound; MessageTooLong and BatchRequestTooLong are TooLarge;
// authentication, signature, token and KMS access errors are
// PermissionDenied; throttling, InternalError, ServiceUnavailable, HTTP
// 5xx, connection failures and timeouts are Unavailable; OverLimit is
// ResourceExhausted; unsupported operations are Unimplemented; invalid
// parameters, attributes and batch entries are InvalidArgument. A failed
// batch entry is an [*EntryError]: by its code, else Unavailable for a
// server fault and InvalidArgument for a sender fault. The SDK's error
// (smithy.APIError, *smithy.OperationError) stays reachable with
// errors.As. Open fails within connect_timeout with Unavailable when the
// endpoint refuses connections or never answers, and with
// PermissionDenied when it refuses the credentials.
//
// # As
//
// The publisher's and subscriber's As offer **sqs.Client (the SDK client,
// for queue administration). A received message's As offers
// *types.Message: the SQS message with its receipt handle and system
// attributes. Deleting it directly bypasses the portable subscriber, which
// then deletes it again (an error that is logged).
package sqs
