package store

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
)

// FuzzOpenShard feeds hostile shard files to every reader of shard files:
// header parsing, index loading, section scanning, Get's section check and
// ShardReader, checked and unchecked. They must return errors, never panic or allocate beyond the
// file's size.
func FuzzOpenShard(f *testing.F) {
	dir := f.TempDir()
	s, err := Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	blocks := []dag.Block{
		blkV0(f, []byte("root")),
		blk(f, cid.Raw, mh.SHA2_256, seeded(1, 300)),
		blk(f, cid.Raw, mh.BLAKE3, seeded(2, 100)),
		blk(f, cid.Raw, mh.IDENTITY, []byte("id")),
	}
	putShard(f, s, "seed", blocks)
	valid, err := os.ReadFile(shardPath(dir, "seed"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add(valid[:headerPage+10])
	f.Add(valid[:v2HeaderEnd])
	flipped := bytes.Clone(valid)
	flipped[len(flipped)-20] ^= 0x40 // in the index
	f.Add(flipped)
	noIndex := bytes.Clone(valid)
	clear(noIndex[v2HeaderEnd-8 : v2HeaderEnd])
	f.Add(noIndex)
	f.Add([]byte{})
	f.Add(seeded(3, 5000))

	f.Fuzz(func(t *testing.T, data []byte) {
		ra := bytes.NewReader(data)
		size := int64(len(data))
		if l, err := readLayout(ra, size); err == nil {
			recs, err := readIndex(ra, l)
			if errors.Is(err, errNoUsableIndex) {
				recs, err = scanSections(ra, l)
			}
			if err == nil {
				for _, r := range recs {
					if r.n > size {
						t.Fatalf("section length %d beyond a %d-byte file", r.n, size)
					}
					h, err := mh.Cast([]byte(r.mh))
					if err != nil {
						continue
					}
					readSection(ra, "fuzz", r.off, r.n, cid.NewCidV1(cid.Raw, h), true)
				}
			}
		}
		for _, unchecked := range []bool{false, true} {
			sr, err := newShardReader(ra, size, "fuzz")
			if err != nil {
				return
			}
			sr.unchecked = unchecked
			for {
				if _, err := sr.Next(); err != nil {
					break
				}
			}
		}
	})
}
