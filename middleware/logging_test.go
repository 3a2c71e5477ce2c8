package middleware

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// recorder is a slog.Handler that keeps records' levels, messages and
// attributes (as strings) for exact comparison.
type recorder struct {
	mu    sync.Mutex
	level slog.Level
	recs  []logged
}

type logged struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	attrs := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, logged{rec.Level, rec.Message, attrs})
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) got() []logged {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]logged(nil), r.recs...)
}

// loggingWith builds Logging into a recorder, on a clock that moves 5ms
// per reading.
func loggingWith(t *testing.T, cfg LoggingConfig) (subscriber.Middleware, *recorder) {
	t.Helper()
	rec := &recorder{level: slog.LevelDebug}
	cfg.Logger = slog.New(rec)
	clk := newFakeClock()
	cfg.now = func() time.Time { clk.advance(5 * time.Millisecond); return clk.now() }
	mw, err := Logging(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return mw, rec
}

func wantLine(t *testing.T, rec *recorder, level slog.Level, attrs map[string]string) {
	t.Helper()
	got := rec.got()
	if len(got) != 1 {
		t.Fatalf("records = %+v, want one", got)
	}
	if got[0].level != level || got[0].msg != "polybus: message handled" || !maps.Equal(got[0].attrs, attrs) {
		t.Fatalf("record = %v %q\n%v\nwant %v\n%v", got[0].level, got[0].msg, got[0].attrs, level, attrs)
	}
}

func baseAttrs(outcome string, more ...string) map[string]string {
	a := map[string]string{"topic": "orders", "group": "g", "id": "m1", "key": "k-m1", "attempt": "2", "duration": "5ms", "outcome": outcome}
	for i := 0; i+1 < len(more); i += 2 {
		a[more[i]] = more[i+1]
	}
	return a
}

func TestLoggingAcked(t *testing.T) {
	mw, rec := loggingWith(t, LoggingConfig{})
	if err := mw(returning(nil))(context.Background(), received("m1", "orders", "g", 2)); err != nil {
		t.Fatal(err)
	}
	wantLine(t, rec, slog.LevelInfo, baseAttrs("acked"))
}

func TestLoggingTransientAndPermanentFailures(t *testing.T) {
	mw, rec := loggingWith(t, LoggingConfig{})
	err := message.RetryAfter(errTransient, time.Second)
	if got := mw(returning(err))(context.Background(), received("m1", "orders", "g", 2)); got != err {
		t.Fatalf("err = %v, want it unchanged", got)
	}
	wantLine(t, rec, slog.LevelWarn, baseAttrs("nacked", "retry_after", "1s", "error", "retry after 1s: downstream unavailable"))

	mw, rec = loggingWith(t, LoggingConfig{})
	perm := message.PermanentError(errors.New("bad"))
	_ = mw(returning(perm))(context.Background(), received("m1", "orders", "g", 2))
	wantLine(t, rec, slog.LevelError, baseAttrs("nacked", "error", "permanent: bad"))
}

func TestLoggingDeadLetteredWithRetryAndCorrelation(t *testing.T) {
	logging, rec := loggingWith(t, LoggingConfig{})
	corr, _ := Correlation(CorrelationConfig{})
	dlq, _ := dlqWith(t, DLQConfig{Publisher: &fakePublisher{}})
	clk := newFakeClock()
	retry, err := Retry(RetryConfig{MaxAttempts: 2, sleep: clk.sleep})
	if err != nil {
		t.Fatal(err)
	}
	m := received("m1", "orders", "g", 2)
	m.Metadata = message.Metadata{message.KeyCorrelationID: "flow-1"}
	if err := subscriber.Chain(corr, logging, dlq, retry)(returning(errTransient))(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	wantLine(t, rec, slog.LevelWarn, baseAttrs("dead-lettered",
		"calls", "2", "correlation_id", "flow-1", "dlq_reason", "max-attempts", "dlq_topic", "orders.dlq",
		"error", "polybus: retry: gave up after 2 attempts: downstream unavailable"))
}

func TestLoggingFailedDeadLetter(t *testing.T) {
	logging, rec := loggingWith(t, LoggingConfig{})
	dlq, _ := dlqWith(t, DLQConfig{Publisher: &fakePublisher{failFirst: 1, err: errPublish}})
	perm := message.PermanentError(errors.New("bad"))
	_ = subscriber.Chain(logging, dlq)(returning(perm))(context.Background(), received("m1", "orders", "g", 2))
	wantLine(t, rec, slog.LevelError, baseAttrs("nacked", "dlq_error", errPublish.Error(), "error", "permanent: bad"))
}

func TestLoggingSuccessLevelBelowLoggerIsSilent(t *testing.T) {
	rec := &recorder{level: slog.LevelInfo}
	mw, err := Logging(LoggingConfig{Logger: slog.New(rec), SuccessLevel: slog.LevelDebug})
	if err != nil {
		t.Fatal(err)
	}
	_ = mw(returning(nil))(context.Background(), received("m1", "orders", "g", 2))
	if got := rec.got(); len(got) != 0 {
		t.Fatalf("records = %+v, want none", got)
	}
	_ = mw(returning(errTransient))(context.Background(), received("m1", "orders", "g", 2))
	if got := rec.got(); len(got) != 1 || got[0].level != slog.LevelWarn {
		t.Fatalf("records = %+v, want one warning", got)
	}
}
