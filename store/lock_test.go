package store

import (
	"errors"
	"path/filepath"
	"testing"
)

// TestLock: Lock and Open exclude each other, and a released lock lets
// Open in.
func TestLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	release, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("Open under Lock = %v, want ErrLocked", err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock = %v, want ErrLocked", err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir) // the directory Lock made opens as a new store
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("Lock under Open = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	release, err = Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	_ = release()
}
