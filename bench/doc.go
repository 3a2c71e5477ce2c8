// Package bench measures how fast messages move through a broker: the same
// workload for every broker and every client library, so their figures can
// be set side by side.
//
// # Workload
//
// A [Workload] is N messages of S bytes, sent by P publishers and handled by
// C consumers of one group, spread over K keys. [Run] runs its phases in
// this order, on a topic of its own:
//
//   - warm-up: the consumers join the group and receive a few hundred marker
//     messages, so that the group exists (brokers such as RabbitMQ and SQS
//     keep messages only for groups that exist) and every partition has been
//     used once; the markers count nowhere.
//   - publish: the publishers send N messages as fast as the client confirms
//     them (each call returns only when the broker accepted the batch).
//   - consume: the consumers, started afresh, drain the N messages. The time
//     runs from the first delivery to the N-th distinct one; the time the
//     group took to start is reported beside it.
//   - steady: end to end at a fixed open-loop rate, below saturation. Message
//     j is due at start + j/rate; its payload carries that due time and the
//     latency is measured from it to the handler call, so a publisher that
//     falls behind makes the latency grow instead of hiding it (no
//     coordinated omission). A publisher that was early sleeps until the
//     due time and starts the clock when it wakes, since Go's timers can
//     wake it up to a millisecond late. Latencies go into an HDR histogram.
//
// Each phase reports messages per second, megabytes per second, the CPU
// time and heap allocations of this process per message (for an in-process
// broker such as mem:// or embedded:// that includes the broker), the
// duplicates and per-key reorderings seen, and samples of the process's
// memory.
//
// # Clients
//
// A [Client] is one way of moving messages: [Polybus] runs the workload
// through a polybus URL; the benchmarks module implements Client for raw
// broker clients and for peer libraries, so that all of them run exactly
// the same workload code.
//
// # Reports
//
// A [Report] holds the results of one or many runs (targets and rounds). It
// writes a text table, JSON, and a self-contained HTML page with throughput
// bars and latency percentile curves, whose chart code is inlined (it opens
// with no network).
package bench
