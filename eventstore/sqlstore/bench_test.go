package sqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/polybus/polybus/eventstore"
	"github.com/polybus/polybus/eventstore/sqlstore"
	"github.com/polybus/polybus/internal/brokertest"
	"github.com/polybus/polybus/message"
)

// Benchmarks: go test ./eventstore/sqlstore -run '^$' -bench . -benchtime 2000x
// (PostgreSQL with POLYBUS_POSTGRES_URL set). The 100,000-event load:
// -bench Load (POLYBUS_BENCH_EVENTS changes the count).

type benchDB struct {
	name    string
	dialect sqlstore.Dialect
	db      *sql.DB
}

func benchDBs(b *testing.B) []benchDB {
	dbs := []benchDB{{"sqlite", sqlstore.SQLite, open(b, "sqlite", sqliteDSN(filepath.Join(b.TempDir(), "bench.db")))}}
	if url := os.Getenv(pgEnv()); url != "" {
		dbs = append(dbs, benchDB{"postgres", sqlstore.Postgres, open(b, "pgx", url)})
	}
	return dbs
}

func pgEnv() string { v, _ := brokertest.EnvVar("postgres"); return v }

type Tick struct{ N int }

func benchStore(b *testing.B, d benchDB) (*eventstore.Store, *sqlstore.Driver) {
	drv := migrated(b, d.db, d.dialect)
	s, _ := eventstore.New(drv, eventstore.Options{SnapshotEvery: 0})
	_ = eventstore.Register[Tick](s.Registry(), "Tick")
	return s, drv
}

func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	for _, d := range benchDBs(b) {
		for _, batch := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/batch=%d", d.name, batch), func(b *testing.B) {
				s, _ := benchStore(b, d)
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					evs := make([]*eventstore.Event, batch)
					for j := range evs {
						evs[j] = &eventstore.Event{Data: Tick{j}}
					}
					if _, err := s.Append(ctx, "s-"+strconv.Itoa(i%50), eventstore.Any, evs...); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			})
			// The floor: the same rows inserted with no checks, in one
			// transaction per batch.
			b.Run(fmt.Sprintf("%s/raw-batch=%d", d.name, batch), func(b *testing.B) {
				_, drv := benchStore(b, d)
				ev, _, _ := drv.Tables()
				for i := 0; b.Loop(); i++ {
					tx, err := d.db.BeginTx(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					for j := range batch {
						if _, err := tx.ExecContext(ctx, `INSERT INTO "`+ev+`" (event_id, stream, version, type, data, metadata, time_ms) VALUES ($1, $2, $3, 'Tick', $4, '{}', $5)`,
							message.NewID(), "s-"+strconv.Itoa(i), j+1, []byte(`{"N":1}`), time.Now().UnixMilli()); err != nil {
							b.Fatal(err)
						}
					}
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

func fill(b *testing.B, s *eventstore.Store, stream string, n int) {
	ctx := context.Background()
	for done := 0; done < n; {
		k := min(1000, n-done)
		evs := make([]*eventstore.Event, k)
		for j := range evs {
			evs[j] = &eventstore.Event{Data: Tick{done + j}}
		}
		if _, err := s.Append(ctx, stream, eventstore.Any, evs...); err != nil {
			b.Fatal(err)
		}
		done += k
	}
}

func BenchmarkReadAll(b *testing.B) {
	ctx := context.Background()
	const n = 10000
	for _, d := range benchDBs(b) {
		b.Run(d.name, func(b *testing.B) {
			s, _ := benchStore(b, d)
			fill(b, s, "r", n)
			b.ResetTimer()
			for b.Loop() {
				var p eventstore.Position
				got := 0
				for {
					evs, err := s.ReadAll(ctx, p, 1000)
					if err != nil {
						b.Fatal(err)
					}
					if len(evs) == 0 {
						break
					}
					got += len(evs)
					p = evs[len(evs)-1].Position
				}
				if got != n {
					b.Fatalf("read %d", got)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

type counter struct{ N, V int64 }

func (c *counter) Apply(e *eventstore.Event) error {
	c.N += int64(e.Data.(Tick).N)
	c.V = e.Version
	return nil
}
func (c *counter) SnapshotState() any { return *c }
func (c *counter) RestoreSnapshot(cd eventstore.Codec, data []byte) error {
	return cd.Unmarshal(data, c)
}

func BenchmarkLoad(b *testing.B) {
	ctx := context.Background()
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("POLYBUS_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	for _, d := range benchDBs(b) {
		s, _ := benchStore(b, d)
		fill(b, s, "big", n)
		full := &counter{}
		if _, err := s.Load(ctx, "big", full, eventstore.LoadOptions{NoSnapshot: true}); err != nil {
			b.Fatal(err)
		}
		// A snapshot 50 events before the head.
		at := &counter{}
		if _, err := s.Load(ctx, "big", at, eventstore.LoadOptions{MaxVersion: int64(n - 50), NoSnapshot: true}); err != nil {
			b.Fatal(err)
		}
		if err := s.Snapshot(ctx, "big", at.V, at); err != nil {
			b.Fatal(err)
		}
		for _, snap := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/events=%d/snapshot=%v", d.name, n, snap), func(b *testing.B) {
				for b.Loop() {
					c := &counter{}
					if _, err := s.Load(ctx, "big", c, eventstore.LoadOptions{NoSnapshot: !snap}); err != nil {
						b.Fatal(err)
					}
					if *c != *full {
						b.Fatalf("loaded %+v, want %+v", c, full)
					}
				}
			})
		}
	}
}
