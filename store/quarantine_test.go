package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
)

// TestQuarantineShard: a shard Verify finds damaged is moved to corrupt/
// whole, its blocks are gone unless another shard holds them, it is listed
// in Quarantined, and a second shard of the same key can be committed.
func TestQuarantineShard(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	shared := blk(t, cid.Raw, mh.SHA2_256, seeded(1, 5000))
	own := blk(t, cid.Raw, mh.SHA2_256, seeded(2, 5000))
	putShard(t, s, "bad", []dag.Block{own, shared})
	putShard(t, s, "other", []dag.Block{shared})
	path := shardPath(dir, "bad")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The first block's data starts a little after 4096: flip one byte in it.
	if _, err := f.WriteAt([]byte{0xff ^ own.Data[100]}, 4096+200); err != nil {
		t.Fatal(err)
	}
	f.Close()
	verr := s.Verify(context.Background(), "bad")
	if ce := asCorrupt(t, verr); ce.Key != "bad" || !ce.CID.Equals(own.CID) {
		t.Fatalf("Verify: %v", verr)
	}
	dst, err := s.QuarantineShard("bad", verr)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, corruptDir, "bad"+shardExt); dst != want {
		t.Fatalf("moved to %s, want %s", dst, want)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("shard file still in shards/: %v", err)
	}
	if s.HasShard("bad") || s.Has(own.CID) || !s.Has(shared.CID) || s.Count() != 1 {
		t.Fatalf("after quarantine: has bad %v, own %v, shared %v, count %d", s.HasShard("bad"), s.Has(own.CID), s.Has(shared.CID), s.Count())
	}
	if q := s.Quarantined(); len(q) != 1 || q[0].Key != "bad" || q[0].Path != dst || !errors.Is(q[0].Err, ErrCorrupt) {
		t.Fatalf("Quarantined: %+v", q)
	}
	if _, err := s.QuarantineShard("bad", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second quarantine: %v, want ErrNotFound", err)
	}
	putShard(t, s, "bad", []dag.Block{own, shared})
	if err := s.Verify(context.Background(), "bad"); err != nil {
		t.Fatalf("re-stored shard: %v", err)
	}
}
