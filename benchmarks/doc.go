// Package benchmarks compares polybus with peer libraries on the same
// workload, in one go test run. It is a module of its own, so that the
// peers' dependencies (Watermill, and later Go CDK and the raw clients'
// tuned set-ups) stay out of polybus's own go.mod.
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
