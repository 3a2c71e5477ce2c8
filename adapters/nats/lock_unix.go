//go:build unix

package nats

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"

	"github.com/polybus/polybus/message"
)

// lockFile is the file in an embedded store directory that the process
// using the directory holds an exclusive lock on. nats-server itself does
// not stop two processes from sharing (and corrupting) one store.
const lockFile = "polybus.lock"

func lockDir(dir string) (*os.File, error) {
	const op = "nats: embedded"
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, message.Wrap(ErrorCode(err), op, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, message.Errorf(message.Unavailable, op, "%s is in use by another process", dir)
		}
		return nil, message.Errorf(message.Unknown, op, "locking %s: %w", dir, err)
	}
	return f, nil
}

func unlockDir(f *os.File) {
	// Closing the file releases the lock.
	f.Close()
}
