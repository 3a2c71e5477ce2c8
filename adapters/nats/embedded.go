package nats

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/polybus/polybus/message"
)

// embedded is one in-process nats-server, shared by every client of this
// process that opens its storage directory, and shut down when the last of
// them closes.
type embedded struct {
	dir    string // absolute, cleaned: the registry key
	listen string
	srv    *server.Server
	lock   *os.File
	refs   int // guarded by embeddedMu
}

var (
	embeddedMu sync.Mutex
	embeddeds  = map[string]*embedded{}
)

// startTimeout bounds the start of an embedded server (JetStream recovers
// its streams from disk before the server takes clients).
const startTimeout = 30 * time.Second

// acquireEmbedded returns the server for dir, starting it when no client of
// this process has it open. listen must agree with the running server's:
// "" for a later open means "whatever it has".
func acquireEmbedded(dir, listen string) (*embedded, error) {
	const op = "nats: embedded"
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, message.Errorf(message.InvalidArgument, op, "store directory %q: %v", dir, err)
	}
	embeddedMu.Lock()
	defer embeddedMu.Unlock()
	if e := embeddeds[abs]; e != nil {
		if listen != "" && listen != e.listen {
			return nil, message.Errorf(message.InvalidArgument, op,
				"%s is already open in this process with listen=%q; a second open cannot change it to %q", abs, e.listen, listen)
		}
		e.refs++
		return e, nil
	}
	e, err := startEmbedded(abs, listen)
	if err != nil {
		return nil, err
	}
	embeddeds[abs] = e
	return e, nil
}

func startEmbedded(dir, listen string) (*embedded, error) {
	const op = "nats: embedded"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, message.Wrap(ErrorCode(err), op, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: "polybus-embedded",
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		DontListen: listen == "",
	}
	if listen != "" {
		host, port, _ := net.SplitHostPort(listen)
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			unlockDir(lock)
			return nil, message.Errorf(message.InvalidArgument, op, "listen %q: bad port", listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		unlockDir(lock)
		return nil, message.Errorf(message.InvalidArgument, op, "server options: %w", err)
	}
	logs := &startLog{}
	srv.SetLoggerV2(logs, false, false, false)
	srv.Start()
	deadline := time.Now().Add(startTimeout)
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		if msg := logs.fatal(); msg != "" || time.Now().After(deadline) {
			srv.Shutdown()
			srv.WaitForShutdown()
			unlockDir(lock)
			if msg == "" {
				msg = "not ready after " + startTimeout.String() + " " + logs.why()
			}
			return nil, message.Errorf(message.Unavailable, op, "starting nats-server in %s: %s", dir, msg)
		}
	}
	if !srv.JetStreamEnabled() {
		msg := logs.why()
		srv.Shutdown()
		srv.WaitForShutdown()
		unlockDir(lock)
		return nil, message.Errorf(message.Unavailable, op, "JetStream did not start in %s: %s", dir, msg)
	}
	return &embedded{dir: dir, listen: listen, srv: srv, lock: lock, refs: 1}, nil
}

// release drops one client's hold; the last one shuts the server down and
// waits until it has stopped, so that the directory can be opened again at
// once, by this process or another.
func (e *embedded) release() {
	embeddedMu.Lock()
	e.refs--
	last := e.refs == 0
	if last {
		delete(embeddeds, e.dir)
	}
	embeddedMu.Unlock()
	if last {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
		unlockDir(e.lock)
	}
}

// startLog keeps the fatal and error lines that nats-server logs, to stop
// waiting for a start that failed and to explain why; it drops everything
// else. (nats-server's Fatalf only logs: the logger decides to exit.)
type startLog struct {
	mu        sync.Mutex
	lastFatal string
	lastError string
}

// fatal returns the last fatal line, or "".
func (l *startLog) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastFatal
}

// why returns the last fatal or else error line.
func (l *startLog) why() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastFatal != "" {
		return l.lastFatal
	}
	return l.lastError
}

func (l *startLog) Noticef(string, ...any) {}
func (l *startLog) Warnf(string, ...any)   {}
func (l *startLog) Debugf(string, ...any)  {}
func (l *startLog) Tracef(string, ...any)  {}

func (l *startLog) Errorf(format string, v ...any) {
	l.mu.Lock()
	l.lastError = fmt.Sprintf(format, v...)
	l.mu.Unlock()
}

func (l *startLog) Fatalf(format string, v ...any) {
	l.mu.Lock()
	l.lastFatal = fmt.Sprintf(format, v...)
	l.mu.Unlock()
}
