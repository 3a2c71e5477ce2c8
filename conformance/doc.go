// Package conformance is polybus's exported conformance suite: tests that
// prove an adapter and its broker keep the delivery guarantees that the
// adapter declares in its message.Capabilities.
//
// Run it from go test with [Run] and a [Harness]:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, conformance.URLHarness("mem://"))
//	}
//
// or without go test with [RunAll], which returns a [Report] that writes a
// text matrix and JSON: that is what `polybus conformance --url ...` does.
// An adapter's own tests usually implement Harness to open clients on a
// broker they start, and implement [Restarter] when they can restart it.
//
// Every test uses fresh topic and group names from Harness.Name, asserts
// exact message sets (which messages, how many times) and exact orders, and
// waits on conditions with deadlines, never on sleeps. A test whose
// guarantee the adapter does not declare is skipped, naming the capability;
// a declared guarantee that does not hold is a failure. Tests publish with
// one client and subscribe with others, and make sure the subscriptions are
// open before publishing by publishing probe messages (metadata key
// "conformance-probe") until each subscriber has seen one; handlers ack
// probes and the assertions leave them out.
//
// # Semantics
//
// What each test proves, by name (see [TestNames]):
//
//   - RoundTrip: 500 messages arrive exactly once each with ID, Key, Payload
//     and Metadata unchanged: payloads nil, empty, with NUL bytes, invalid
//     UTF-8, every byte value, random binary up to 64 KiB; keys empty,
//     ASCII and non-ASCII; metadata nil, empty, non-ASCII, 20 keys, an
//     empty value, punctuation. Payloads and metadata compare by content: nil
//     and empty are equal, as no broker tells them apart on the wire.
//     Metadata keys under message.MetadataPrefix belong to polybus, which
//     may add them on receipt, and are left out of the comparison; every
//     other key must arrive with exactly its value. Each delivery carries
//     facts (message.Received) with the right Topic and Group, and Attempt 1
//     where AttemptCount is declared.
//   - DurablePublish (Retained): after Publish returns nil and the
//     publishing client is closed, a new group starting at the earliest
//     message receives every message exactly once.
//   - AckIsFinal: a subscriber handles and acks 100 messages and stops; a
//     new subscriber of the group receives a marker published afterwards
//     and, by then and for Options.Quiet after, none of the 100.
//   - NackRedelivers (Nack): each of 50 messages whose first handling fails
//     is handled exactly twice, unchanged; with AttemptCount, as attempt 1
//     (not redelivered) then attempt 2 (redelivered).
//   - NackDelay (Nack): a message nacked with message.RetryAfter(err, d) is
//     not handled again before d has passed since its handler returned. It
//     runs whether or not NackDelay is declared: where the broker cannot
//     delay, the portable subscriber holds the message and nacks it after
//     d, and the guarantee to the application is the same.
//   - CrashRecovery: a subscriber acks 10 of 100 messages, then blocks its
//     4 handlers until cancelled while more wait in its buffer, and its
//     client is closed with a 50ms deadline; a new subscriber of the group
//     receives every message the first did not ack. Zero loss; acked
//     messages that come back are counted, not failed.
//   - PerKeyOrder (OrderPerKey): 32 keys x 300 messages, published
//     interleaved and handled with concurrency 8: each key's messages are
//     handled in publish order exactly, and never two at once.
//   - PerKeyOrderScaleOut (OrderPerKeyScaleOut): three subscribers of one
//     group, each on its own client, concurrency 4 each, joined and settled
//     (every one has seen a probe, then the declared Capabilities.Rebalance
//     bound has passed) before 32 fresh keys x 300 messages are published
//     interleaved. Every message is handled exactly once, each key in
//     publish order exactly, no two calls of one key overlap on any
//     subscriber (one in-flight map is shared by all three), every
//     subscriber works and none handles more than 60%.
//   - PerKeyOrderRebalance (OrderPerKeyScaleOut): the same load while a
//     fourth subscriber joins, one of the first three leaves gracefully and
//     another crashes (client closed with a 50ms deadline), each half-way
//     through a quarter of the load. Nothing is lost; for each key the
//     handled sequence with repeats removed is exactly 0..n-1 (a later
//     message is never handled before an earlier one was handled once).
//     Duplicates (in total and of messages the graceful leaver had
//     handled) and overlaps are metrics. After the crash and the declared
//     rebalance bound, both survivors share the last quarter, neither more
//     than 80%.
//   - CompetingConsumers (ConsumerGroups): two subscribers of one group,
//     both joined before anything is published, handle 1,000 messages
//     exactly once in total, and both do work. Each handler holds its
//     message until both have received one, so a broker that hands out
//     messages fairly passes deterministically. As no member joins or
//     leaves while messages flow, a duplicate (as a rebalance might cause)
//     is a failure, unless the harness is a [Rebalancer] that says its
//     broker redelivers on rebalance: then duplicates are counted (metric
//     "duplicates") and only loss fails.
//   - FanOut (FanOut): two groups each receive every message exactly once.
//   - TopicIsolation: subscribers of two topics, in groups of the same
//     name, each receive exactly their own topic's messages.
//   - ConcurrentPublishers: 8 goroutines publish 2,000 messages each, one
//     per call, through one publisher; the exact set arrives once each.
//   - SizeLimit (MaxMessageSize): a message of exactly the declared size
//     arrives intact; one byte more fails with message.ErrTooLarge, alone
//     or with a small message in the same call, and nothing of either call
//     is delivered.
//   - CloseAndCancel: Close is idempotent; Publish and Subscribe after Close
//     fail with message.ErrClosed; Subscribe returns nil within 10s of its
//     context ending; Close does not return while a handler runs (watched
//     for Options.Quiet), returns once it finishes and does not cancel it
//     before its deadline; and no goroutine is left once the test's
//     clients are closed (goleak, against the goroutines running before
//     its first client opened, less those a [GoroutineFilter] names). It
//     runs alone: the suite's other tests wait while it does.
//   - DeadLetter: with middleware.DLQ outside middleware.Retry (3 attempts,
//     Redelivery mode where Nack is declared), a message that always fails
//     is handled exactly 3 times and then dead-lettered, unchanged, with
//     reason "max-attempts", attempts "3", its topic and group; one failing
//     with a permanent error is dead-lettered at once (reason "permanent",
//     attempts "1"); neither comes back, and other messages are handled once.
//   - Dedupe: with middleware.Dedupe, 50 messages published twice with the
//     same IDs each reach the handler once.
//   - BrokerRestart (a [Restarter] harness, Persistent): two publishers and
//     a subscriber keep going across a broker restart, publishers retrying
//     failed calls with the same message; every message whose Publish
//     returned nil is delivered at least once. Duplicates are counted
//     (metric "duplicates", with "published", "publish_failures" and
//     "restart_ms"), in the test log and in the Report.
//
// # Errors
//
// A test fails when a client cannot be opened, a Publish that must
// succeed fails, a Subscribe returns an error, or a wait passes its
// deadline (Options.Timeout); the failure names what was missing, with up
// to five message IDs. RunAll reports a test that panics as failed.
//
// # Running against your own adapter
//
// Implement Harness (Open returns a client on your broker, Name fresh
// names it accepts), or register your adapter's scheme with polybus.Register
// and use [URLHarness]. Declare capabilities truthfully: the suite tests
// exactly what is declared. Run it with -race and with -count above 1; add
// Options.Stress to run several rounds of the suite at once.
package conformance
