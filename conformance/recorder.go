package conformance

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// delivery is one handler call, as a recorder saw it.
type delivery struct {
	// sub numbers the subscriber that received it, as the test chose.
	sub int
	// msg is a deep copy of the received message (delivery facts aside).
	msg      *message.Message
	facts    message.Delivery
	hasFacts bool
	// at is when the handler was called.
	at time.Time
	// nth is 1 for the first delivery of the message to this recorder,
	// 2 for the second, ...
	nth int
}

// recorder records the deliveries of one topic to one group (or to a
// test's set of subscribers), and wakes waiters on each.
type recorder struct {
	watch
	topic, group string
	// crashes: a subscriber of the test crashed, so a message it had
	// received but not handled may reach a handler first with Attempt > 1.
	crashes bool

	mu     sync.Mutex
	list   []delivery
	byID   map[string][]int // indexes into list
	probes map[int]bool     // subscribers that saw a probe
	perSub map[int]int      // deliveries per subscriber, probes aside
}

func newRecorder(topic, group string) *recorder {
	return &recorder{topic: topic, group: group, byID: map[string][]int{}, probes: map[int]bool{}, perSub: map[int]int{}}
}

// handler returns a handler for subscriber sub that acks probes, records
// every other delivery and then calls next (acking when next is nil).
func (r *recorder) handler(sub int, next subscriber.Handler) subscriber.Handler {
	return func(ctx context.Context, m *message.Message) error {
		if m.Metadata.Get(probeKey) != "" {
			r.probe(sub)
			return nil
		}
		r.record(sub, m)
		if next == nil {
			return nil
		}
		return next(ctx, m)
	}
}

func (r *recorder) probe(sub int) {
	r.mu.Lock()
	r.probes[sub] = true
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) record(sub int, m *message.Message) {
	d := delivery{sub: sub, msg: m.Clone(), at: time.Now()}
	d.facts, d.hasFacts = m.Delivery()
	r.mu.Lock()
	d.nth = len(r.byID[m.ID]) + 1
	r.byID[m.ID] = append(r.byID[m.ID], len(r.list))
	r.list = append(r.list, d)
	r.perSub[sub]++
	r.mu.Unlock()
	r.notify()
}

// ready reports whether subscriber sub has seen a probe.
func (r *recorder) ready(sub int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.probes[sub]
}

// received returns how many messages subscriber sub has received.
func (r *recorder) received(sub int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.perSub[sub]
}

// hasAll reports whether every message of want was delivered at least once.
func (r *recorder) hasAll(want []*message.Message) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.byID) < len(want) {
		return false // cheap test first: waiters call this on every delivery
	}
	for _, m := range want {
		if len(r.byID[m.ID]) == 0 {
			return false
		}
	}
	return true
}

// missing returns the IDs of want never delivered.
func (r *recorder) missing(want []*message.Message) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for _, m := range want {
		if len(r.byID[m.ID]) == 0 {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// count returns how often id was delivered.
func (r *recorder) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID[id])
}

// deliveries returns the deliveries of id, in order.
func (r *recorder) deliveries(id string) []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	ds := make([]delivery, len(r.byID[id]))
	for i, j := range r.byID[id] {
		ds[i] = r.list[j]
	}
	return ds
}

// ids returns the distinct IDs delivered, sorted.
func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.byID))
	for id := range r.byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// all returns every delivery, in order.
func (r *recorder) all() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.list)
}

// duplicates returns how many deliveries were of a message already
// delivered.
func (r *recorder) duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.list) - len(r.byID)
}

// diffMessage describes how got differs from want in ID, Key, Payload and
// Metadata, or returns "" when it does not.
//
// Equality is by content: a nil and an empty payload are equal, and so are
// nil and empty metadata, because brokers do not distinguish them on the
// wire. Metadata keys under message.MetadataPrefix are polybus's own and
// adapters may add them on receipt; they are left out on both sides. Every
// other key must arrive with exactly its value, an empty value included.
func diffMessage(want, got *message.Message) string {
	var d []string
	if got.ID != want.ID {
		d = append(d, fmt.Sprintf("ID %q, want %q", got.ID, want.ID))
	}
	if got.Key != want.Key {
		d = append(d, fmt.Sprintf("Key %q, want %q", got.Key, want.Key))
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		d = append(d, describePayload(want.Payload, got.Payload))
	}
	var md []string
	for k, v := range want.Metadata {
		if strings.HasPrefix(k, message.MetadataPrefix) {
			continue
		}
		if gv, ok := got.Metadata[k]; !ok {
			md = append(md, fmt.Sprintf("metadata %q missing", k))
		} else if gv != v {
			md = append(md, fmt.Sprintf("metadata %q = %q, want %q", k, gv, v))
		}
	}
	for k := range got.Metadata {
		if _, ok := want.Metadata[k]; !ok && !strings.HasPrefix(k, message.MetadataPrefix) {
			md = append(md, fmt.Sprintf("metadata %q added", k))
		}
	}
	slices.Sort(md) // map order: keep reports stable
	return strings.Join(append(d, md...), "; ")
}

func describePayload(want, got []byte) string {
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	return fmt.Sprintf("payload of %d bytes, want %d bytes (first difference at byte %d)", len(got), len(want), i)
}
