package store

import (
	"context"
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
)

// damageIndex writes a shard of three sha2-256 blocks and lets damage
// edit the entries of its index (one bucket of 40-byte entries: digest,
// then the section's offset in the CARv1, little-endian), in place.
func damageIndex(t *testing.T, damage func(entries []byte)) (*Store, []dag.Block, string) {
	t.Helper()
	dir := t.TempDir()
	s := openT(t, dir)
	blocks := []dag.Block{
		blk(t, cid.Raw, mh.SHA2_256, seeded(11, 3000)),
		blk(t, cid.Raw, mh.SHA2_256, seeded(12, 3000)),
		blk(t, cid.Raw, mh.SHA2_256, seeded(13, 3000)),
	}
	putShard(t, s, "idx", blocks)
	p := shardPath(dir, "idx")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	lay, err := readLayout(f, int64(len(b)))
	f.Close()
	if err != nil || lay.indexOffset == 0 || !lay.fullyIndexed {
		t.Fatalf("layout %+v, %v: want a full index", lay, err)
	}
	// codec uvarint (2 bytes), ncodes i32, code u64, nwidths i32, width
	// u32, nbytes i64, then the entries.
	idx := b[lay.indexOffset:]
	if w, n := binary.LittleEndian.Uint32(idx[2+4+8+4:]), binary.LittleEndian.Uint64(idx[2+4+8+4+4:]); w != 40 || n != 3*40 {
		t.Fatalf("index bucket of width %d and %d bytes, want 3 entries of 40", w, n)
	}
	damage(idx[2+4+8+4+4+8:][:3*40])
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return s, blocks, dir
}

// TestVerifyChecksTheIndex: Verify finds an index that lists the right
// offsets under the wrong digests (two entries' offsets swapped), and one
// whose offset falls off a section boundary, though every data byte is
// intact; a test that only ever damages data bytes would pass a Verify
// that skipped the index.
func TestVerifyChecksTheIndex(t *testing.T) {
	swapped := func(e []byte) {
		a, b := e[32:40], e[72:80]
		var tmp [8]byte
		copy(tmp[:], a)
		copy(a, b)
		copy(b, tmp[:])
	}
	s, _, _ := damageIndex(t, swapped)
	err := s.Verify(context.Background(), "idx")
	ce := asCorrupt(t, err)
	if ce.Reason != "the index does not list this block at this offset" {
		t.Fatalf("Verify with two index entries swapped: %v", err)
	}

	shifted := func(e []byte) {
		off := binary.LittleEndian.Uint64(e[32:40])
		binary.LittleEndian.PutUint64(e[32:40], off+1)
	}
	s, _, _ = damageIndex(t, shifted)
	err = s.Verify(context.Background(), "idx")
	ce = asCorrupt(t, err)
	if !strings.HasPrefix(ce.Reason, "index: index offset ") || !strings.Contains(ce.Reason, "does not fall on a section boundary") {
		t.Fatalf("Verify with an index offset one byte off: %v", err)
	}
}

// TestGetChecksTheIndex: a store opened over an index whose entries name
// the wrong sections (two offsets swapped, every data byte intact) does
// not hand out one block's bytes for another's CID: each section is
// checked to hold the CID asked for, and each block still hashes right,
// so only that check stands between Get and a wrong answer.
func TestGetChecksTheIndex(t *testing.T) {
	s, blocks, dir := damageIndex(t, func(e []byte) {
		a, b := e[32:40], e[72:80]
		var tmp [8]byte
		copy(tmp[:], a)
		copy(a, b)
		copy(b, tmp[:])
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir)
	// The first two entries swapped their sections, the third kept its
	// own.
	wrong := 0
	for _, b := range blocks {
		data, err := s.Get(b.CID)
		if err == nil {
			if string(data) != string(b.Data) {
				t.Fatalf("Get(%s) returned another block's %d bytes", b.CID, len(data))
			}
			continue
		}
		ce := asCorrupt(t, err)
		if !strings.HasPrefix(ce.Reason, "the index points at block ") || !ce.CID.Equals(b.CID) {
			t.Fatalf("Get(%s) over a swapped index: %v", b.CID, err)
		}
		wrong++
	}
	if wrong != 2 {
		t.Fatalf("%d of the 3 blocks refused, want the 2 whose entries were swapped", wrong)
	}
}
