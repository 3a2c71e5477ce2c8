package benchmarks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	"github.com/polybus/polybus"
	_ "github.com/polybus/polybus/adapters/kafka"  // kafka://
	_ "github.com/polybus/polybus/adapters/memory" // mem://
	_ "github.com/polybus/polybus/adapters/nats"   // nats://, embedded://
	polyrabbit "github.com/polybus/polybus/adapters/rabbitmq"
	polysqs "github.com/polybus/polybus/adapters/sqs"
	"github.com/polybus/polybus/bench"
)

// TestPeers runs one workload through polybus and its peers on every
// broker it has a URL for (the POLYBUS_*_URL variables of
// ~/.cache/polybus/brokers.env, plus mem:// and embedded://), the targets
// of a broker interleaved (A B C ... A B C ...) for POLYBUS_BENCH_ROUNDS
// rounds, and writes out/peers.json (a list of per-broker reports),
// out/peers-<broker>.json and, when bench.Report has WriteHTML,
// out/peers-<broker>.html, and prints each broker's table. Ratios are to
// the broker's raw client (Watermill's tuned GoChannel on mem://). It
// runs only with POLYBUS_BENCH_PEERS=1 (make bench-peers). The knobs, all
// POLYBUS_BENCH_*: ROUNDS (5), N (messages, 20000; <BROKER>_N for one
// broker, SQS_N defaulting to N/20), SIZE (256), PUBLISHERS (4),
// CONSUMERS (1), KEYS (64), BATCH (100), PREFETCH (256, each consumer's,
// for polybus and the raw clients alike), UNORDERED (1: polybus without
// per-key order), RATE (the steady rate, the same for every target of a
// broker; default: a calibration run of polybus, not reported, gives half
// the slower of its publish and consume throughputs, or half of what its
// steady phase achieved when that could not keep up), STEADY (steady
// messages; default about 15 seconds' worth at the rate, at most N/2),
// BROKERS (a comma-separated subset of mem,embedded,kafka,nats,rabbitmq,
// sqs) and TARGETS (a comma-separated list of target name prefixes:
// polybus, raw, watermill, gocdk).
func TestPeers(t *testing.T) {
	if os.Getenv("POLYBUS_BENCH_PEERS") != "1" {
		t.Skip("set POLYBUS_BENCH_PEERS=1 (make bench-peers)")
	}
	w := bench.Workload{
		Messages:   envInt(t, "N", 20000),
		Size:       envInt(t, "SIZE", 256),
		Publishers: envInt(t, "PUBLISHERS", 4),
		Consumers:  envInt(t, "CONSUMERS", 1),
		Keys:       envInt(t, "KEYS", 64),
		Batch:      envInt(t, "BATCH", 100),
		Timeout:    5 * time.Minute,
	}
	w.SteadyMessages = envInt(t, "STEADY", max(w.Messages/2, 1))
	rounds := envInt(t, "ROUNDS", 5)
	prefetch := envInt(t, "PREFETCH", 256)
	rate := float64(envInt(t, "RATE", 0))
	out := filepath.Join("out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	var reports []*bench.Report
	for _, b := range peerBrokers(t) {
		if !want("BROKERS", b.name) {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			rep := runBroker(t, b, w, rounds, prefetch, rate)
			if rep == nil {
				return
			}
			reports = append(reports, rep)
			writeReport(t, rep, filepath.Join(out, "peers-"+b.name))
		})
	}
	f, err := os.Create(filepath.Join(out, "peers.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, r := range reports {
		r.Summarize()
	}
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	if err := enc.Encode(reports); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", f.Name())
}

// peerBroker is one broker and how to build its targets.
type peerBroker struct {
	name, url string
	// targets returns the broker's targets, the raw client (the
	// baseline) first after polybus; close releases what they share.
	targets func(ctx context.Context, prefetch, batch int) (ts []peerTarget, baseline string, close func(), err error)
}

type peerTarget struct {
	name string
	open func(ctx context.Context) (bench.Client, error)
}

func polyTarget(url string, prefetch int, cleanup func(context.Context, *polybus.Client, []string) error) peerTarget {
	return peerTarget{name: "polybus", open: func(ctx context.Context) (bench.Client, error) {
		return bench.Polybus(ctx, url, bench.PolybusOptions{Prefetch: prefetch, Unordered: os.Getenv("POLYBUS_BENCH_UNORDERED") == "1", Cleanup: cleanup})
	}}
}

func peerBrokers(t *testing.T) []peerBroker {
	bs := []peerBroker{{name: "mem", url: "mem://?max_messages=10000000&max_bytes=4294967296"}}
	bs[0].targets = func(ctx context.Context, prefetch, batch int) ([]peerTarget, string, func(), error) {
		return []peerTarget{
			polyTarget(bs[0].url, prefetch, nil),
			{name: "watermill-gochannel", open: func(context.Context) (bench.Client, error) { return NewWatermillGoChannel(0), nil }},
			{name: "watermill-gochannel-tuned", open: func(context.Context) (bench.Client, error) { return NewWatermillGoChannel(int64(prefetch)), nil }},
			{name: "gocdk-mempubsub", open: func(context.Context) (bench.Client, error) { return NewGoCDKMem(), nil }},
		}, "watermill-gochannel-tuned", func() {}, nil
	}
	dir := t.TempDir()
	emb := peerBroker{name: "embedded", url: "embedded://" + dir}
	emb.targets = func(ctx context.Context, prefetch, batch int) ([]peerTarget, string, func(), error) {
		// The holder keeps the server up between runs, and gives the raw
		// client its in-process connection.
		holder, err := polybus.Open(ctx, emb.url)
		if err != nil {
			return nil, "", nil, err
		}
		return append([]peerTarget{
			polyTarget(emb.url, prefetch, nil),
			{name: "raw-nats.go", open: func(context.Context) (bench.Client, error) { return NewRawNATSEmbedded(holder, prefetch) }},
		}, watermillNATSTargets(func() (*natsgo.Conn, error) {
			var srv *server.Server
			if !holder.Publisher().As(&srv) {
				return nil, fmt.Errorf("no embedded server")
			}
			return natsgo.Connect("", natsgo.InProcessServer(srv))
		}, prefetch)...), "raw-nats.go", func() { holder.Close(context.Background()) }, nil
	}
	bs = append(bs, emb)
	env := func(v string) string { return os.Getenv(v) }
	if u := env("POLYBUS_KAFKA_URL"); u != "" {
		bs = append(bs, peerBroker{name: "kafka", url: u, targets: func(ctx context.Context, prefetch, batch int) ([]peerTarget, string, func(), error) {
			return append([]peerTarget{
				polyTarget(u, prefetch, nil),
				{name: "raw-kafka-go", open: func(ctx context.Context) (bench.Client, error) { return NewRawKafka(ctx, u, prefetch, batch) }},
			}, watermillKafkaTargets(u, prefetch)...), "raw-kafka-go", func() {}, nil
		}})
	}
	if u := env("POLYBUS_NATS_URL"); u != "" {
		bs = append(bs, peerBroker{name: "nats", url: u, targets: func(ctx context.Context, prefetch, batch int) ([]peerTarget, string, func(), error) {
			return append([]peerTarget{
				polyTarget(u, prefetch, nil),
				{name: "raw-nats.go", open: func(ctx context.Context) (bench.Client, error) { return NewRawNATS(ctx, u, prefetch) }},
			}, watermillNATSTargets(func() (*natsgo.Conn, error) { return natsgo.Connect(strings.SplitN(u, "?", 2)[0]) }, prefetch)...), "raw-nats.go", func() {}, nil
		}})
	}
	if u := env("POLYBUS_AMQP_URL"); u != "" {
		bs = append(bs, peerBroker{name: "rabbitmq", url: u, targets: func(ctx context.Context, prefetch, batch int) ([]peerTarget, string, func(), error) {
			// polybus's RabbitMQ publisher fails when no queue of the
			// topic exists: the group is declared before its consumers
			// start (rabbitmq.DeclareGroup, as the adapter documents), on a
			// client of its own.
			holder, err := polybus.Open(ctx, u)
			if err != nil {
				return nil, "", nil, err
			}
			poly := polyTarget(u, prefetch, nil)
			open := poly.open
			poly.open = func(ctx context.Context) (bench.Client, error) {
				c, err := open(ctx)
				if err != nil {
					return nil, err
				}
				return declaring{Client: c, declare: func(ctx context.Context, topic, group string) error {
					return polyrabbit.DeclareGroup(ctx, holder, topic, group)
				}}, nil
			}
			return append([]peerTarget{
				poly,
				{name: "raw-amqp091-go", open: func(context.Context) (bench.Client, error) { return NewRawRabbitMQ(u, prefetch) }},
				{name: "gocdk-rabbitpubsub", open: func(context.Context) (bench.Client, error) { return NewGoCDKRabbit(u) }},
			}, watermillAMQPTargets(u, prefetch)...), "raw-amqp091-go", func() { holder.Close(context.Background()) }, nil
		}})
	}
	if u := env("POLYBUS_SQS_URL"); u != "" {
		bs = append(bs, peerBroker{name: "sqs", url: u, targets: func(ctx context.Context, prefetch, batch int) ([]peerTarget, string, func(), error) {
			holder, err := polybus.Open(ctx, u)
			if err != nil {
				return nil, "", nil, err
			}
			return []peerTarget{
				polyTarget(u, prefetch, polysqs.DeleteTopics),
				{name: "raw-aws-sdk-go-v2", open: func(context.Context) (bench.Client, error) { return NewRawSQS(holder) }},
				{name: "gocdk-awssnssqs", open: func(context.Context) (bench.Client, error) { return NewGoCDKSQS(holder) }},
			}, "raw-aws-sdk-go-v2", func() { holder.Close(context.Background()) }, nil
		}})
	}
	return bs
}

// declaring declares a group before it subscribes.
type declaring struct {
	bench.Client
	declare func(ctx context.Context, topic, group string) error
}

func (d declaring) Subscribe(ctx context.Context, topic, group string, consumers int, handle func([]byte)) (bench.Subscription, error) {
	if err := d.declare(ctx, topic, group); err != nil {
		return nil, err
	}
	return d.Client.Subscribe(ctx, topic, group, consumers, handle)
}

// Cleanup passes Cleaner on.
func (d declaring) Cleanup(ctx context.Context, topic string) error {
	if c, ok := d.Client.(bench.Cleaner); ok {
		return c.Cleanup(ctx, topic)
	}
	return nil
}

func watermillNATSTargets(connect func() (*natsgo.Conn, error), prefetch int) []peerTarget {
	return []peerTarget{
		{name: "watermill-nats", open: func(context.Context) (bench.Client, error) { return NewWatermillNATS(connect, prefetch, false) }},
		{name: "watermill-nats-tuned", open: func(context.Context) (bench.Client, error) { return NewWatermillNATS(connect, prefetch, true) }},
	}
}

func watermillAMQPTargets(url string, prefetch int) []peerTarget {
	return []peerTarget{
		{name: "watermill-amqp", open: func(context.Context) (bench.Client, error) { return NewWatermillAMQP(url, prefetch, false) }},
		{name: "watermill-amqp-tuned", open: func(context.Context) (bench.Client, error) { return NewWatermillAMQP(url, prefetch, true) }},
	}
}

func watermillKafkaTargets(url string, prefetch int) []peerTarget {
	return []peerTarget{
		{name: "watermill-kafka", open: func(context.Context) (bench.Client, error) { return NewWatermillKafka(url, prefetch, false) }},
		{name: "watermill-kafka-tuned", open: func(context.Context) (bench.Client, error) { return NewWatermillKafka(url, prefetch, true) }},
	}
}

// runBroker runs b's targets interleaved for rounds rounds.
func runBroker(t *testing.T, b peerBroker, w bench.Workload, rounds, prefetch int, rate float64) *bench.Report {
	ctx := t.Context()
	targets, baseline, release, err := b.targets(ctx, prefetch, w.Batch)
	if err != nil {
		t.Errorf("%s: %v", b.name, err)
		return nil
	}
	defer release()
	var kept []peerTarget
	for _, tg := range targets {
		if want("TARGETS", tg.name) {
			kept = append(kept, tg)
		}
	}
	rep := bench.NewReport("polybus and peers on "+b.name, w)
	rep.Baseline = baseline
	rep.Versions = versions()
	rep.Notes = append(rep.Notes, "broker "+redact(b.url), fmt.Sprintf("%d rounds, targets interleaved; prefetch %d", rounds, prefetch))
	if n := os.Getenv("POLYBUS_BENCH_" + strings.ToUpper(b.name) + "_N"); n != "" {
		w.Messages = envInt(t, strings.ToUpper(b.name)+"_N", 0)
	} else if b.name == "sqs" {
		// ElasticMQ takes a few hundred messages a second.
		w.Messages = max(w.Messages/20, 100)
	}
	if os.Getenv("POLYBUS_BENCH_STEADY") == "" {
		w.SteadyMessages = max(w.Messages/2, 1)
	}
	if rate == 0 && len(kept) > 0 {
		rate = calibrate(t, kept[0], w)
		if rate == 0 {
			return nil
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("steady rate %.0f msgs/s, from a calibration run of %s (not reported)", rate, kept[0].name))
	}
	if os.Getenv("POLYBUS_BENCH_STEADY") == "" {
		// About 15 seconds of steady load.
		w.SteadyMessages = min(w.Messages/2, max(int(rate*15), 500))
	}
	w.Rate = rate
	rep.Workload.Messages, rep.Workload.SteadyMessages, rep.Workload.Rate = w.Messages, w.SteadyMessages, rate
	failed := map[string]bool{}
	for round := 1; round <= rounds; round++ {
		for _, tg := range kept {
			if failed[tg.name] {
				continue
			}
			began := time.Now()
			res, err := runTarget(ctx, tg, w)
			for i := range res {
				res[i].Round = round
			}
			rep.Add(res...)
			if err != nil {
				t.Errorf("%s round %d: %s: %v (dropped from the later rounds)", b.name, round, tg.name, err)
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s failed in round %d: %v", tg.name, round, err))
				failed[tg.name] = true
				continue
			}
			t.Logf("%s round %d %s (%.1fs): %s", b.name, round, tg.name, time.Since(began).Seconds(), brief(res))
		}
	}
	return rep
}

// calibrate runs tg once with the engine's own rate (half the slower of
// its publish and consume throughputs) and returns that rate, or, when the
// steady phase could not keep up with it (a steady phase publishes one
// message per call, which batching does not help), half of what the steady
// phase achieved.
func calibrate(t *testing.T, tg peerTarget, w bench.Workload) float64 {
	w.Rate = 0
	res, err := runTarget(t.Context(), tg, w)
	if err != nil {
		t.Errorf("calibration run of %s: %v", tg.name, err)
		return 0
	}
	t.Logf("calibration %s: %s", tg.name, brief(res))
	for _, r := range res {
		if r.Phase == bench.PhaseSteady {
			if r.MsgsPerSec < 0.9*r.Rate {
				return math.Max(1, math.Floor(r.MsgsPerSec/2))
			}
			return r.Rate
		}
	}
	return 0
}

func runTarget(ctx context.Context, tg peerTarget, w bench.Workload) ([]bench.Result, error) {
	c, err := tg.open(ctx)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		c.Close(cctx)
	}()
	return bench.Run(ctx, tg.name, c, w, nil)
}

func brief(res []bench.Result) string {
	var parts []string
	for _, r := range res {
		s := fmt.Sprintf("%s %.0f msgs/s", r.Phase, r.MsgsPerSec)
		if r.Latency != nil {
			s += fmt.Sprintf(" p99 %.0fµs", r.Latency.P99)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func writeReport(t *testing.T, rep *bench.Report, base string) {
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Error(err)
	}
	fmt.Fprintf(os.Stdout, "\n%s\n%s", rep.Title, table.String())
	write := func(name string, f func(io.Writer) error) {
		out, err := os.Create(name)
		if err != nil {
			t.Error(err)
			return
		}
		defer out.Close()
		if err := f(out); err != nil {
			t.Error(err)
		}
	}
	write(base+".json", rep.WriteJSON)
	if h, ok := any(rep).(interface{ WriteHTML(io.Writer) error }); ok {
		write(base+".html", h.WriteHTML)
	}
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv("POLYBUS_BENCH_" + name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > math.MaxInt32 {
		t.Fatalf("POLYBUS_BENCH_%s=%q: want a count", name, v)
	}
	return n
}

// want reports whether name passes the filter POLYBUS_BENCH_<filter> (a
// comma-separated list of prefixes; empty: all).
func want(filter, name string) bool {
	v := os.Getenv("POLYBUS_BENCH_" + filter)
	if v == "" {
		return true
	}
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" && strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// redact drops a URL's password.
func redact(u string) string {
	if at := strings.LastIndex(u, "@"); at > 0 {
		if s := strings.Index(u, "://"); s > 0 && s < at {
			return u[:s+3] + "…" + u[at:]
		}
	}
	return u
}
