package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		blocks func(t *testing.T) []dag.Block
	}{
		{"sha2-256 raw", func(t *testing.T) []dag.Block {
			var bs []dag.Block
			for i := range 20 {
				bs = append(bs, blk(t, cid.Raw, mh.SHA2_256, seeded(uint64(i), 1000+i*997)))
			}
			return bs
		}},
		{"sha2-256 dag-pb CIDv0", func(t *testing.T) []dag.Block {
			return []dag.Block{blkV0(t, seeded(1, 3000)), blkV0(t, seeded(2, 50000)), blkV0(t, nil)}
		}},
		{"sha2-512 dag-pb", func(t *testing.T) []dag.Block {
			return []dag.Block{blk(t, cid.DagProtobuf, mh.SHA2_512, seeded(3, 20000)), blk(t, cid.Raw, mh.SHA2_512, seeded(4, 7))}
		}},
		{"blake3 raw and dag-pb", func(t *testing.T) []dag.Block {
			return []dag.Block{blk(t, cid.Raw, mh.BLAKE3, seeded(5, 262144)), blk(t, cid.DagProtobuf, mh.BLAKE3, seeded(6, 12345))}
		}},
		{"identity", func(t *testing.T) []dag.Block {
			return []dag.Block{blk(t, cid.Raw, mh.IDENTITY, []byte("inline")), blk(t, cid.DagProtobuf, mh.IDENTITY, nil),
				blk(t, cid.Raw, mh.SHA2_256, seeded(7, 100))}
		}},
		{"mixed with duplicate", func(t *testing.T) []dag.Block {
			a := blk(t, cid.Raw, mh.SHA2_256, seeded(8, 9000))
			return []dag.Block{a, blk(t, cid.Raw, mh.BLAKE3, seeded(9, 40000)), a, blk(t, cid.Raw, mh.IDENTITY, []byte{1, 2, 3})}
		}},
		{"sections across read buffers", func(t *testing.T) []dag.Block {
			// ~3.2 MiB: the O_DIRECT reader's 1 MiB buffer refills
			// mid-section and mid-varint.
			var bs []dag.Block
			for i := range 12 {
				bs = append(bs, blk(t, cid.Raw, mh.SHA2_256, seeded(uint64(100+i), 262144+i*131)))
			}
			return bs
		}},
		{"empty raw block", func(t *testing.T) []dag.Block {
			return []dag.Block{blk(t, cid.Raw, mh.SHA2_256, []byte{})}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir)
			s.bufSize = 8192 // small buffers: every block crosses buffer boundaries
			blocks := tt.blocks(t)
			var want int64
			for _, b := range blocks {
				want += int64(varintLen(uint64(b.CID.ByteLen()+len(b.Data))) + b.CID.ByteLen() + len(b.Data))
			}
			info := putShard(t, s, "k1", blocks)
			if info.Key != "k1" || !info.Root.Equals(blocks[0].CID) || info.Blocks != len(blocks) {
				t.Errorf("info = %+v", info)
			}
			st, err := os.Stat(shardPath(dir, "k1"))
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != st.Size() || s.Used() != st.Size() {
				t.Errorf("info.Size %d, Used %d, file %d", info.Size, s.Used(), st.Size())
			}
			if got := s.Shards(); len(got) != 1 || got[0] != info {
				t.Errorf("Shards() = %+v, want [%+v]", got, info)
			}
			checkBlocks(t, s, blocks)
			checkShardReader(t, s, "k1", blocks)
			if err := s.Verify(context.Background(), "k1"); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if got := tmpEntries(t, dir); len(got) != 0 {
				t.Errorf("tmp holds %v after Commit", got)
			}

			// The same after a restart, from the index on disk.
			s.Close()
			s2 := openT(t, dir)
			if got := s2.Shards(); len(got) != 1 || got[0] != info {
				t.Errorf("after reopen Shards() = %+v, want [%+v]", got, info)
			}
			checkBlocks(t, s2, blocks)
			if q := s2.Quarantined(); len(q) != 0 {
				t.Errorf("Quarantined() = %v", q)
			}
		})
	}
}

func checkShardReader(t *testing.T, s *Store, key string, blocks []dag.Block) {
	t.Helper()
	r, err := s.OpenShard(key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !r.Root().Equals(blocks[0].CID) {
		t.Errorf("Root() = %s, want %s", r.Root(), blocks[0].CID)
	}
	for i, want := range blocks {
		b, err := r.Next()
		if err != nil {
			t.Fatalf("Next #%d: %v", i, err)
		}
		if !b.CID.Equals(want.CID) || string(b.Data) != string(want.Data) {
			t.Fatalf("Next #%d = %s (%d bytes), want %s (%d bytes)", i, b.CID, len(b.Data), want.CID, len(want.Data))
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("Next after the last block: %v, want io.EOF", err)
	}
}

func TestNotFound(t *testing.T) {
	s := openT(t, t.TempDir())
	c := blk(t, cid.Raw, mh.SHA2_256, []byte("absent")).CID
	if s.Has(c) {
		t.Error("Has of an absent block")
	}
	if _, err := s.Get(c); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get: %v, want ErrNotFound", err)
	}
	if _, err := s.OpenShard("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenShard: %v, want ErrNotFound", err)
	}
	if err := s.Verify(context.Background(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Verify: %v, want ErrNotFound", err)
	}
	if err := s.Delete("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete: %v, want ErrNotFound", err)
	}
}

func TestFlippedByte(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	blocks := []dag.Block{
		blk(t, cid.Raw, mh.SHA2_256, seeded(1, 5000)),
		blk(t, cid.Raw, mh.BLAKE3, seeded(2, 5000)),
		blk(t, cid.Raw, mh.SHA2_256, seeded(3, 5000)),
	}
	putShard(t, s, "flip", blocks)

	// Flip the last data byte of the second block.
	p := shardPath(dir, "flip")
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.OpenShard("flip")
	if err != nil {
		t.Fatal(err)
	}
	secOff := r.pos + int64(varintLen(uint64(blocks[0].CID.ByteLen()+5000))+blocks[0].CID.ByteLen()+5000)
	r.Close()
	at := secOff + int64(varintLen(uint64(blocks[1].CID.ByteLen()+5000))+blocks[1].CID.ByteLen()+4999)
	var b [1]byte
	if _, err := f.ReadAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	f.Close()

	_, err = s.Get(blocks[1].CID)
	ce := asCorrupt(t, err)
	if ce.Key != "flip" || !ce.CID.Equals(blocks[1].CID) || ce.Offset != secOff {
		t.Errorf("Get: %+v, want shard flip, CID %s, offset %d", ce, blocks[1].CID, secOff)
	}
	if !strings.Contains(err.Error(), "flip") || !strings.Contains(err.Error(), blocks[1].CID.String()) {
		t.Errorf("Get error %q does not name the shard and the CID", err)
	}
	checkBlocks(t, s, []dag.Block{blocks[0], blocks[2]})
	// GetUnhashed returns the flipped bytes, for a caller that hashes
	// them itself; the section still has to name the CID asked for.
	flipped := slices.Clone(blocks[1].Data)
	flipped[4999] ^= 0x01
	if got, err := s.GetUnhashed(blocks[1].CID); err != nil || !bytes.Equal(got, flipped) {
		t.Errorf("GetUnhashed of the flipped block: %d bytes, %v; want the bytes on disk", len(got), err)
	}
	if got, err := s.GetUnhashed(blocks[0].CID); err != nil || !bytes.Equal(got, blocks[0].Data) {
		t.Errorf("GetUnhashed of an intact block: %d bytes, %v", len(got), err)
	}

	err = s.Verify(context.Background(), "flip")
	ce = asCorrupt(t, err)
	if !ce.CID.Equals(blocks[1].CID) || ce.Offset != secOff {
		t.Errorf("Verify: %v, want CID %s at %d", err, blocks[1].CID, secOff)
	}

	// The reader stops at the damaged block.
	rd, err := s.OpenShard("flip")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.Next(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Next over the flipped block: %v, want ErrCorrupt", err)
	}

	// An unchecked reader returns the flipped block as it lies on disk,
	// under its CID, and goes on to the next block and the end.
	ur, err := s.OpenShardUnchecked("flip")
	if err != nil {
		t.Fatal(err)
	}
	defer ur.Close()
	want := slices.Clone(blocks[1].Data)
	want[4999] ^= 0x01
	for i, w := range []dag.Block{blocks[0], {CID: blocks[1].CID, Data: want}, blocks[2]} {
		b, err := ur.Next()
		if err != nil || !b.CID.Equals(w.CID) || !bytes.Equal(b.Data, w.Data) {
			t.Fatalf("unchecked Next %d: %s, %d bytes, equal %v: %v", i, b.CID, len(b.Data), bytes.Equal(b.Data, w.Data), err)
		}
	}
	if _, err := ur.Next(); err != io.EOF {
		t.Fatalf("unchecked Next after the last block: %v, want io.EOF", err)
	}
}

// TestUncheckedReaderStructure: a reader of OpenShardUnchecked still
// refuses damaged framing (a section length past the end of the data) and
// an unparsable CID with a *CorruptError at the section's offset.
func TestUncheckedReaderStructure(t *testing.T) {
	blocks := []dag.Block{
		blk(t, cid.Raw, mh.SHA2_256, seeded(1, 3000)),
		blk(t, cid.Raw, mh.SHA2_256, seeded(2, 3000)),
	}
	tests := []struct {
		name   string
		damage func(sec []byte) // the second block's section
		want   string
	}{
		{"length past the end", func(sec []byte) { sec[0], sec[1] = 0xff, 0x7f }, "section length 16383 invalid (3036 bytes left, limit 8388608)"},
		{"malformed CID", func(sec []byte) { sec[2] = 0x7f }, "CID: invalid cid: expected 1 as the cid version number, got: 127"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir)
			putShard(t, s, "k", blocks)
			r, err := s.OpenShard("k")
			if err != nil {
				t.Fatal(err)
			}
			secOff := r.pos + int64(varintLen(uint64(blocks[0].CID.ByteLen()+3000))+blocks[0].CID.ByteLen()+3000)
			r.Close()
			f, err := os.OpenFile(shardPath(dir, "k"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			sec := make([]byte, 8)
			if _, err := f.ReadAt(sec, secOff); err != nil {
				t.Fatal(err)
			}
			tt.damage(sec)
			if _, err := f.WriteAt(sec, secOff); err != nil {
				t.Fatal(err)
			}
			f.Close()

			ur, err := s.OpenShardUnchecked("k")
			if err != nil {
				t.Fatal(err)
			}
			defer ur.Close()
			if b, err := ur.Next(); err != nil || !b.CID.Equals(blocks[0].CID) {
				t.Fatalf("first block: %s: %v", b.CID, err)
			}
			_, err = ur.Next()
			ce := asCorrupt(t, err)
			if ce.Offset != secOff || ce.Reason != tt.want {
				t.Fatalf("second block: %v (offset %d), want %q at %d", err, ce.Offset, tt.want, secOff)
			}
		})
	}
}

func TestSecondOpenLocked(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	_, err := Open(dir)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the directory", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	s2, err := Open(dir)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
	// A closed store refuses work.
	if _, err := s.Create(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Create on a closed store: %v, want ErrClosed", err)
	}
}

func TestVersion(t *testing.T) {
	tests := []struct {
		content string
		wantErr string // "" means Open succeeds
	}{
		{"shoal-store 1\n", ""},
		{"shoal-store 2\n", "newer"},
		{"shoal-store 99\n", "newer"},
		{"shoal-store 1", "not"},
		{"shoal-store 01\n", "not"},
		{"shoal-store 0\n", "not"},
		{"shoal-store -1\n", "not"},
		{"garbage", "not"},
		{"", "not"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.content), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, versionFile), []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				s.Close()
				return
			}
			if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("Open: %v, want ErrVersion saying %q and naming %s", err, tt.wantErr, dir)
			}
			// The failed Open released the lock.
			os.WriteFile(filepath.Join(dir, versionFile), []byte(versionLine(FormatVersion)), 0o644)
			s, err = Open(dir)
			if err != nil {
				t.Fatalf("Open after fixing VERSION: %v", err)
			}
			s.Close()
		})
	}
}

func TestNewStoreLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	s := openT(t, dir)
	s.Close()
	b, err := os.ReadFile(filepath.Join(dir, versionFile))
	if err != nil || string(b) != "shoal-store 1\n" {
		t.Errorf("VERSION = %q, %v", b, err)
	}
	for _, d := range []string{shardsDir, tmpDir} {
		if st, err := os.Stat(filepath.Join(dir, d)); err != nil || !st.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}
	// Shards without VERSION: refuse rather than guess.
	os.Remove(filepath.Join(dir, versionFile))
	os.WriteFile(shardPath(dir, "x"), []byte("x"), 0o644)
	if _, err := Open(dir); !errors.Is(err, ErrVersion) {
		t.Errorf("Open without VERSION but with shards: %v, want ErrVersion", err)
	}
}

func TestQuarantine(t *testing.T) {
	blocks := func(t *testing.T) []dag.Block {
		return []dag.Block{blk(t, cid.Raw, mh.SHA2_256, seeded(1, 3000)), blk(t, cid.Raw, mh.SHA2_256, seeded(2, 3000))}
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, p string, size int64)
	}{
		{"truncated to 10 bytes", func(t *testing.T, p string, _ int64) { os.Truncate(p, 10) }},
		{"truncated in the header page", func(t *testing.T, p string, _ int64) { os.Truncate(p, 2000) }},
		{"truncated in the blocks", func(t *testing.T, p string, _ int64) { os.Truncate(p, headerPage+3000) }},
		{"index lost its last byte", func(t *testing.T, p string, size int64) { os.Truncate(p, size-1) }},
		{"empty file", func(t *testing.T, p string, _ int64) { os.Truncate(p, 0) }},
		{"garbage", func(t *testing.T, p string, _ int64) { os.WriteFile(p, seeded(9, 9000), 0o644) }},
		{"index offset garbled", func(t *testing.T, p string, size int64) {
			f, _ := os.OpenFile(p, os.O_RDWR, 0)
			f.WriteAt([]byte{0xff, 0xff}, v2HeaderEnd-8)
			f.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir)
			good := []dag.Block{blk(t, cid.Raw, mh.SHA2_256, []byte("good"))}
			putShard(t, s, "good", good)
			info := putShard(t, s, "bad", blocks(t))
			s.Close()
			tt.damage(t, shardPath(dir, "bad"), info.Size)

			s2 := openT(t, dir)
			q := s2.Quarantined()
			if len(q) != 1 || q[0].Key != "bad" || q[0].Path != filepath.Join(dir, corruptDir, "bad.car") || q[0].Err == nil {
				t.Fatalf("Quarantined() = %+v", q)
			}
			if _, err := os.Stat(q[0].Path); err != nil {
				t.Errorf("quarantined file: %v", err)
			}
			if _, err := os.Stat(shardPath(dir, "bad")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("damaged shard still in shards/: %v", err)
			}
			if got := s2.Shards(); len(got) != 1 || got[0].Key != "good" {
				t.Errorf("Shards() = %+v", got)
			}
			for _, b := range blocks(t) {
				if s2.Has(b.CID) {
					t.Errorf("block %s of the quarantined shard still indexed", b.CID)
				}
			}
			checkBlocks(t, s2, good)
		})
	}
}

func TestQuarantineNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	for i := range 2 {
		s := openT(t, dir)
		s.Close()
		os.WriteFile(shardPath(dir, "x"), []byte(fmt.Sprint("junk", i)), 0o644)
	}
	s := openT(t, dir)
	q := s.Quarantined()
	if len(q) != 1 || q[0].Path != filepath.Join(dir, corruptDir, "x.car.1") {
		t.Fatalf("Quarantined() = %+v", q)
	}
	for name, want := range map[string]string{"x.car": "junk0", "x.car.1": "junk1"} {
		if b, _ := os.ReadFile(filepath.Join(dir, corruptDir, name)); string(b) != want {
			t.Errorf("%s = %q, want %q", name, b, want)
		}
	}
}

func TestMissingIndexIsScanned(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	blocks := []dag.Block{
		blk(t, cid.Raw, mh.SHA2_256, seeded(1, 3000)),
		blk(t, cid.Raw, mh.IDENTITY, seeded(2, 1000)), // long CID: more than one header read
		blk(t, cid.Raw, mh.BLAKE3, seeded(3, 3000)),
	}
	info := putShard(t, s, "noidx", blocks)
	s.Close()

	// Drop the index: header IndexOffset = 0, file cut after the blocks.
	p := shardPath(dir, "noidx")
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := readLayout(f, info.Size)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 8), v2HeaderEnd-8)
	f.Truncate(l.blocksEnd())
	f.Close()

	s2 := openT(t, dir)
	if q := s2.Quarantined(); len(q) != 0 {
		t.Fatalf("Quarantined() = %+v", q)
	}
	got := s2.Shards()
	if len(got) != 1 || got[0].Blocks != 3 || got[0].Size != l.blocksEnd() {
		t.Errorf("Shards() = %+v", got)
	}
	// The scan reads the long CID whole; reading the block back checks
	// it against shoal's CID policy (dag.CheckCID), which refuses an
	// identity digest above 128 bytes, as Kubo does: the store keeps
	// what it was given, the reader never serves it.
	checkBlocks(t, s2, []dag.Block{blocks[0], blocks[2]})
	long := fmt.Sprintf("CID %s has a 1000-byte identity digest, which is too long (at most 128 bytes)", blocks[1].CID)
	if _, err := s2.Get(blocks[1].CID); err == nil || !strings.HasSuffix(err.Error(), long) {
		t.Errorf("Get of the long identity block: %v", err)
	}
	if err := s2.Verify(context.Background(), "noidx"); err == nil || !strings.HasSuffix(err.Error(), long) {
		t.Errorf("Verify: %v", err)
	}
}

func TestDelete(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	shared := blk(t, cid.Raw, mh.SHA2_256, []byte("shared"))
	onlyA := blk(t, cid.Raw, mh.SHA2_256, []byte("only in a"))
	onlyB := blk(t, cid.Raw, mh.SHA2_256, []byte("only in b"))
	a := putShard(t, s, "a", []dag.Block{onlyA, shared})
	b := putShard(t, s, "b", []dag.Block{shared, onlyB, shared})
	if s.Used() != a.Size+b.Size {
		t.Fatalf("Used() = %d, want %d", s.Used(), a.Size+b.Size)
	}
	locate := func(b dag.Block, want string) {
		t.Helper()
		if key, ok := s.Locate(b.CID); key != want || ok != (want != "") {
			t.Errorf("Locate(%s) = %q, %v; want %q", b.CID, key, ok, want)
		}
	}
	for _, b := range []dag.Block{shared, onlyA, onlyB} {
		if n, ok := s.Size(b.CID); !ok || n != len(b.Data) {
			t.Errorf("Size(%s) = %d, %v; want %d", b.CID, n, ok, len(b.Data))
		}
	}
	locate(onlyA, "a")
	locate(shared, "a")
	locate(onlyB, "b")
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	locate(onlyA, "")
	if n, ok := s.Size(onlyA.CID); ok || n != 0 {
		t.Errorf("Size of a deleted block: %d, %v", n, ok)
	}
	locate(shared, "b")
	if s.Has(onlyA.CID) {
		t.Error("block only in the deleted shard still found")
	}
	checkBlocks(t, s, []dag.Block{shared, onlyB})
	if s.Used() != b.Size {
		t.Errorf("Used() = %d, want %d", s.Used(), b.Size)
	}
	if got := s.Shards(); len(got) != 1 || got[0].Key != "b" {
		t.Errorf("Shards() = %+v", got)
	}
	if _, err := os.Stat(shardPath(dir, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleted shard file: %v", err)
	}
	if err := s.Delete("b"); err != nil {
		t.Fatal(err)
	}
	if s.Has(shared.CID) || len(s.index) != 0 || len(s.dups) != 0 || s.Used() != 0 {
		t.Errorf("after deleting all: index %d, dups %d, used %d", len(s.index), len(s.dups), s.Used())
	}
}

func TestCommitIdempotency(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir)
	blocks := []dag.Block{blk(t, cid.Raw, mh.SHA2_256, seeded(1, 4000)), blk(t, cid.Raw, mh.SHA2_256, seeded(2, 4000))}
	info := putShard(t, s, "k", blocks)

	t.Run("same content again", func(t *testing.T) {
		got := putShard(t, s, "k", blocks)
		if got != info {
			t.Errorf("re-commit = %+v, want %+v", got, info)
		}
		if n := len(tmpEntries(t, dir)); n != 0 {
			t.Errorf("%d temp files left", n)
		}
	})
	t.Run("different content", func(t *testing.T) {
		w, _ := s.Create(ctx)
		w.Put(blocks[1])
		w.Put(blocks[0])
		_, err := w.Commit(ctx, "k", blocks[0].CID)
		if !errors.Is(err, ErrExists) {
			t.Errorf("Commit: %v, want ErrExists", err)
		}
		if n := len(tmpEntries(t, dir)); n != 0 {
			t.Errorf("%d temp files left", n)
		}
		checkBlocks(t, s, blocks)
		checkShardReader(t, s, "k", blocks)
	})
	t.Run("different root", func(t *testing.T) {
		w, _ := s.Create(ctx)
		w.Put(blocks[0])
		w.Put(blocks[1])
		if _, err := w.Commit(ctx, "k", blocks[1].CID); !errors.Is(err, ErrExists) {
			t.Errorf("Commit: %v, want ErrExists", err)
		}
	})
	t.Run("writer lifecycle", func(t *testing.T) {
		w, _ := s.Create(ctx)
		w.Put(blocks[0])
		i1, err := w.Commit(ctx, "k2", blocks[0].CID)
		if err != nil {
			t.Fatal(err)
		}
		if i2, err := w.Commit(ctx, "k2", blocks[0].CID); err != nil || i2 != i1 {
			t.Errorf("second Commit = %+v, %v; want %+v", i2, err, i1)
		}
		if _, err := w.Commit(ctx, "k3", blocks[0].CID); err == nil {
			t.Error("Commit under another key after a Commit succeeded")
		}
		if err := w.Put(blocks[1]); err == nil {
			t.Error("Put after Commit succeeded")
		}
		if err := w.Abort(); err != nil {
			t.Errorf("Abort after Commit: %v", err)
		}
		checkBlocks(t, s, blocks[:1])
		if _, err := os.Stat(shardPath(dir, "k2")); err != nil {
			t.Errorf("Abort after Commit touched the shard: %v", err)
		}

		w, _ = s.Create(ctx)
		w.Put(blocks[1])
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
		if err := w.Abort(); err != nil {
			t.Errorf("second Abort: %v", err)
		}
		if _, err := w.Commit(ctx, "k4", blocks[1].CID); err == nil {
			t.Error("Commit after Abort succeeded")
		}
		if err := w.Put(blocks[1]); err == nil {
			t.Error("Put after Abort succeeded")
		}
		if n := len(tmpEntries(t, dir)); n != 0 {
			t.Errorf("%d temp files left", n)
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		for _, key := range []string{"", ".hidden", "a/b", "../x", "sp ace", strings.Repeat("x", 201)} {
			w, _ := s.Create(ctx)
			w.Put(blocks[0])
			if _, err := w.Commit(ctx, key, blocks[0].CID); err == nil {
				t.Errorf("Commit(%q) succeeded", key)
			}
		}
		w, _ := s.Create(ctx)
		if _, err := w.Commit(ctx, "undef", cid.Undef); err == nil {
			t.Error("Commit with an undefined root succeeded")
		}
		w, _ = s.Create(ctx)
		defer w.Abort()
		if err := w.Put(dag.Block{}); err == nil {
			t.Error("Put of an undefined CID succeeded")
		}
		big := make([]byte, maxSection)
		if err := w.Put(dag.Block{CID: blocks[0].CID, Data: big}); err == nil {
			t.Error("Put of an oversized block succeeded")
		}
		if n := len(tmpEntries(t, dir)); n != 1 {
			t.Errorf("%d temp files, want the open writer's only", n)
		}
	})
	if got := s.Shards(); len(got) != 2 {
		t.Errorf("Shards() = %+v", got)
	}
}

func TestCommitContextCancelled(t *testing.T) {
	for _, stage := range []string{"before", "written", "synced"} {
		t.Run(stage, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			w, err := s.Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			b := blk(t, cid.Raw, mh.SHA2_256, seeded(1, 100000))
			if err := w.Put(b); err != nil {
				t.Fatal(err)
			}
			if stage == "before" {
				cancel()
			}
			w.hook = func(s string) {
				if s == stage {
					cancel()
				}
			}
			_, err = w.Commit(ctx, "k", b.CID)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Commit: %v, want context.Canceled", err)
			}
			if s.Has(b.CID) || len(s.Shards()) != 0 || s.Used() != 0 {
				t.Error("a cancelled Commit stored something")
			}
			if got := tmpEntries(t, dir); len(got) != 0 {
				t.Errorf("tmp holds %v", got)
			}
			if err := w.Abort(); err != nil {
				t.Errorf("Abort after a failed Commit: %v", err)
			}
			s.Close()
			s2 := openT(t, dir)
			if len(s2.Shards()) != 0 {
				t.Error("shard present after reopen")
			}
		})
	}
	t.Run("Create", func(t *testing.T) {
		s := openT(t, t.TempDir())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := s.Create(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Create: %v, want context.Canceled", err)
		}
	})
}

func TestVerifyCancelled(t *testing.T) {
	s := openT(t, t.TempDir())
	putShard(t, s, "k", []dag.Block{blk(t, cid.Raw, mh.SHA2_256, []byte("x"))})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Verify(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify: %v, want context.Canceled", err)
	}
}

func TestCommitAfterClose(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	w, _ := s.Create(context.Background())
	b := blk(t, cid.Raw, mh.SHA2_256, []byte("x"))
	w.Put(b)
	s.Close()
	if _, err := w.Commit(context.Background(), "k", b.CID); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Get(b.CID); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
}

// TestConcurrent runs readers against writers and deletes, for -race.
func TestConcurrent(t *testing.T) {
	s := openT(t, t.TempDir())
	s.bufSize = 8192
	base := []dag.Block{blk(t, cid.Raw, mh.SHA2_256, seeded(100, 20000))}
	putShard(t, s, "base", base)
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			for i := range 5 {
				key := fmt.Sprintf("g%d-%d", g, i)
				bs := []dag.Block{blk(t, cid.Raw, mh.SHA2_256, seeded(uint64(g*100+i), 30000)), base[0]}
				if err := writeShard(s, key, bs); err != nil {
					t.Error(err)
					return
				}
				checkBlocks(t, s, bs)
				if i%2 == 0 {
					if err := s.Delete(key); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			checkBlocks(t, s, base)
			s.Shards()
			s.Used()
		}
	})
	wg.Wait()
	if got := len(s.Shards()); got != 1+3*2 {
		t.Errorf("%d shards, want 7", got)
	}
}

// writeShard is putShard for goroutines other than the test's.
func writeShard(s *Store, key string, blocks []dag.Block) error {
	ctx := context.Background()
	w, err := s.Create(ctx)
	if err != nil {
		return err
	}
	defer w.Abort()
	for _, b := range blocks {
		if err := w.Put(b); err != nil {
			return err
		}
	}
	_, err = w.Commit(ctx, key, blocks[0].CID)
	return err
}

// TestNextInto: NextInto reads a block into the caller's buffer when its
// section fits, saying how many bytes it took, and into new memory when it
// does not; the reader never writes to a buffer it was given again.
func TestNextInto(t *testing.T) {
	blocks := []dag.Block{
		blk(t, cid.Raw, mh.SHA2_256, seeded(1, 3000)),
		blk(t, cid.Raw, mh.SHA2_256, seeded(2, 5000)),
		blk(t, cid.Raw, mh.SHA2_256, seeded(3, 100)),
	}
	s := openT(t, t.TempDir())
	putShard(t, s, "k", blocks)
	r, err := s.OpenShardUnchecked("k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	arena := make([]byte, 4096)
	var got []dag.Block
	used := 0
	for i, want := range []int{3000 + blocks[0].CID.ByteLen(), 0, 100 + blocks[2].CID.ByteLen()} {
		b, n, err := r.NextInto(arena[used:used])
		if err != nil || n != want {
			t.Fatalf("block %d: took %d bytes of the buffer (%v), want %d", i, n, err, want)
		}
		if n > 0 && &b.Data[len(b.Data)-1] != &arena[used+n-1] {
			t.Fatalf("block %d: took %d bytes of the buffer but is not there", i, n)
		}
		if n == 0 {
			before := bytes.Clone(arena)
			b.Data[0] ^= 1
			if !bytes.Equal(before, arena) {
				t.Fatalf("block %d: in the buffer, but took 0 bytes of it", i)
			}
			b.Data[0] ^= 1
		}
		used += n
		got = append(got, b)
	}
	if _, _, err := r.NextInto(arena[used:used]); err != io.EOF {
		t.Fatalf("after the last block: %v, want io.EOF", err)
	}
	for i, b := range got { // all still intact
		if !b.CID.Equals(blocks[i].CID) || string(b.Data) != string(blocks[i].Data) {
			t.Fatalf("block %d changed after later reads", i)
		}
	}
}
