package shard

import (
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
)

// blockStream is n blocks of 64 B to 8 KiB, half raw CIDv1 and half
// dag-pb CIDv0 (their CIDs differ in length), from a fixed seed.
func blockStream(t *testing.T, n int) []dag.Block {
	t.Helper()
	r := rand.New(rand.NewChaCha8(sha256.Sum256([]byte("tight limits"))))
	out := make([]dag.Block, n)
	for i := range out {
		data := make([]byte, 64+r.IntN(8192-64))
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		h, err := mh.Sum(data, mh.SHA2_256, -1)
		if err != nil {
			t.Fatal(err)
		}
		c := cid.NewCidV1(cid.Raw, h)
		if i%2 == 1 {
			c = cid.NewCidV0(h)
		}
		out[i] = dag.Block{CID: c, Data: data, FileBytes: uint64(len(data))}
	}
	return out
}

// TestCutterNeverOverfills: over every shard limit from 40 kB to 400 kB in
// 997-byte steps, and list nodes of 3 links (deep trees) or MaxLinks, no
// shard takes more than its limit once its list nodes are counted (as a
// store counts it: CAR sections), and none closes while the next block
// would still have fitted with room to spare (the list estimate's slack).
// A cutter that left the links out of a block's cost overfilled shards
// here; one that closed at half the limit underfilled them.
func TestCutterNeverOverfills(t *testing.T) {
	blocks := blockStream(t, 1500)
	ctx := context.Background()
	for _, width := range []int{3, MaxLinks} {
		step := int64(997)
		if width == 3 {
			step = 9973 // deep trees cost more to build: fewer limits
		}
		for limit := int64(40000); limit <= 400000; limit += step {
			o := &memOpener{limits: func(int) int64 { return limit }}
			cut := NewCutter(o, width)
			for _, b := range blocks {
				if err := cut.Put(ctx, b); err != nil {
					t.Fatalf("width %d, limit %d: %v", width, limit, err)
				}
			}
			infos, err := cut.Close(ctx)
			if err != nil {
				t.Fatalf("width %d, limit %d: close: %v", width, limit, err)
			}
			next := 0 // index in blocks of the shard's first block
			for i, info := range infos {
				var size int64
				for _, b := range o.shards[i] {
					size += sectionCost(b.CID, len(b.Data))
				}
				for _, n := range o.nodes[i] {
					size += sectionCost(n.CID, len(n.Data))
				}
				if size > limit || size != info.Size {
					t.Fatalf("width %d, limit %d: shard %d takes %d (info says %d)", width, limit, i, size, info.Size)
				}
				next += len(o.shards[i])
				if i == len(infos)-1 {
					break
				}
				nb := blocks[next]
				cost := sectionCost(nb.CID, len(nb.Data)) + linkCost(nb.CID, width)
				slack := listOverhead + int64(len(o.shards[i]))*int64(320/width+1) + 1024
				if size+cost+slack < limit {
					t.Fatalf("width %d, limit %d: shard %d closed at %d bytes; the next block (%d) fitted", width, limit, i, size, cost)
				}
			}
			if next != len(blocks) {
				t.Fatalf("width %d, limit %d: shards hold %d of %d blocks", width, limit, next, len(blocks))
			}
		}
	}
}
