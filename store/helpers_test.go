package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	_ "github.com/multiformats/go-multihash/register/blake3"

	"github.com/shoal-project/shoal/dag"
)

// blk makes a CIDv1 block of data under codec and hash function code.
func blk(t testing.TB, codec, code uint64, data []byte) dag.Block {
	t.Helper()
	c, err := cid.Prefix{Version: 1, Codec: codec, MhType: code, MhLength: -1}.Sum(data)
	if err != nil {
		t.Fatalf("sum: %v", err)
	}
	return dag.Block{CID: c, Data: data}
}

// blkV0 makes a CIDv0 (dag-pb, sha2-256) block.
func blkV0(t testing.TB, data []byte) dag.Block {
	t.Helper()
	h, err := mh.Sum(data, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return dag.Block{CID: cid.NewCidV0(h), Data: data}
}

// seeded returns n deterministic pseudo-random bytes.
func seeded(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// openT opens a store in dir and closes it at the end of the test.
func openT(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// putShard writes blocks as one shard under key with the first block as root.
func putShard(t testing.TB, s *Store, key string, blocks []dag.Block) ShardInfo {
	t.Helper()
	w, err := s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, b := range blocks {
		// Hand Put a buffer that is scribbled over afterwards: Put must copy.
		tmp := append([]byte(nil), b.Data...)
		if err := w.Put(dag.Block{CID: b.CID, Data: tmp}); err != nil {
			t.Fatal(err)
		}
		for i := range tmp {
			tmp[i] ^= 0xff
		}
	}
	info, err := w.Commit(context.Background(), key, blocks[0].CID)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// checkBlocks asserts that every block reads back with its exact data.
func checkBlocks(t testing.TB, s *Store, blocks []dag.Block) {
	t.Helper()
	for _, b := range blocks {
		if !s.Has(b.CID) {
			t.Errorf("Has(%s) = false", b.CID)
		}
		got, err := s.Get(b.CID)
		if err != nil {
			t.Errorf("Get(%s): %v", b.CID, err)
			continue
		}
		if !bytes.Equal(got, b.Data) {
			t.Errorf("Get(%s): %d bytes differ from the %d put", b.CID, len(got), len(b.Data))
		}
	}
}

// tmpEntries lists dir/tmp.
func tmpEntries(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, tmpDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// shardPath is where key's file lives.
func shardPath(dir, key string) string { return filepath.Join(dir, shardsDir, key+shardExt) }

// asCorrupt extracts a *CorruptError.
func asCorrupt(t testing.TB, err error) *CorruptError {
	t.Helper()
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("error %v is not a *CorruptError wrapping ErrCorrupt", err)
	}
	return ce
}
