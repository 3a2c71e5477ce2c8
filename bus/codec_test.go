package bus_test

import (
	"bytes"
	"context"
	"encoding/gob"
	"testing"
	"time"

	"github.com/polybus/polybus/bus"
	"github.com/polybus/polybus/internal/pbtest"
)

// gobCodec is a pluggable codec: encoding/gob, naming its content type.
type gobCodec struct{}

func (gobCodec) Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	err := gob.NewEncoder(&b).Encode(v)
	return b.Bytes(), err
}
func (gobCodec) Unmarshal(data []byte, v any) error {
	return gob.NewDecoder(bytes.NewReader(data)).Decode(v)
}
func (gobCodec) ContentType() string { return "application/x-gob" }

type renamed struct{ N int }

func (renamed) MessageType() string { return "orders.Renamed-v2" }

// TestCodecAndTypeName: a Bus with another codec sends its payloads in
// it and names it in metadata; a Typer names its own type.
func TestCodecAndTypeName(t *testing.T) {
	ctx := context.Background()
	b := newBus(t, open(t, "mem://"), bus.Options{Prefix: prefix(), Codec: gobCodec{}})
	got := make(chan string, 1)
	_ = bus.Subscribe(b, "g", func(ctx context.Context, e renamed) error {
		m, _ := bus.MessageFrom(ctx)
		got <- m.Metadata.Get(bus.KeyContentType) + " " + m.Metadata.Get(bus.KeyType) + " " + m.Metadata.Get("polybus-kind")
		if e.N != 7 {
			t.Errorf("decoded %+v", e)
		}
		return nil
	})
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bus.Publish(ctx, b, renamed{7}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "application/x-gob orders.Renamed-v2 event" {
			t.Errorf("metadata %q", s)
		}
	case <-time.After(pbtest.Wait):
		t.Fatal("no event")
	}
	if name, err := bus.TypeName[renamed](); err != nil || name != "orders.Renamed-v2" || b.Topic(bus.KindEvent, name) == "" {
		t.Errorf("TypeName = %q, %v", name, err)
	}
}
