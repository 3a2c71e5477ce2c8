//go:build unix

package kafka_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBenchRounds is the benchmark for the notes (see bench_test.go): with
// POLYBUS_KAFKA_BENCH=N it runs, for each message size, publish,
// end-to-end and consume runs of N messages, polybus and raw kafka-go
// alternated (the order swaps every round), for POLYBUS_KAFKA_BENCH_ROUNDS
// rounds (default 3), and logs every run, the per-round ratios
// polybus/raw and their medians. With POLYBUS_KAFKA_CEILING=1 each round
// also runs Kafka's own ProducerPerformance and ConsumerPerformance
// (kafka-tools, as the interop test finds them) with the same record
// size and acks=all, batch.size 1 MiB (so that a produce request can carry
// as many records as polybus's calls of benchBatch; the default 16 KiB
// holds only three 4 KiB records), POLYBUS_KAFKA_CEILING_N records
// (default N; the tools' rates include the JVM's warm-up, so give them
// more, say 10 x N), and the summary gives polybus/ceiling.
// Without POLYBUS_KAFKA_BENCH it skips: it is never part of the default
// test run.
func TestBenchRounds(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("POLYBUS_KAFKA_BENCH"))
	if n <= 0 {
		t.Skip("set POLYBUS_KAFKA_BENCH=N (messages per run) to run the benchmark rounds")
	}
	rounds := 3
	if r, err := strconv.Atoi(os.Getenv("POLYBUS_KAFKA_BENCH_ROUNDS")); err == nil && r > 0 {
		rounds = r
	}
	ceiling := os.Getenv("POLYBUS_KAFKA_CEILING") == "1"
	var cp string
	ceilingN := n
	if ceiling {
		cp = javaTools(t)
		if c, err := strconv.Atoi(os.Getenv("POLYBUS_KAFKA_CEILING_N")); err == nil && c > 0 {
			ceilingN = c
		}
	}
	e := newBenchEnv(t)
	type pair struct {
		poly, raw func(testing.TB, *benchEnv, int, int) benchResult
	}
	kinds := []struct {
		name string
		pair
	}{
		{"publish", pair{runPolyPublish, runRawPublish}},
		{"end-to-end", pair{runPolyEndToEnd, runRawEndToEnd}},
		{"consume", pair{runPolyConsume, runRawConsume}},
	}
	type key struct {
		kind string
		size int
	}
	ratios := map[key][]float64{}
	cpuRatios := map[key][]float64{}
	polyRates := map[key][]float64{}
	ceil := map[key][]float64{}
	for round := 1; round <= rounds; round++ {
		for _, size := range benchSizes {
			for _, k := range kinds {
				var p, r benchResult
				if round%2 == 1 {
					p = k.poly(t, e, size, n)
					r = k.raw(t, e, size, n)
				} else {
					r = k.raw(t, e, size, n)
					p = k.poly(t, e, size, n)
				}
				kk := key{k.name, size}
				ratios[kk] = append(ratios[kk], p.rate()/r.rate())
				cpuRatios[kk] = append(cpuRatios[kk], p.cpuPerMsg()/r.cpuPerMsg())
				polyRates[kk] = append(polyRates[kk], p.rate())
				t.Logf("round %d %-10s %4dB polybus %s", round, k.name, size, p)
				t.Logf("round %d %-10s %4dB raw     %s", round, k.name, size, r)
				t.Logf("round %d %-10s %4dB ratio   %.2f (cpu/msg %.2f)", round, k.name, size, p.rate()/r.rate(), p.cpuPerMsg()/r.cpuPerMsg())
			}
			if ceiling {
				prod, cons := javaPerf(t, e, cp, size, ceilingN)
				ceil[key{"publish", size}] = append(ceil[key{"publish", size}], prod)
				ceil[key{"consume", size}] = append(ceil[key{"consume", size}], cons)
				t.Logf("round %d ceiling    %4dB ProducerPerformance %8.0f msgs/s, ConsumerPerformance %8.0f msgs/s", round, size, prod, cons)
			}
		}
	}
	t.Logf("summary over %d rounds of %d messages (medians):", rounds, n)
	for _, size := range benchSizes {
		for _, k := range kinds {
			kk := key{k.name, size}
			line := fmt.Sprintf("%-10s %4dB polybus/raw %.2f (rounds %s), cpu/msg %.2f, polybus %8.0f msgs/s",
				k.name, size, median(ratios[kk]), fmtRatios(ratios[kk]), median(cpuRatios[kk]), median(polyRates[kk]))
			if c := ceil[kk]; len(c) > 0 {
				line += fmt.Sprintf(", ceiling %8.0f msgs/s, polybus/ceiling %.2f", median(c), median(polyRates[kk])/median(c))
			}
			t.Log(line)
		}
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtRatios(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(parts, " ")
}

// javaPerf runs Kafka's ProducerPerformance (n records of size bytes,
// acks=all, no throttle) into a fresh topic, then ConsumerPerformance over
// them, and returns both tools' msgs/s: the producer's "records/sec" and
// the consumer's fetch.nMsg.sec (without the group join).
func javaPerf(t *testing.T, e *benchEnv, cp string, size, n int) (prod, cons float64) {
	t.Helper()
	topic := e.topic(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bootstrap := strings.Join(e.bootstrap, ",")
	out := java(t, ctx, cp, "", "org.apache.kafka.tools.ProducerPerformance",
		"--bootstrap-server", bootstrap, "--topic", topic,
		"--num-records", strconv.Itoa(n), "--record-size", strconv.Itoa(size), "--throughput", "-1",
		"--command-property", "acks=all", "batch.size=1048576")
	// The last line: "N records sent, X records/sec (Y MB/sec), ...".
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	f := strings.Fields(last)
	if len(f) < 5 || f[1] != "records" || f[4] != "records/sec" {
		t.Fatalf("ProducerPerformance's summary %q: want \"N records sent, X records/sec ...\"\n%s", last, out)
	}
	prod, err := strconv.ParseFloat(f[3], 64)
	if err != nil {
		t.Fatalf("ProducerPerformance's rate in %q: %v", last, err)
	}
	out = java(t, ctx, cp, "", "org.apache.kafka.tools.ConsumerPerformance",
		"--bootstrap-server", bootstrap, "--topic", topic, "--group", unique("perf"),
		"--num-records", strconv.Itoa(n), "--timeout", "60000")
	// A header line of names and a line of values, comma-separated.
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 {
		t.Fatalf("ConsumerPerformance's output: want a header and a line of values\n%s", out)
	}
	names := strings.Split(lines[len(lines)-2], ",")
	values := strings.Split(lines[len(lines)-1], ",")
	for i, name := range names {
		if strings.TrimSpace(name) == "fetch.nMsg.sec" && i < len(values) {
			cons, err = strconv.ParseFloat(strings.TrimSpace(values[i]), 64)
			if err != nil {
				t.Fatalf("ConsumerPerformance's fetch.nMsg.sec %q: %v", values[i], err)
			}
			return prod, cons
		}
	}
	t.Fatalf("ConsumerPerformance's output has no fetch.nMsg.sec:\n%s", out)
	return 0, 0
}
