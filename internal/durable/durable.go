// Package durable holds the file system steps that make a change survive
// a crash, shared by the packages that write state to disk (store,
// consensus).
package durable

import (
	"fmt"
	"os"
)

// SyncDir fsyncs directory dir, so that the entries created, renamed or
// removed in it are on disk: a renamed file's data is durable only once
// its new directory entry is.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
