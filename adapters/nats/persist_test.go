package nats_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polybus/polybus"
	"github.com/polybus/polybus/message"
	"github.com/polybus/polybus/subscriber"
)

// The test binary re-executes itself as a child process: childEnv names
// what the child does, childDirEnv the embedded store it opens.
const (
	childEnv    = "POLYBUS_NATS_TEST_CHILD"
	childDirEnv = "POLYBUS_NATS_TEST_DIR"
	childTopic  = "persist.topic"
	childCount  = 50
	// childURLEnv, when set, is the URL the child opens instead of the
	// embedded store; childTopicEnv and childGroupEnv name what it reads.
	childURLEnv   = "POLYBUS_NATS_TEST_URL"
	childTopicEnv = "POLYBUS_NATS_TEST_TOPIC"
	childGroupEnv = "POLYBUS_NATS_TEST_GROUP"
)

// runChild is the child process's main.
func runChild() int {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	u := "embedded://" + os.Getenv(childDirEnv)
	if v := os.Getenv(childURLEnv); v != "" {
		u = v
	}
	c, err := polybus.Open(ctx, u)
	if err != nil {
		fmt.Println("OPEN-ERROR", message.CodeOf(err), err)
		return 0
	}
	defer c.Close(ctx)
	switch os.Getenv(childEnv) {
	case "publish":
		for i := range childCount {
			m := message.New([]byte(fmt.Sprint(i)))
			m.ID = fmt.Sprintf("persist-%03d", i)
			if err := c.Publisher().Publish(ctx, childTopic, m); err != nil {
				fmt.Println("ERROR", err)
				return 1
			}
		}
		fmt.Println("PUBLISHED")
	case "consume":
		got := make(chan string, childCount)
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		done := make(chan error, 1)
		go func() {
			done <- c.Subscriber().Subscribe(sctx, childTopic, func(_ context.Context, m *message.Message) error {
				got <- m.ID
				return nil
			}, subscriber.Group("persist-group"), subscriber.Concurrency(1))
		}()
		var ids []string
		for len(ids) < childCount {
			select {
			case id := <-got:
				ids = append(ids, id)
			case <-ctx.Done():
				fmt.Println("ERROR timeout with", len(ids))
				return 1
			}
		}
		stop()
		if err := <-done; err != nil {
			fmt.Println("ERROR", err)
			return 1
		}
		fmt.Println("GOT", strings.Join(ids, ","))
	case "take1":
		return takeOne(ctx, c)
	case "member":
		return runMemberChild(c)
	case "hold":
		// Keep the store open until the parent closes stdin.
		fmt.Println("HOLDING")
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	return 0
}

// child runs the test binary as a child process in mode on dir and returns
// its output.
func child(t *testing.T, mode, dir string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childDirEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", mode, err, out)
	}
	return string(out)
}

// TestPersistAcrossProcesses publishes to an embedded store from one
// process and consumes everything from the next one.
func TestPersistAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	if out := child(t, "publish", dir); !strings.Contains(out, "PUBLISHED") {
		t.Fatalf("publisher child: %s", out)
	}
	out := child(t, "consume", dir)
	var want []string
	for i := range childCount {
		want = append(want, fmt.Sprintf("persist-%03d", i))
	}
	// Keyless messages are spread over the partitions: all of them, once,
	// in any order.
	var got []string
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "GOT "); ok {
			got = strings.Split(rest, ",")
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("consumer child got:\n%s\nwant GOT (in any order) %s", out, strings.Join(want, ","))
	}
}

// TestStoreLockedByAnotherProcess checks that a store directory in use by
// one process cannot be opened by another, with a clear error, and can be
// once the first has let go.
func TestStoreLockedByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=hold", childDirEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "HOLDING" {
		stdin.Close()
		_ = cmd.Wait()
		t.Fatalf("child: %q", line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = polybus.Open(ctx, "embedded://"+dir)
	if !errors.Is(err, message.ErrUnavailable) || !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("open of a held store: got %v, want Unavailable: in use by another process", err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	c := open(t, "embedded://"+dir)
	publish(t, c, "after.lock", message.New([]byte("ok")))
}
