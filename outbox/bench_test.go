package outbox_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/outbox"
)

// BenchmarkRelay: rows already in the outbox relayed to embedded://, and
// the floor: the same messages published straight to it in calls of the
// relay's batch size. go test ./outbox -run '^$' -bench Relay -benchtime 5000x
func BenchmarkRelay(b *testing.B) {
	ctx := context.Background()
	const batch = 100
	mk := func(i int) *message.Message {
		return &message.Message{Key: fmt.Sprintf("k%d", i%16), Payload: make([]byte, 200)}
	}
	b.Run("outbox", func(b *testing.B) {
		be := backend{"sqlite", outbox.SQLite, open(b, "sqlite", sqliteDSN(filepath.Join(b.TempDir(), "app.db")))}
		o := newOutbox(b, be, nil)
		bus, err := polybus.Open(ctx, "embedded://"+filepath.Join(b.TempDir(), "bus"))
		if err != nil {
			b.Fatal(err)
		}
		defer bus.Close(ctx)
		tx, _ := o.DB().BeginTx(ctx, nil)
		for i := range b.N {
			if err := o.Add(ctx, tx, "bench", mk(i)); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		r, _ := o.Relay(outbox.RelayConfig{Publisher: bus.Publisher(), BatchSize: batch})
		b.ResetTimer()
		done := 0
		for done < b.N {
			n, err := r.Once(ctx)
			if err != nil {
				b.Fatal(err)
			}
			done += n
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("raw-publish", func(b *testing.B) {
		bus, err := polybus.Open(ctx, "embedded://"+filepath.Join(b.TempDir(), "bus"))
		if err != nil {
			b.Fatal(err)
		}
		defer bus.Close(ctx)
		msgs := make([]*message.Message, b.N)
		for i := range msgs {
			msgs[i] = mk(i)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i += batch {
			if err := bus.Publisher().Publish(ctx, "bench", msgs[i:min(i+batch, b.N)]...); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}
