package message_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
)

func TestErrorCodesMatchSentinels(t *testing.T) {
	cause := io.ErrUnexpectedEOF
	err := fmt.Errorf("outer: %w", message.Wrap(message.Unavailable, "kafka: publish", cause))
	if !errors.Is(err, message.ErrUnavailable) {
		t.Fatal("wrapped Unavailable does not match ErrUnavailable")
	}
	if errors.Is(err, message.ErrClosed) {
		t.Fatal("Unavailable matches ErrClosed")
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatal("cause not reachable")
	}
	if got := message.CodeOf(err); got != message.Unavailable {
		t.Fatalf("CodeOf = %v", got)
	}
	if got := err.Error(); got != "outer: polybus: kafka: publish: unavailable: unexpected EOF" {
		t.Fatalf("text %q", got)
	}
	if message.CodeOf(nil) != message.OK || message.CodeOf(io.EOF) != message.Unknown {
		t.Fatal("CodeOf of nil or foreign error")
	}
}

func TestWrapLeavesContextErrorsAlone(t *testing.T) {
	if got := message.Wrap(message.Unavailable, "op", context.Canceled); got != context.Canceled {
		t.Fatalf("Wrap(context.Canceled) = %v", got)
	}
	if message.Wrap(message.Unknown, "op", nil) != nil {
		t.Fatal("Wrap(nil) != nil")
	}
}

func TestErrorfKeepsCause(t *testing.T) {
	err := message.Errorf(message.TooLarge, "publish", "message %d: %w", 3, io.ErrShortWrite)
	if !errors.Is(err, message.ErrTooLarge) || !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("Errorf lost code or cause: %v", err)
	}
	if err.Error() != "polybus: publish: too large: message 3: short write" {
		t.Fatalf("text %q", err.Error())
	}
}

func TestPermanentAndRetryAfter(t *testing.T) {
	base := errors.New("bad input")
	p := fmt.Errorf("handler: %w", message.PermanentError(base))
	if !message.IsPermanent(p) || !errors.Is(p, message.ErrPermanent) || !errors.Is(p, base) {
		t.Fatal("permanent marking lost")
	}
	if message.CodeOf(p) != message.Permanent {
		t.Fatalf("CodeOf(permanent) = %v", message.CodeOf(p))
	}
	if message.IsPermanent(base) || message.PermanentError(nil) != nil {
		t.Fatal("unmarked error is permanent, or nil was marked")
	}
	r := message.RetryAfter(base, 2*time.Second)
	d, ok := message.RetryDelay(fmt.Errorf("x: %w", r))
	if !ok || d != 2*time.Second || !errors.Is(r, base) {
		t.Fatalf("RetryDelay = %v %v", d, ok)
	}
	if _, ok := message.RetryDelay(base); ok {
		t.Fatal("plain error asks for a delay")
	}
}

func TestMessageCloneAndSize(t *testing.T) {
	m := message.New([]byte{0, 1, 2})
	m.Key = "ord-1"
	m.Metadata = message.Metadata{"a": "bc"}
	if m.Size() != 3+5+3 {
		t.Fatalf("Size = %d", m.Size())
	}
	c := m.Clone()
	c.Payload[0] = 9
	c.Metadata["a"] = "zz"
	if m.Payload[0] != 0 || m.Metadata["a"] != "bc" || c.ID != m.ID {
		t.Fatal("Clone shares memory or lost the ID")
	}
	if _, ok := m.Delivery(); ok || m.Attempt() != 0 || m.As(new(int)) {
		t.Fatal("unreceived message has delivery facts")
	}
	message.Received(m, message.Delivery{Topic: "t", Attempt: 2}, func(target any) bool {
		p, ok := target.(*int)
		if ok {
			*p = 7
		}
		return ok
	})
	var n int
	if d, ok := m.Delivery(); !ok || d.Topic != "t" || m.Attempt() != 2 || !m.As(&n) || n != 7 {
		t.Fatal("delivery facts or As lost")
	}
}

func TestNewIDsAreUniqueTimeOrderedUUIDv7(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for range 1000 {
		id := message.NewID()
		if seen[id] {
			t.Fatalf("duplicate id %s", id)
		}
		if len(id) != 36 || id[14] != '7' {
			t.Fatalf("id %s is not a UUIDv7", id)
		}
		// The first 48 bits are milliseconds: the time prefix never falls.
		if id[:13] < prev {
			t.Fatalf("id %s sorts before the earlier %s", id, prev)
		}
		seen[id] = true
		prev = id[:13]
	}
}

// IDs made at once by several goroutines, over many refills of NewID's
// random buffer, are all distinct, in their random bits too.
func TestNewIDsConcurrentAreDistinct(t *testing.T) {
	const workers, each = 8, 2000
	ids := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range each {
				ids[w] = append(ids[w], message.NewID())
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	random := map[string]bool{}
	for _, l := range ids {
		for _, id := range l {
			if seen[id] || random[id[19:]] {
				t.Fatalf("id %s (or its random bits) made twice", id)
			}
			seen[id], random[id[19:]] = true, true
		}
	}
	if len(seen) != workers*each {
		t.Fatalf("%d ids, want %d", len(seen), workers*each)
	}
}

func BenchmarkNewID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = message.NewID()
	}
}
