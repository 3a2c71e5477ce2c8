package nats_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// takeOne is the child that handles one message of the group and exits
// gracefully while holding more (buffered, and one handler call blocked):
// what `polybus sub --count 1` does.
func takeOne(ctx context.Context, c *polybus.Client) int {
	got := make(chan string, 1)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	var n int
	var mu sync.Mutex
	go func() {
		done <- c.Subscriber().Subscribe(sctx, os.Getenv(childTopicEnv), func(hctx context.Context, m *message.Message) error {
			mu.Lock()
			n++
			first := n == 1
			mu.Unlock()
			if first {
				got <- string(m.Payload)
				return nil
			}
			<-hctx.Done() // held until the drain deadline: handed back
			return hctx.Err()
		}, subscriber.Group("g"), subscriber.Concurrency(2))
	}()
	select {
	case p := <-got:
		fmt.Println("GOT", p)
	case <-ctx.Done():
		fmt.Println("ERROR timeout")
		return 1
	}
	stop()
	cctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = c.Close(cctx)
	if err := <-done; err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	return 0
}

// TestHandBackAcrossProcesses is the repro of the last session's known
// limit: four messages of one key, then four processes one after another,
// each handling one message of the group and exiting while it holds the
// others. Each process must get the next message in order, at once (not
// after the 30s ack wait), although the embedded server of the previous
// process, which forgets plain nacks, has stopped.
func TestHandBackAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	topic := "handback"
	func() {
		c := open(t, "embedded://"+dir)
		var msgs []*message.Message
		for _, p := range []string{"a", "b", "c", "d"} {
			m := message.New([]byte(p))
			m.Key = "k"
			msgs = append(msgs, m)
		}
		publish(t, c, topic, msgs...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}()
	for _, want := range []string{"a", "b", "c", "d"} {
		start := time.Now()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=take1", childDirEnv+"="+dir, childTopicEnv+"="+topic)
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "GOT "+want+"\n") {
			t.Fatalf("child got %q, want %s next", out, want)
		}
		if took > 10*time.Second {
			t.Errorf("child took %s to get %s: stuck behind the ack wait\n%s", took, want, out)
		}
		t.Logf("%s after %s", want, took.Round(time.Millisecond))
	}
}

// runMemberChild is the child of TestKillMember: one subscriber of the group that
// prints every message it handles ("H partition key seq") until killed.
// Each line is written to the pipe before the handler returns (and so
// before the message is acked): a SIGKILL can lose no line of a message
// that the group will not deliver again.
func runMemberChild(c *polybus.Client) int {
	var mu sync.Mutex
	fmt.Println("MEMBER")
	err := c.Subscriber().Subscribe(context.Background(), os.Getenv(childTopicEnv), func(_ context.Context, m *message.Message) error {
		d, _ := m.Delivery()
		time.Sleep(time.Millisecond)
		mu.Lock()
		_, err := fmt.Fprintf(os.Stdout, "H %d %s %s\n", d.Partition, m.Key, m.Payload)
		mu.Unlock()
		return err
	}, subscriber.Group(os.Getenv(childGroupEnv)), subscriber.Concurrency(4))
	fmt.Println("ERROR", err)
	return 1
}

// TestKillMember runs a group of three members: two in this process and
// one child process, all on one nats-server. With the load published and
// being handled, the child is sent SIGKILL. Its partitions must move to
// the survivors within the declared Rebalance bound (its member key and
// its pins expire); nothing is lost; each key's messages, with repeats
// removed, are handled in order (the child's handling, then the
// survivors'); duplicates are counted.
func TestKillMember(t *testing.T) {
	ns := startNATS(t)
	u := ns.url("")
	pub := open(t, u)
	topic, group := unique("kill"), unique("g")
	bound := pub.Capabilities().Rebalance

	type handling struct {
		part int
		key  string
		seq  int
		at   time.Time
	}
	var mu sync.Mutex
	var survivors []handling
	h := func(_ context.Context, m *message.Message) error {
		d, _ := m.Delivery()
		seq, _ := strconv.Atoi(string(m.Payload))
		time.Sleep(time.Millisecond)
		mu.Lock()
		survivors = append(survivors, handling{d.Partition, m.Key, seq, time.Now()})
		mu.Unlock()
		return nil
	}
	for range 2 {
		startMember(t, u, topic, group, h)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=member", childURLEnv+"="+u, childTopicEnv+"="+topic, childGroupEnv+"="+group)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	var cmu sync.Mutex
	var child []handling
	childParts := map[int]bool{}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 4 && f[0] == "H" {
				p, _ := strconv.Atoi(f[1])
				seq, _ := strconv.Atoi(f[3])
				cmu.Lock()
				child = append(child, handling{p, f[2], seq, time.Now()})
				childParts[p] = true
				cmu.Unlock()
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	waitMembers(t, pub, topic, group, 3)

	publishInterleaved(t, pub, topic)
	// Kill the child mid-stream.
	deadline := time.Now().Add(60 * time.Second)
	for {
		cmu.Lock()
		n := len(child)
		cmu.Unlock()
		if n >= 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child handled %d messages", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	killed = true
	_ = cmd.Wait()
	<-readDone

	// Everything is handled by someone.
	total := scaleKeys * scalePerKey
	all := func() map[string]map[int]bool {
		seen := map[string]map[int]bool{}
		add := func(hs []handling) {
			for _, x := range hs {
				if seen[x.key] == nil {
					seen[x.key] = map[int]bool{}
				}
				seen[x.key][x.seq] = true
			}
		}
		cmu.Lock()
		add(child)
		cmu.Unlock()
		mu.Lock()
		add(survivors)
		mu.Unlock()
		return seen
	}
	deadline = time.Now().Add(2 * time.Minute)
	for {
		n := 0
		for _, s := range all() {
			n += len(s)
		}
		if n == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages handled after the kill", n, total)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	// Each of the child's partitions moved: a survivor handled one of its
	// messages after the kill, within the bound.
	var moved []time.Duration
	for p := range childParts {
		i := slices.IndexFunc(survivors, func(x handling) bool { return x.part == p && x.at.After(killedAt) })
		if i < 0 {
			t.Errorf("partition %d of the killed child never reached a survivor", p)
			continue
		}
		moved = append(moved, survivors[i].at.Sub(killedAt))
	}
	slices.Sort(moved)
	if len(moved) > 0 && moved[len(moved)-1] > bound {
		t.Errorf("the killed child's partitions moved after %v, beyond the declared bound %s", moved, bound)
	}
	// Order per key, in the order the handling was seen: a partition
	// has one owner at a time, and a survivor takes one of the child's
	// over only after the child's lines were all read (it is dead by
	// then); one that moves to the child before the kill was handled by
	// a survivor first.
	merged := append(slices.Clone(child), survivors...)
	slices.SortStableFunc(merged, func(a, b handling) int { return a.at.Compare(b.at) })
	dups := 0
	for k := range scaleKeys {
		key := scaleKey(k)
		var seqs []int
		for _, x := range merged {
			if x.key == key {
				seqs = append(seqs, x.seq)
			}
		}
		seen := map[int]bool{}
		var first []int
		for _, s := range seqs {
			if !seen[s] {
				seen[s] = true
				first = append(first, s)
			}
		}
		dups += len(seqs) - len(first)
		for i, s := range first {
			if s != i {
				t.Errorf("key %s: %s", key, firstBreak(first))
				break
			}
		}
	}
	t.Logf("child held partitions %v and handled %d before SIGKILL; they moved after %v (bound %s); %d duplicates",
		slices.Sorted(mapKeys(childParts)), len(child), moved, bound, dups)
}

func mapKeys(m map[int]bool) func(func(int) bool) {
	return func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
