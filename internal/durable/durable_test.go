package durable

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSyncDir: a directory syncs; a missing one is an error naming it,
// and so is a path that is not a directory one can open.
func TestSyncDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(dir); err != nil {
		t.Fatalf("SyncDir(%s): %v", dir, err)
	}
	missing := filepath.Join(dir, "missing")
	if err := SyncDir(missing); err == nil || !os.IsNotExist(err) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("SyncDir of a missing directory: %v", err)
	}
}
