package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// testRoundTrip: 500 messages with awkward payloads, keys and metadata
// arrive exactly once each, with ID, Key, Payload and Metadata unchanged
// and correct delivery facts.
func testRoundTrip(f *fixture) {
	pub := f.client()
	topic, group := f.topic(), f.group()
	rec := newRecorder(topic, group)
	f.subscribe(f.client(), topic, rec.handler(0, nil), subscriber.Group(group))
	f.awaitReady(pub, topic, rec)

	msgs := roundTripMessages(f.caps, 500)
	f.publish(pub, topic, msgs...)
	if f.awaitAll(rec, msgs, "round trip") {
		f.observeQuiet()
	}
	f.verifyExact(rec, msgs, "round trip")
}

// roundTripMessages returns n messages cycling through payloads (nil,
// empty, NUL bytes, invalid UTF-8, every byte value, random binary, text,
// a large one), keys (none, ASCII, non-ASCII) and metadata (nil, empty,
// non-ASCII, many keys, an empty value, punctuation), all within the
// adapter's size limit.
func roundTripMessages(caps message.Capabilities, n int) []*message.Message {
	src := rand.NewChaCha8([32]byte{1, 2, 3})
	rnd := rand.New(src)
	random := func(size int) []byte {
		b := make([]byte, size)
		_, _ = src.Read(b) // never fails
		return b
	}
	// Room for the largest key and metadata below, under the limit.
	large := 64 << 10
	if limit := caps.MaxMessageSize; limit > 0 {
		large = min(large, limit-2048)
	}
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	msgs := make([]*message.Message, n)
	for i := range msgs {
		var payload []byte
		switch i % 8 {
		case 0:
			payload = nil
		case 1:
			payload = []byte{}
		case 2:
			payload = []byte{0, 0, byte(i), 0, 'x', 0}
		case 3:
			payload = []byte{0xff, 0xfe, 0xfd, 0xc3, 0x28, 0xe2, 0x82, byte(i)}
		case 4:
			payload = every
		case 5:
			payload = random(1 + rnd.IntN(4096))
		case 6:
			payload = fmt.Appendf(nil, "héllo wörld ✓ 日本語 🎉 #%d", i)
		case 7:
			payload = random(max(large, 1))
		}
		var key string
		switch i % 4 {
		case 1:
			key = fmt.Sprintf("key-%d", i%13)
		case 2:
			key = fmt.Sprintf("ключ-鍵-🔑-%d", i%5)
		case 3:
			key = fmt.Sprintf("k:%d/ with space", i%7)
		}
		var md message.Metadata
		switch i % 5 {
		case 1:
			md = message.Metadata{}
		case 2:
			md = message.Metadata{"ünïcode-ключ": "值 ✓ 🎉", "seq": fmt.Sprint(i)}
		case 3:
			md = message.Metadata{}
			for k := range 20 {
				md[fmt.Sprintf("k%02d", k)] = fmt.Sprintf("v%d-%d", k, i)
			}
		case 4:
			md = message.Metadata{"Content-Type": "application/octet-stream", "x-empty": "", "x-punct": "a:b;c=d, e\"f'g"}
		}
		msgs[i] = newMsg(key, payload, md)
	}
	return msgs
}

// testDurablePublish: once Publish has returned nil, a group created
// afterwards and starting from the earliest message receives every
// message, even though the publishing client is gone.
func testDurablePublish(f *fixture) {
	pub := f.client()
	f.require(f.caps.Retained, "Retained (a new group reads old messages)")
	topic, group := f.topic(), f.group()
	msgs := make([]*message.Message, 200)
	for i := range msgs {
		msgs[i] = newMsg(fmt.Sprintf("d-%d", i%10), fmt.Appendf(nil, "durable %d", i), nil)
	}
	f.publish(pub, topic, msgs...)
	// Open the subscriber's client before closing the publisher's, so that
	// an in-process broker shared by name lives on.
	sub := f.client()
	f.closeClient(pub)

	rec := newRecorder(topic, group)
	f.subscribe(sub, topic, rec.handler(0, nil), subscriber.Group(group), subscriber.StartAt(subscriber.Earliest))
	if f.awaitAll(rec, msgs, "durable publish") {
		f.observeQuiet()
	}
	f.verifyExact(rec, msgs, "durable publish")
}

// testFanOut: two groups on one topic each receive every message once.
func testFanOut(f *fixture) {
	pub := f.client()
	f.require(f.caps.FanOut, "FanOut")
	topic := f.topic()
	g1, g2 := f.group(), f.group()
	r1, r2 := newRecorder(topic, g1), newRecorder(topic, g2)
	f.subscribe(f.client(), topic, r1.handler(0, nil), subscriber.Group(g1))
	f.subscribe(f.client(), topic, r2.handler(0, nil), subscriber.Group(g2))
	f.awaitReady(pub, topic, r1)
	f.awaitReady(pub, topic, r2)

	msgs := make([]*message.Message, 300)
	for i := range msgs {
		msgs[i] = newMsg(fmt.Sprintf("f-%d", i%17), fmt.Appendf(nil, "fan-out %d", i), nil)
	}
	f.publish(pub, topic, msgs...)
	ok1 := f.awaitAll(r1, msgs, "fan-out, group 1")
	ok2 := f.awaitAll(r2, msgs, "fan-out, group 2")
	if ok1 && ok2 {
		f.observeQuiet()
	}
	f.verifyExact(r1, msgs, "fan-out, group 1")
	f.verifyExact(r2, msgs, "fan-out, group 2")
}

// testTopicIsolation: subscribers of two topics, in groups of the same
// name, each receive exactly their own topic's messages.
func testTopicIsolation(f *fixture) {
	pub := f.client()
	ta, tb, group := f.topic(), f.topic(), f.group()
	ra, rb := newRecorder(ta, group), newRecorder(tb, group)
	sub := f.client()
	f.subscribe(sub, ta, ra.handler(0, nil), subscriber.Group(group))
	f.subscribe(sub, tb, rb.handler(0, nil), subscriber.Group(group))
	f.awaitReady(pub, ta, ra)
	f.awaitReady(pub, tb, rb)

	var ma, mb []*message.Message
	for i := range 100 {
		ma = append(ma, newMsg(fmt.Sprintf("k-%d", i%5), fmt.Appendf(nil, "a %d", i), nil))
		mb = append(mb, newMsg(fmt.Sprintf("k-%d", i%5), fmt.Appendf(nil, "b %d", i), nil))
	}
	for i := 0; i < 100; i += 10 {
		f.publish(pub, ta, ma[i:i+10]...)
		f.publish(pub, tb, mb[i:i+10]...)
	}
	oka := f.awaitAll(ra, ma, "topic A")
	okb := f.awaitAll(rb, mb, "topic B")
	if oka && okb {
		f.observeQuiet()
	}
	f.verifyExact(ra, ma, "topic A")
	f.verifyExact(rb, mb, "topic B")
}

// testConcurrentPublishers: 8 goroutines publish 2,000 messages each, one
// per call, through one publisher; the exact set arrives, once each.
func testConcurrentPublishers(f *fixture) {
	const writers, each = 8, 2000
	pub := f.client()
	topic, group := f.topic(), f.group()
	rec := newRecorder(topic, group)
	f.subscribe(f.client(), topic, rec.handler(0, nil), subscriber.Group(group), subscriber.Concurrency(8))
	f.awaitReady(pub, topic, rec)

	msgs := make([]*message.Message, writers*each)
	for w := range writers {
		for i := range each {
			msgs[w*each+i] = newMsg(fmt.Sprintf("w%d-%d", w, i%16), fmt.Appendf(nil, "writer %d message %d", w, i), nil)
		}
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for _, m := range msgs[w*each : (w+1)*each] {
				if err := pub.Publisher().Publish(f.ctx, topic, m); err != nil {
					f.Errorf("writer %d: publish: %v", w, err)
					f.abort()
					return
				}
			}
		})
	}
	wg.Wait()
	if f.Failed() {
		return
	}
	if f.awaitAll(rec, msgs, "concurrent publishers") {
		f.observeQuiet()
	}
	f.verifyExact(rec, msgs, "concurrent publishers")
}

// testSizeLimit: a message of exactly the declared MaxMessageSize is
// delivered intact; one byte more fails with ErrTooLarge, and nothing of
// that Publish call is delivered.
func testSizeLimit(f *fixture) {
	pub := f.client()
	limit := f.caps.MaxMessageSize
	f.require(limit > 0, "MaxMessageSize")
	topic, group := f.topic(), f.group()
	rec := newRecorder(topic, group)
	f.subscribe(f.client(), topic, rec.handler(0, nil), subscriber.Group(group))
	f.awaitReady(pub, topic, rec)

	fill := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + i>>8)
		}
		return b
	}
	exact := newMsg("", fill(limit), nil)
	over := newMsg("", fill(limit+1), nil)
	companion := newMsg("", []byte("published in one call with a message too large"), nil)
	if exact.Size() != limit || over.Size() != limit+1 {
		f.Fatalf("suite bug: sizes %d and %d, want %d and %d", exact.Size(), over.Size(), limit, limit+1)
	}

	exactOK := true
	if err := pub.Publisher().Publish(f.ctx, topic, exact); err != nil {
		f.Errorf("publish a message of exactly MaxMessageSize (%d bytes): %v", limit, err)
		exactOK = false
	}
	if err := pub.Publisher().Publish(f.ctx, topic, over); !errors.Is(err, message.ErrTooLarge) {
		f.Errorf("publish a message of MaxMessageSize+1 bytes: got %v, want an error matching message.ErrTooLarge", err)
	}
	if err := pub.Publisher().Publish(f.ctx, topic, companion, over); !errors.Is(err, message.ErrTooLarge) {
		f.Errorf("publish a small and a too-large message in one call: got %v, want message.ErrTooLarge", err)
	}
	marker := newMsg("", []byte("marker"), nil)
	f.publish(pub, topic, marker)

	want := []*message.Message{marker}
	if exactOK {
		want = append(want, exact)
	}
	if f.awaitAll(rec, want, "size limit") {
		f.observeQuiet()
	}
	if n := rec.count(over.ID); n > 0 {
		f.Errorf("the message over the limit was delivered %d times", n)
	}
	if n := rec.count(companion.ID); n > 0 {
		f.Errorf("a message published in one call with a too-large one was delivered %d times: that call must send nothing", n)
	}
	for _, d := range rec.deliveries(exact.ID) {
		if !bytes.Equal(d.msg.Payload, exact.Payload) {
			f.Errorf("the message of exactly MaxMessageSize arrived changed: %s", describePayload(exact.Payload, d.msg.Payload))
		}
	}
	if n := rec.count(exact.ID); n > 1 {
		f.Errorf("the message of exactly MaxMessageSize was delivered %d times", n)
	}
}
