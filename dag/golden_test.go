package dag_test

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"strconv"
	"testing"

	bsrv "github.com/ipfs/boxo/blockservice"
	blockstore "github.com/ipfs/boxo/blockstore"
	chunk "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/merkledag"
	h "github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	"github.com/ipfs/boxo/ipld/unixfs/importer/trickle"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/shoal-project/shoal/dag"
)

// fixedLeaves is a LeafSource over data cut into size-byte chunks (the
// size-N chunker), encoding each leaf with enc.
type fixedLeaves struct {
	enc  dag.Encoder
	data []byte
	size int
	buf  []byte
	// leaves counts the leaves returned.
	leaves int
}

func (f *fixedLeaves) More() (bool, error) { return len(f.data) > 0, nil }

func (f *fixedLeaves) Next() (dag.Link, error) {
	n := min(f.size, len(f.data))
	if cap(f.buf) < dag.LeafHeadroom+n+dag.LeafTailroom {
		f.buf = make([]byte, dag.LeafHeadroom+n+dag.LeafTailroom)
	}
	buf := f.buf[:dag.LeafHeadroom+n+dag.LeafTailroom]
	copy(buf[dag.LeafHeadroom:], f.data[:n])
	f.data = f.data[n:]
	f.leaves++
	_, l, err := f.enc.Leaf(buf, n)
	return l, err
}

// goldenRand is the golden input rand-N: N bytes of ChaCha8 keyed by the
// SHA-256 of "shoal-golden-N" (../shared/golden/README.md).
func goldenRand(n int) []byte {
	r := rand.NewChaCha8(sha256.Sum256([]byte("shoal-golden-" + strconv.Itoa(n))))
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

// TestBuildFileKuboVectors: dag's layouts alone (no ingest pipeline, no
// boxo) give the roots Kubo v0.43.1 printed for `ipfs add -n` of the
// golden inputs (ingest/testdata/kubo-v0.43.1.tsv), where the tree has
// more than one level: 181 leaves of 256 KiB fill one balanced node of
// 174 links and start a second, so every parent's Tsize counts; 721
// leaves of 64 KiB give a trickle tree several levels deep. Each internal
// node's Tsize and each trickle depth is inside the root's hash.
func TestBuildFileKuboVectors(t *testing.T) {
	big := goldenRand(47185927)
	for _, tc := range []struct {
		name   string
		opts   dag.Options
		data   []byte
		leaves int
		root   string
	}{
		{"balanced, two levels", dag.Options{}, big, 181, "QmaVh6PWLTG5Bm23vjgKksCTUcEEcwUNUC4VoEM5P1GH37"},
		{"balanced, raw leaves, two levels", dag.Options{RawLeaves: true, RawLeavesSet: true}, big, 181, "QmQJDQvQnfvZrQxGUZuKJr1CmX1Sk5evK42mx8LAbWENh2"},
		{"balanced, one level of 46 links", dag.Options{Chunker: "size-1048576"}, big, 46, "QmPL7AEDaYDGhwP2ZECnUpdFg1NjZMoKghvWw7QiPhYX5A"},
		{"trickle, 256 KiB leaves", dag.Options{Trickle: true}, big, 181, "QmQatY18PR1dDsWmXC5ULsDodwXobdD66a12QBUxfAS6eU"},
		{"trickle, CIDv1, 64 KiB leaves", dag.Options{Trickle: true, CIDVersion: 1, CIDVersionSet: true, Chunker: "size-65536"},
			big, 721, "bafybeihm734drxjiacjgr4v7yrslh53kslf7l4lzbmiesulgkegtto4zp4"},
		{"trickle, 5 leaves", dag.Options{Trickle: true}, goldenRand(1048577), 5, "QmaXe7xMxtWAtWtUusxzfCKuMmsqKLzAjSBnfBmSjL5hKj"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.opts.Params()
			if err != nil {
				t.Fatal(err)
			}
			enc := dag.NewEncoder(p)
			src := &fixedLeaves{enc: enc, data: tc.data, size: p.Chunker.Size}
			root, err := dag.BuildFile(enc, src, func(dag.Block) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			if src.leaves != tc.leaves || root.CID.String() != tc.root {
				t.Fatalf("root %s from %d leaves, want %s from %d (Kubo v0.43.1)", root.CID, src.leaves, tc.root, tc.leaves)
			}
			if root.FileSize != uint64(len(tc.data)) {
				t.Fatalf("root file size %d, want %d", root.FileSize, len(tc.data))
			}
		})
	}
}

// TestBuildFileDeepTrickle: no Kubo golden is deep enough to hold trickle
// subtrees of depth 2 (over 870 leaves), so the reference is boxo's
// trickle importer itself, what `ipfs add --trickle` runs: 1,025 leaves of
// 1 KiB, whose root holds subtrees of depths 1 and 2. A trickle depth or
// repeat count off by one changes the root.
func TestBuildFileDeepTrickle(t *testing.T) {
	data := goldenRand(1048577)
	p, err := dag.Options{Trickle: true, Chunker: "size-1024"}.Params()
	if err != nil {
		t.Fatal(err)
	}
	enc := dag.NewEncoder(p)
	src := &fixedLeaves{enc: enc, data: data, size: p.Chunker.Size}
	root, err := dag.BuildFile(enc, src, func(dag.Block) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	db, err := (&h.DagBuilderParams{Maxlinks: p.MaxLinks, CidBuilder: cid.Prefix{Version: 0, Codec: cid.DagProtobuf, MhType: p.HashCode, MhLength: -1},
		Dagserv: merkledag.NewDAGService(bsrv.New(bs, nil))}).New(chunk.NewSizeSplitter(bytes.NewReader(data), 1024))
	if err != nil {
		t.Fatal(err)
	}
	want, err := trickle.Layout(db)
	if err != nil {
		t.Fatal(err)
	}
	if src.leaves != 1025 || root.CID != want.Cid() {
		t.Fatalf("root %s from %d leaves; boxo's trickle importer gives %s", root.CID, src.leaves, want.Cid())
	}
}
