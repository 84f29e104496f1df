//go:build unix

package events

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockStore takes an exclusive lock on the store directory dir for as long
// as the returned file stays open. nats-server takes none: two processes
// started on one directory ran two JetStream servers on the same files,
// each storing, acknowledging and compacting the stream the other read.
// The lock goes with the process, so a crash leaves none behind.
func lockStore(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("events: NATS store directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "duet.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("events: NATS store lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("events: NATS store %s is in use by another process", dir)
		}
		return nil, fmt.Errorf("events: NATS store lock: %w", err)
	}
	return f, nil
}
