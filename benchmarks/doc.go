// Package benchmarks compares polybus with peer libraries on the same
// workload, in one go test run. It is a module of its own, so that the
// peers' dependencies (Watermill, Go CDK and the raw clients' tuned
// set-ups) stay out of polybus's own go.mod.
//
// TestPeers (make bench-peers) is issue 15's comparison: package bench's
// engine runs one Workload through a bench.Client per library on each
// broker, interleaved round after round, with the steady rate fixed per
// broker, and writes out/peers.json and out/peers-<broker>.json and
// .html, with ratios to the broker's raw client. The clients:
//
//   - polybus: bench.Polybus on the broker's URL (prefetch 256).
//   - the raw clients, tuned as the polybus adapters use them: RawKafka
//     (segmentio/kafka-go), RawNATS (nats.go jetstream, also in-process
//     on embedded://), RawRabbitMQ (amqp091-go), RawSQS (aws-sdk-go-v2).
//   - Watermill, its defaults and tuned: NewWatermillKafka (Sarama),
//     NewWatermillAMQP, NewWatermillNATS (JetStream, pkg/jetstream),
//     NewWatermillGoChannel on mem://.
//   - Go CDK pubsub: NewGoCDKMem (mempubsub), NewGoCDKRabbit
//     (rabbitpubsub), NewGoCDKSQS (awssnssqs, on SQS alone). gocloud.dev
//     v0.49 has no Kafka or NATS driver.
//
// Run, with the brokers of scripts/brokers (a small run: POLYBUS_BENCH_N,
// POLYBUS_BENCH_ROUNDS; see TestPeers for every knob):
//
//	. ~/.cache/polybus/brokers.env && cd benchmarks &&
//	  POLYBUS_BENCH_PEERS=1 POLYBUS_BENCH_N=10000 go test -run '^TestPeers$' -v -timeout 60m .
//
// BenchmarkInProcess is issue 14's comparison: one message end to end
// through an in-process broker (256-byte payload, published in calls of
// 100, one subscriber, every message acknowledged) on a bare buffered Go
// channel (the ceiling), polybus's mem:// (per-key order on over 64 keys,
// and off; with and without middleware.DefaultChain) and Watermill's
// GoChannel (its defaults, and acking each message as its documentation
// asks). Run, from this directory:
//
//	go test -run '^$' -bench InProcess -benchmem -count 6 . | tee new.txt
//	go run golang.org/x/perf/cmd/benchstat@latest new.txt
package benchmarks
