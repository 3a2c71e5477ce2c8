package middleware

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

func panicking(v any) subscriber.Handler {
	return func(context.Context, *message.Message) error { panic(v) }
}

func TestRecovererTurnsPanicIntoPermanentErrorWithStack(t *testing.T) {
	var hooked []any
	mw, err := Recoverer(RecovererConfig{OnPanic: func(_ context.Context, _ *message.Message, v any, stack []byte) {
		hooked = append(hooked, v)
		if !strings.Contains(string(stack), "panicking") {
			t.Errorf("OnPanic stack lacks the panicking function:\n%s", stack)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = mw(panicking("boom"))(context.Background(), received("m1", "t", "g", 1))
	if message.CodeOf(err) != message.Permanent || !message.IsPermanent(err) {
		t.Fatalf("err = %v (code %v), want code permanent", err, message.CodeOf(err))
	}
	var p *PanicError
	if !errors.As(err, &p) || p.Value != "boom" {
		t.Fatalf("err = %v, want a *PanicError with value boom", err)
	}
	// The stack names the function that panicked, and the text carries it.
	if !strings.Contains(string(p.Stack), ".panicking") || !strings.Contains(err.Error(), ".panicking") {
		t.Fatalf("stack lacks the panicking function:\n%s", p.Stack)
	}
	if !strings.HasPrefix(err.Error(), "polybus: handle: permanent: handler panicked: boom\n") {
		t.Fatalf("error text = %q", err.Error())
	}
	if len(hooked) != 1 || hooked[0] != "boom" {
		t.Fatalf("OnPanic calls = %v", hooked)
	}
}

func TestRecovererTransientAndErrorValues(t *testing.T) {
	mw, err := Recoverer(RecovererConfig{Transient: true})
	if err != nil {
		t.Fatal(err)
	}
	sentinel := errors.New("sentinel")
	err = mw(panicking(sentinel))(context.Background(), received("m1", "t", "g", 1))
	if message.IsPermanent(err) || message.CodeOf(err) != message.Unknown {
		t.Fatalf("err = %v (code %v), want a transient Unknown error", err, message.CodeOf(err))
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want the panic's error reachable", err)
	}
	// panic(nil) is a *runtime.PanicNilError since Go 1.21: still caught.
	if err := mw(panicking(nil))(context.Background(), received("m1", "t", "g", 1)); err == nil {
		t.Fatal("panic(nil) was not turned into an error")
	}
	// No panic: the handler's result passes through.
	if err := mw(returning(sentinel))(context.Background(), received("m1", "t", "g", 1)); err != sentinel {
		t.Fatalf("err = %v, want the handler's error", err)
	}
}

func TestRecoveredPanicIsDeadLettered(t *testing.T) {
	pub := &fakePublisher{}
	dlq, _ := dlqWith(t, DLQConfig{Publisher: pub})
	rec, err := Recoverer(RecovererConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := subscriber.Chain(dlq, rec)(panicking("boom"))(context.Background(), received("m1", "orders", "g", 1)); err != nil {
		t.Fatalf("err = %v, want nil", err)
	}
	md := oneDeadLetter(t, pub, "orders.dlq").Metadata
	if md[message.KeyDLQReason] != "permanent" || !strings.HasPrefix(md[message.KeyDLQError], "polybus: handle: permanent: handler panicked: boom\n\ngoroutine ") {
		t.Fatalf("dead letter metadata = %v", md)
	}
}
