package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Lock takes the flock that Open takes on dir/LOCK, without opening the
// store: offline tools (shoal state import, export, cleanup) hold it so
// that no daemon runs on the peer's directory while they change it, and
// no daemon can start until they call the returned release. It creates dir
// (empty but for LOCK; a later Open lays out the rest) if it is absent. A
// directory held by a Store, in this process or another, gives ErrLocked.
func Lock(dir string) (release func() error, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	if err := flock(lf, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock store %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	return lf.Close, nil // closing the file drops the flock
}
