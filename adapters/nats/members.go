package nats

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Membership of partitioned groups: every subscription of a group keeps a
// key in the KV bucket MembersBucket, MemberPrefix(stream, group) + its
// member ID, alive by writing it every memberBeat. A member whose key has
// not been written for memberTTL (by the server's clock: the times compared
// are the entries' server timestamps) is dead; a closing member deletes its
// key. Every member watches the group's keys and assigns the partitions from
// the sorted list of live members: partition p goes to member p mod M.
const (
	// MembersBucket is the JetStream KV bucket of the groups' members.
	MembersBucket = "polybus_members"
	memberBeat    = time.Second
	memberTTL     = 5 * time.Second
	// pinnedTTL is the partition consumers' PinnedTTL: the server moves
	// a partition whose pinned client has sent no pull request for it
	// that long. Pull requests expire after pullWait (500ms), so a live
	// owner pulls again well within it.
	pinnedTTL = 5 * time.Second
	// rebalanceBound is Capabilities.Rebalance: after a member dies, its
	// key expires (memberTTL) while the pin of its partitions expires
	// (pinnedTTL); the survivors then take them over (a few round trips
	// and acquireWait). 10s was exceeded under a loaded CI machine
	// (10.98s in TestKillMember), so the bound leaves room for a slow
	// take-over.
	rebalanceBound = 15 * time.Second
)

// membersBucket returns the members' KV bucket, creating it on first use.
func (c *core) membersBucket(ctx context.Context) (jetstream.KeyValue, error) {
	c.kvMu.Lock()
	defer c.kvMu.Unlock()
	if c.kv != nil {
		return c.kv, nil
	}
	kv, err := c.js.KeyValue(ctx, MembersBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		storage := jetstream.FileStorage
		if c.cfg.Storage == MemoryStorage {
			storage = jetstream.MemoryStorage
		}
		kv, err = c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      MembersBucket,
			Description: "polybus: live subscribers of partitioned consumer groups",
			History:     1,
			// Keys of dead members go away by themselves; liveness is
			// judged by memberTTL, not by this.
			TTL:      time.Minute,
			Storage:  storage,
			Replicas: c.cfg.Replicas,
		})
	}
	if err != nil {
		return nil, coded("nats: members", err)
	}
	c.kv = kv
	return kv, nil
}

// forgetBucket drops the cached bucket after it went away (memory storage
// across a server restart), so that the next membersBucket creates it.
func (c *core) forgetBucket() {
	c.kvMu.Lock()
	c.kv = nil
	c.kvMu.Unlock()
}

// membership is one subscription's membership of its group.
type membership struct {
	c      *core
	kv     jetstream.KeyValue
	prefix string
	id     string
	// out receives the sorted live members after every change; only the
	// latest matters, so a new list replaces one not yet read.
	out  chan []string
	stop chan struct{}
	done chan struct{}
}

// joinGroup writes the member key and starts keeping it alive and watching
// the group.
func joinGroup(ctx context.Context, c *core, kv jetstream.KeyValue, prefix string) (*membership, error) {
	m := &membership{
		c: c, kv: kv, prefix: prefix, id: memberID(),
		out: make(chan []string, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	if _, err := kv.Put(ctx, m.key(), []byte(memberInfo())); err != nil {
		return nil, coded("nats: join group", err)
	}
	w, err := kv.Watch(ctx, prefix+"*")
	if err != nil {
		_ = kv.Delete(context.Background(), m.key())
		return nil, coded("nats: join group", err)
	}
	go m.run(w)
	return m, nil
}

func (m *membership) key() string { return m.prefix + m.id }

// memberID returns a random member ID: 16 hex digits, one KV key token.
func memberID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+).
	return hex.EncodeToString(b)
}

// memberInfo is a member key's value, for people looking at the bucket.
func memberInfo() string {
	host, _ := os.Hostname()
	return "pid " + strconv.Itoa(os.Getpid()) + " on " + host
}

func (m *membership) run(w jetstream.KeyWatcher) {
	defer close(m.done)
	defer func() { _ = w.Stop() }()
	beat := time.NewTicker(memberBeat)
	defer beat.Stop()
	seen := map[string]time.Time{}
	var last []string
	initial := true
	publish := func() {
		if initial {
			return
		}
		live := liveMembers(seen, m.id)
		if slices.Equal(live, last) {
			return
		}
		last = live
		select {
		case <-m.out:
		default:
		}
		m.out <- live
	}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				initial = false
			} else {
				id := strings.TrimPrefix(e.Key(), m.prefix)
				if e.Operation() == jetstream.KeyValuePut {
					seen[id] = e.Created()
				} else {
					delete(seen, id)
				}
			}
			publish()
		case <-beat.C:
			ctx, cancel := context.WithTimeout(context.Background(), memberBeat)
			// A failed beat (disconnected) is retried at the next one; a
			// bucket that went away is created again.
			if _, err := m.kv.Put(ctx, m.key(), []byte(memberInfo())); errors.Is(err, jetstream.ErrNoStreamResponse) ||
				errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, natsgo.ErrNoResponders) {
				m.c.forgetBucket()
				if kv, err := m.c.membersBucket(ctx); err == nil {
					m.kv = kv
				}
			}
			cancel()
			publish()
		case <-m.stop:
			return
		}
	}
}

// liveMembers returns the sorted IDs of the members written within
// memberTTL of the latest write seen, self always included.
func liveMembers(seen map[string]time.Time, self string) []string {
	var now time.Time
	for _, t := range seen {
		if t.After(now) {
			now = t
		}
	}
	live := []string{self}
	for id, t := range seen {
		if id != self && now.Sub(t) <= memberTTL {
			live = append(live, id)
		}
	}
	slices.Sort(live)
	return live
}

// assigned returns the partitions of n that members (sorted) give to self:
// partition p goes to members[p mod len(members)].
func assigned(members []string, self string, n int) []int {
	i := slices.Index(members, self)
	if i < 0 {
		return nil
	}
	var ps []int
	for p := i; p < n; p += len(members) {
		ps = append(ps, p)
	}
	return ps
}

// leave stops the membership and deletes the member key, so that the
// others rebalance at once rather than after memberTTL.
func (m *membership) leave() {
	close(m.stop)
	<-m.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = m.kv.Delete(ctx, m.key())
}
