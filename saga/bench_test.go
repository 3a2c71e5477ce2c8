package saga_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polybus/polybus/saga"
)

// BenchmarkOrderSaga measures OrderSagas completed per second end to end
// on embedded:// with the SQLite store: b.N sagas started at once, each
// three commands to the three services and their replies, seven saves;
// timed from the first Start to the last completion. SQLite commits with
// synchronous=FULL (its default: an fsync per save) and, as a second
// figure, NORMAL (WAL: durable across a process crash, not a power cut).
func BenchmarkOrderSaga(b *testing.B) {
	for _, sync := range []string{"full", "normal"} {
		b.Run("sqlite-sync="+sync, func(b *testing.B) {
			dsn := sqliteDSN(filepath.Join(b.TempDir(), "saga.db")) + "&_pragma=synchronous(" + sync + ")"
			benchOrderSaga(b, newWorld(b, "embedded://"+filepath.Join(b.TempDir(), "bus"), "sqlite", dsn, ""))
		})
	}
}

func benchOrderSaga(b *testing.B, w *world) {
	ctx := context.Background()
	w.startServices()
	var completed atomic.Int64
	all := make(chan struct{})
	n := int64(b.N)
	s := newOrderSaga(b, w, saga.Config{StepTimeout: time.Minute, OnSave: func(st saga.State) {
		if st.Status == saga.Completed && completed.Add(1) == n {
			close(all)
		}
	}})
	run(b, s)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		id := fmt.Sprintf("bench-%d", i)
		if err := s.Start(ctx, id, Order{OrderID: id, SKU: "sku", Qty: 1, Amount: 10}); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d sagas completed", completed.Load(), b.N)
	}
	took := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/took.Seconds(), "sagas/s")
}
