package bus_test

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/bus"
)

// BenchmarkAsk measures request/reply round trips on embedded:// (one
// responder service, one asking Bus), sequential and from 8 goroutines:
// round trips per second and the p99 latency.
func BenchmarkAsk(b *testing.B) {
	for _, par := range []int{1, 8} {
		b.Run(map[int]string{1: "sequential", 8: "concurrent8"}[par], func(b *testing.B) {
			ctx := context.Background()
			c := open(b, "embedded://"+filepath.Join(b.TempDir(), "bus"))
			p := prefix()
			svc := newBus(b, c, bus.Options{Prefix: p, Service: "orders"})
			_ = bus.HandleQuery(svc, func(ctx context.Context, q GetTotal) (Total, error) { return Total{len(q.OrderID)}, nil })
			if err := svc.Start(ctx); err != nil {
				b.Fatal(err)
			}
			asker := newBus(b, c, bus.Options{Prefix: p})
			if _, err := bus.Ask[GetTotal, Total](ctx, asker, GetTotal{"warm-up"}); err != nil {
				b.Fatal(err)
			}
			lat := make([]time.Duration, b.N)
			var wg sync.WaitGroup
			var next sync.Mutex
			i := 0
			b.ResetTimer()
			start := time.Now()
			for range par {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						next.Lock()
						n := i
						i++
						next.Unlock()
						if n >= b.N {
							return
						}
						t0 := time.Now()
						if _, err := bus.Ask[GetTotal, Total](ctx, asker, GetTotal{"ord"}); err != nil {
							b.Error(err)
							return
						}
						lat[n] = time.Since(t0)
					}
				}()
			}
			wg.Wait()
			took := time.Since(start)
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(b.N)/took.Seconds(), "roundtrips/s")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		})
	}
}
