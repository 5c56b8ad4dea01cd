package ingest

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	chunk "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	h "github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	"github.com/ipfs/boxo/ipld/unixfs/importer/trickle"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
)

// recordingDAG is a DAGService that records what boxo's importer adds.
type recordingDAG struct {
	dagService
	blocks []dag.Block
}

func (r *recordingDAG) Add(_ context.Context, nd ipld.Node) error {
	r.blocks = append(r.blocks, dag.Block{CID: nd.Cid(), Data: append([]byte(nil), nd.RawData()...)})
	return nil
}

func (r *recordingDAG) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		if err := r.Add(ctx, nd); err != nil {
			return err
		}
	}
	return nil
}

// boxoImport runs boxo's importer, what `ipfs add` runs, over data.
func boxoImport(t *testing.T, p dag.Params, data []byte) []dag.Block {
	t.Helper()
	var spl chunk.Splitter
	r := bytes.NewReader(data)
	switch p.Chunker.Kind {
	case dag.ChunkSize:
		spl = chunk.NewSizeSplitter(r, int64(p.Chunker.Size))
	case dag.ChunkRabin:
		spl = chunk.NewRabinMinMax(r, uint64(p.Chunker.Min), uint64(p.Chunker.Avg), uint64(p.Chunker.Max))
	default:
		spl = chunk.NewBuzhash(r)
	}
	prefix := cid.Prefix{Version: uint64(p.CIDVersion), Codec: cid.DagProtobuf, MhType: p.HashCode, MhLength: -1}
	ds := &recordingDAG{}
	db, err := (&h.DagBuilderParams{Maxlinks: p.MaxLinks, RawLeaves: p.RawLeaves, CidBuilder: prefix, Dagserv: ds}).New(spl)
	if err != nil {
		t.Fatal(err)
	}
	if p.Layout == dag.Trickle {
		_, err = trickle.Layout(db)
	} else {
		_, err = balanced.Layout(db)
	}
	if err != nil {
		t.Fatal(err)
	}
	return ds.blocks
}

type recordingSink struct{ blocks []dag.Block }

func (r *recordingSink) Put(_ context.Context, b dag.Block) error {
	r.blocks = append(r.blocks, dag.Block{CID: b.CID, Data: append([]byte(nil), b.Data...)})
	return nil
}

// TestSameBlocksAsBoxo compares every block, byte for byte and in order,
// with boxo's importer across sizes around chunk and link-count boundaries,
// for both layouts, both leaf kinds and every hash. Small chunks and a small
// link count make deep trees cheap.
func TestSameBlocksAsBoxo(t *testing.T) {
	type opts struct {
		name string
		o    dag.Options
	}
	variants := []opts{
		{"v0", dag.Options{Chunker: "size-1024"}},
		{"v0-raw", dag.Options{Chunker: "size-1024", RawLeaves: true, RawLeavesSet: true}},
		{"v1", dag.Options{Chunker: "size-1000", CIDVersion: 1, CIDVersionSet: true}},
		{"v1-pb", dag.Options{Chunker: "size-1000", CIDVersion: 1, CIDVersionSet: true, RawLeavesSet: true}},
		{"trickle", dag.Options{Chunker: "size-1024", Trickle: true}},
		{"trickle-v1", dag.Options{Chunker: "size-512", Trickle: true, CIDVersion: 1, CIDVersionSet: true}},
		{"blake3", dag.Options{Chunker: "size-1024", Hash: "blake3"}},
		{"sha512-trickle", dag.Options{Chunker: "size-1024", Hash: "sha2-512", Trickle: true}},
		{"rabin", dag.Options{Chunker: "rabin-256-1024-4096"}},
		{"buzhash", dag.Options{Chunker: "buzhash"}},
	}
	sizes := []int{0, 1, 1023, 1024, 1025, 5 * 1024, 10*1024 + 1, 100*1024 + 3, 400 * 1024}
	for _, v := range variants {
		for _, maxLinks := range []int{3, 174} {
			for _, n := range sizes {
				if v.name == "buzhash" && n > 10*1024+1 && maxLinks == 3 {
					n *= 8 // buzhash chunks are 128-512 KiB; go deep
				}
				t.Run(fmt.Sprintf("%s/links=%d/%d", v.name, maxLinks, n), func(t *testing.T) {
					p, err := v.o.Params()
					if err != nil {
						t.Fatal(err)
					}
					p.MaxLinks = maxLinks
					data := goldenBytes(fmt.Sprintf("boxo-%d", n), n)
					want := boxoImport(t, p, data)
					in, err := New(Config{Params: p, Workers: 3, Buffers: 5})
					if err != nil {
						t.Fatal(err)
					}
					var got recordingSink
					root, err := in.File(context.Background(), bytes.NewReader(data), &got)
					if err != nil {
						t.Fatal(err)
					}
					if len(got.blocks) != len(want) {
						t.Fatalf("%d blocks, boxo added %d", len(got.blocks), len(want))
					}
					for i := range want {
						if !got.blocks[i].CID.Equals(want[i].CID) || !bytes.Equal(got.blocks[i].Data, want[i].Data) {
							t.Fatalf("block %d: %s, boxo %s", i, got.blocks[i].CID, want[i].CID)
						}
					}
					if last := want[len(want)-1].CID; !root.CID.Equals(last) {
						t.Errorf("root %s, boxo %s", root.CID, last)
					}
					if root.FileSize != uint64(n) {
						t.Errorf("root covers %d bytes, want %d", root.FileSize, n)
					}
				})
			}
		}
	}
}

// TestBlocksVerify: every emitted block hashes to its CID.
func TestBlocksVerify(t *testing.T) {
	for _, hash := range []string{"sha2-256", "sha2-512", "blake3"} {
		p, err := dag.Options{Chunker: "size-4096", Hash: hash}.Params()
		if err != nil {
			t.Fatal(err)
		}
		in, err := New(Config{Params: p})
		if err != nil {
			t.Fatal(err)
		}
		var got recordingSink
		if _, err := in.File(context.Background(), bytes.NewReader(goldenBytes("verify", 100000)), &got); err != nil {
			t.Fatal(err)
		}
		for _, b := range got.blocks {
			c, err := b.CID.Prefix().Sum(b.Data)
			if err != nil {
				t.Fatal(err)
			}
			if !c.Equals(b.CID) {
				t.Fatalf("%s: block %s hashes to %s", hash, b.CID, c)
			}
			if d, _ := mh.Decode(b.CID.Hash()); hash == "blake3" && d.Code != mh.BLAKE3 {
				t.Fatalf("%s: block hashed with 0x%x", hash, d.Code)
			}
		}
	}
}
