package shard

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ingest"
)

func testCID(i int) cid.Cid {
	h, _ := mh.Sum([]byte(fmt.Sprint(i)), mh.SHA2_256, -1)
	if i%2 == 0 {
		return cid.NewCidV0(h)
	}
	return cid.NewCidV1(cid.Raw, h)
}

func testCIDs(n int) []cid.Cid {
	out := make([]cid.Cid, n)
	for i := range out {
		out[i] = testCID(i)
	}
	return out
}

// TestNodeIsCanonicalDagCBOR: our encoder writes exactly what go-ipld-prime's
// dag-cbor encoder writes for the same data model, an independent check of
// the format.
func TestNodeIsCanonicalDagCBOR(t *testing.T) {
	for _, n := range []Node{
		{Depth: 0, Kind: KindShard, Links: testCIDs(3)},
		{Depth: 2, Kind: KindCluster, Links: nil},
		{Depth: 0, Kind: KindShard, Links: testCIDs(300)},
	} {
		blk, err := n.Encode()
		if err != nil {
			t.Fatal(err)
		}
		ref, err := qp.BuildMap(basicnode.Prototype.Any, 4, func(ma datamodel.MapAssembler) {
			qp.MapEntry(ma, "v", qp.Int(FormatVersion))
			qp.MapEntry(ma, "k", qp.String(n.Kind))
			qp.MapEntry(ma, "d", qp.Int(int64(n.Depth)))
			qp.MapEntry(ma, "l", qp.List(int64(len(n.Links)), func(la datamodel.ListAssembler) {
				for _, c := range n.Links {
					qp.ListEntry(la, qp.Link(cidlink.Link{Cid: c}))
				}
			}))
		})
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if err := dagcbor.Encode(ref, &want); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(blk.Data, want.Bytes()) {
			t.Fatalf("%d links: our bytes differ from go-ipld-prime's dag-cbor:\n%x\n%x", len(n.Links), blk.Data, want.Bytes())
		}
		back, err := DecodeNode(blk.CID, blk.Data)
		if err != nil {
			t.Fatal(err)
		}
		if back.Depth != n.Depth || back.Kind != n.Kind || len(back.Links) != len(n.Links) {
			t.Fatalf("round trip: %+v", back)
		}
	}
}

// TestGoldenNodes pins the CIDs of list nodes so the format cannot drift.
func TestGoldenNodes(t *testing.T) {
	want, err := os.ReadFile("testdata/golden-nodes.txt")
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for _, n := range []Node{
		{Kind: KindShard, Links: testCIDs(3)},
		{Kind: KindCluster, Links: testCIDs(2)},
		{Kind: KindShard, Depth: 1},
	} {
		blk, err := n.Encode()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&got, "%s %d %s %x\n", n.Kind, n.Depth, blk.CID, blk.Data)
	}
	if got.String() != string(want) {
		t.Fatalf("golden nodes changed:\n%s\nwant\n%s", got.String(), want)
	}
}

func TestDecodeNodeRejects(t *testing.T) {
	good, _ := Node{Kind: KindShard, Links: testCIDs(2)}.Encode()
	sum := func(b []byte) cid.Cid {
		h, _ := mh.Sum(b, mh.SHA2_256, -1)
		return cid.NewCidV1(cid.DagCBOR, h)
	}
	v2 := bytes.Clone(good.Data)
	v2[len(v2)-1] = 0x02 // "v": 2
	reordered := append([]byte{0xa4, 0x61, 'v', 0x01}, good.Data[1:len(good.Data)-3]...)
	tests := []struct {
		name string
		c    cid.Cid
		data []byte
		want string
	}{
		{"wrong hash", good.CID, append(bytes.Clone(good.Data[:len(good.Data)-1]), 0x00), "is corrupt"},
		{"future version", sum(v2), v2, "list node format version 2 is not supported"},
		{"not canonical", sum(reordered), reordered, "not in canonical form"},
		{"not cbor", sum([]byte{0xff, 0x00}), []byte{0xff, 0x00}, "malformed list node"},
		{"not a map", sum([]byte{0x01}), []byte{0x01}, "not a map of 4 entries"},
		{"dag-pb codec", cid.NewCidV0(good.CID.Hash()), good.Data, "is not dag-cbor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeNode(tt.c, tt.data)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to say %q", err, tt.want)
			}
		})
	}
}

// TestDecodeNodeRefusesWeakCIDs: a holder's list node that names a block
// by a weak hash or a cut digest is refused where it is decoded, and so is
// a list node named that way itself, for ReadList like for DecodeNode.
func TestDecodeNodeRefusesWeakCIDs(t *testing.T) {
	weak := func(code uint64, n int) cid.Cid {
		h, err := mh.Encode(bytes.Repeat([]byte{0x5a}, n), code)
		if err != nil {
			t.Fatal(err)
		}
		return cid.NewCidV1(cid.Raw, h)
	}
	tests := []struct {
		name string
		c    cid.Cid
		msg  string // after "CID <c> "
	}{
		{"md5", weak(mh.MD5, 16), "uses hash md5, which shoal does not accept (insecure)"},
		{"sha1", weak(mh.SHA1, 20), "uses hash sha1, which shoal does not accept (insecure)"},
		{"murmur3", weak(mh.MURMUR3X64_64, 8), "uses hash murmur3-x64-64, which shoal does not accept (insecure)"},
		{"1-byte sha2-256", weak(mh.SHA2_256, 1), "has a 1-byte sha2-256 digest, which is too short (at least 20 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blk, err := Node{Kind: KindShard, Links: []cid.Cid{testCID(0), tt.c, testCID(1)}}.Encode()
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("%s: link 1: CID %s %s: malformed list node", blk.CID, tt.c, tt.msg)
			_, err = DecodeNode(blk.CID, blk.Data)
			if !errors.Is(err, ErrMalformed) || err.Error() != want {
				t.Fatalf("DecodeNode: %v, want %q", err, want)
			}
			get := func(cid.Cid) ([]byte, error) { return blk.Data, nil }
			if _, err := ReadList(blk.CID, KindShard, get); err == nil || err.Error() != want {
				t.Fatalf("ReadList: %v, want %q", err, want)
			}
		})
	}
	// The node's own CID cut to one byte: one forged node in 256 would
	// match it.
	good, _ := Node{Kind: KindShard, Links: testCIDs(2)}.Encode()
	h, _ := mh.Sum(good.Data, mh.SHA2_256, 1)
	short := cid.NewCidV1(cid.DagCBOR, h)
	want := "CID " + short.String() + " has a 1-byte sha2-256 digest, which is too short (at least 20 bytes): malformed list node"
	if _, err := DecodeNode(short, good.Data); !errors.Is(err, ErrMalformed) || err.Error() != want {
		t.Fatalf("DecodeNode of a node named by a 1-byte digest: %v, want %q", err, want)
	}
}

func FuzzDecodeNode(f *testing.F) {
	good, _ := Node{Kind: KindShard, Links: testCIDs(2)}.Encode()
	f.Add(good.Data)
	f.Add([]byte{0xa4})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, _ := mh.Sum(data, mh.SHA2_256, -1)
		c := cid.NewCidV1(cid.DagCBOR, h)
		n, err := DecodeNode(c, data)
		if err != nil {
			return
		}
		blk, err := n.Encode()
		if err != nil || !bytes.Equal(blk.Data, data) {
			t.Fatalf("accepted bytes that do not re-encode identically")
		}
	})
}

func TestListTrees(t *testing.T) {
	for _, width := range []int{2, 3, 5, MaxLinks} {
		for _, n := range []int{0, 1, 2, 3, 4, 9, 26, 27, 28, 100} {
			items := testCIDs(n)
			root, blocks, err := BuildList(KindCluster, items, width)
			if err != nil {
				t.Fatal(err)
			}
			store := map[cid.Cid][]byte{}
			for _, b := range blocks {
				store[b.CID] = b.Data
			}
			if blocks[len(blocks)-1].CID != root {
				t.Fatalf("root is not the last block")
			}
			got, err := ReadList(root, KindCluster, func(c cid.Cid) ([]byte, error) {
				if d, ok := store[c]; ok {
					return d, nil
				}
				return nil, errors.New("missing")
			})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(items) && !(n == 0 && len(got) == 0) {
				t.Fatalf("width %d, %d items: read back %d", width, n, len(got))
			}
			if _, err := ReadList(root, KindShard, func(c cid.Cid) ([]byte, error) { return store[c], nil }); err == nil {
				t.Fatal("a cluster list read as a shard list")
			}
		}
	}
}

// memOpener records shards in memory; limits gives each shard's limit.
type memOpener struct {
	limits  func(i int) int64
	shards  [][]dag.Block
	nodes   [][]dag.Block
	infos   []Info
	aborted int
}

type memWriter struct {
	o      *memOpener
	blocks []dag.Block
}

func (o *memOpener) Open(_ context.Context, i int) (Writer, int64, error) {
	return &memWriter{o: o}, o.limits(i), nil
}

func (w *memWriter) Put(_ context.Context, b dag.Block) error {
	w.blocks = append(w.blocks, dag.Block{CID: b.CID, Data: bytes.Clone(b.Data), FileBytes: b.FileBytes})
	return nil
}

func (w *memWriter) Commit(_ context.Context, info Info, nodes []dag.Block) error {
	w.o.shards = append(w.o.shards, w.blocks)
	w.o.nodes = append(w.o.nodes, nodes)
	w.o.infos = append(w.o.infos, info)
	return nil
}

func (w *memWriter) Abort() { w.o.aborted++ }

type recordSink struct{ blocks []dag.Block }

func (r *recordSink) Put(_ context.Context, b dag.Block) error {
	r.blocks = append(r.blocks, dag.Block{CID: b.CID, Data: bytes.Clone(b.Data)})
	return nil
}

// TestCutter: shards partition the pipeline's block stream in order, each
// within its limit (counted exactly as CAR sections), with contiguous byte
// ranges and list nodes that list exactly the shard's blocks.
func TestCutter(t *testing.T) {
	r := rand.NewChaCha8(sha256.Sum256([]byte("cutter")))
	data := make([]byte, 3<<20+12345)
	r.Read(data)
	p, err := dag.Options{Chunker: "size-16384"}.Params()
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ingest.Config{Params: p})
	if err != nil {
		t.Fatal(err)
	}
	var all recordSink
	want, err := in.File(context.Background(), bytes.NewReader(data), &all)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		width   int
		overlap bool
	}{{3, false}, {MaxLinks, false}, {MaxLinks, true}} {
		width := tc.width
		limits := func(i int) int64 { return int64(200000 + (i%3)*150000) } // varying room
		o := &memOpener{limits: limits}
		cut := NewCutter(o, width)
		if tc.overlap {
			cut.Overlap(context.Background())
		}
		root, err := in.File(context.Background(), bytes.NewReader(data), cut)
		if err != nil {
			t.Fatal(err)
		}
		infos, err := cut.Close(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if root.CID != want.CID {
			t.Fatalf("root %s, want %s", root.CID, want.CID)
		}
		var stream []dag.Block
		var offset uint64
		for i, info := range infos {
			if info.Index != i || info.Offset != offset {
				t.Fatalf("shard %d: index %d offset %d, want %d", i, info.Index, info.Offset, offset)
			}
			offset += info.Length
			var size int64
			for _, b := range o.shards[i] {
				size += sectionCost(b.CID, len(b.Data))
			}
			for _, n := range o.nodes[i] {
				size += sectionCost(n.CID, len(n.Data))
			}
			if size != info.Size || size > limits(i) {
				t.Fatalf("shard %d: size %d, info %d, limit %d", i, size, info.Size, limits(i))
			}
			if info.Blocks != len(o.shards[i]) {
				t.Fatalf("shard %d: %d blocks, info says %d", i, len(o.shards[i]), info.Blocks)
			}
			nodes := map[cid.Cid][]byte{}
			for _, n := range o.nodes[i] {
				nodes[n.CID] = n.Data
			}
			listed, err := ReadList(info.CID, KindShard, func(c cid.Cid) ([]byte, error) { return nodes[c], nil })
			if err != nil {
				t.Fatal(err)
			}
			for j, b := range o.shards[i] {
				if listed[j] != b.CID {
					t.Fatalf("shard %d lists %s at %d, holds %s", i, listed[j], j, b.CID)
				}
			}
			stream = append(stream, o.shards[i]...)
		}
		if offset != uint64(len(data)) {
			t.Fatalf("ranges cover %d bytes, file has %d", offset, len(data))
		}
		if len(stream) != len(all.blocks) {
			t.Fatalf("%d blocks in shards, %d in the stream", len(stream), len(all.blocks))
		}
		for i := range stream {
			if stream[i].CID != all.blocks[i].CID || !bytes.Equal(stream[i].Data, all.blocks[i].Data) {
				t.Fatalf("block %d differs", i)
			}
		}
		if width == MaxLinks && len(infos) < 8 {
			t.Fatalf("only %d shards for 3 MiB at <=500 kB each", len(infos))
		}
	}
}

// gatedOpener's writers hold the commit of shard i until shard i+1 gets
// its first block, which only an overlapping cutter gives it; failAt's
// commit fails.
type gatedOpener struct {
	memOpener
	failAt  int
	mu      sync.Mutex      // guards started
	started []chan struct{} // closed by shard i's first Put
}

type gatedWriter struct {
	memWriter
	g     *gatedOpener
	i     int
	begun bool
}

func (o *gatedOpener) Open(_ context.Context, i int) (Writer, int64, error) {
	o.mu.Lock()
	o.started = append(o.started, make(chan struct{}))
	o.mu.Unlock()
	return &gatedWriter{memWriter: memWriter{o: &o.memOpener}, g: o, i: i}, o.limits(i), nil
}

func (w *gatedWriter) Put(ctx context.Context, b dag.Block) error {
	if !w.begun {
		w.begun = true
		close(w.g.startedChan(w.i))
	}
	return w.memWriter.Put(ctx, b)
}

func (w *gatedWriter) Commit(ctx context.Context, info Info, nodes []dag.Block) error {
	if w.i == w.g.failAt {
		return errors.New("receivers refused")
	}
	if w.i+1 < w.g.failAt {
		// The next shard must be filling meanwhile.
		if !w.g.begun(w.i+1, 10*time.Second) {
			return errors.New("the next shard did not start while this one committed")
		}
	}
	return w.memWriter.Commit(ctx, info, nodes)
}

// startedChan waits for shard i to be opened, then returns its channel.
func (o *gatedOpener) startedChan(i int) chan struct{} {
	for {
		if ch := o.opened(i); ch != nil {
			return ch
		}
		time.Sleep(time.Millisecond)
	}
}

// opened returns shard i's channel, nil before it is opened.
func (o *gatedOpener) opened(i int) chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if i < len(o.started) {
		return o.started[i]
	}
	return nil
}

// begun says whether shard i got its first block within d.
func (o *gatedOpener) begun(i int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ch := o.opened(i); ch != nil {
			select {
			case <-ch:
				return true
			case <-time.After(time.Until(deadline)):
				return false
			}
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// TestCutterOverlap: with Overlap, shard i commits while shard i+1 fills;
// a failed commit fails the stream, aborts its writer, and nothing is left
// running once Abort returns.
func TestCutterOverlap(t *testing.T) {
	data := make([]byte, 2<<20)
	rand.NewChaCha8(sha256.Sum256([]byte("overlap"))).Read(data)
	p, err := dag.Options{Chunker: "size-16384"}.Params()
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ingest.Config{Params: p})
	if err != nil {
		t.Fatal(err)
	}
	o := &gatedOpener{memOpener: memOpener{limits: func(int) int64 { return 300000 }}, failAt: 3}
	cut := NewCutter(o, MaxLinks)
	cut.Overlap(context.Background())
	_, err = in.File(context.Background(), bytes.NewReader(data), cut)
	if err == nil {
		_, err = cut.Close(context.Background())
	}
	cut.Abort()
	if err == nil || err.Error() != "commit shard 3: receivers refused" {
		t.Fatalf("error %v, want the failed commit of shard 3", err)
	}
	if len(o.infos) != 3 || o.aborted < 1 {
		t.Fatalf("%d shards committed, %d writers aborted; want 3 and at least 1", len(o.infos), o.aborted)
	}
}

func TestCutterBlockTooBig(t *testing.T) {
	o := &memOpener{limits: func(int) int64 { return 1000 }}
	cut := NewCutter(o, MaxLinks)
	blk := dag.Block{CID: testCID(1), Data: make([]byte, 2000)}
	err := cut.Put(context.Background(), blk)
	if !errors.Is(err, ErrBlockTooBig) || !strings.Contains(err.Error(), "shard 0 may take at most 1000") {
		t.Fatalf("error %v", err)
	}
}

// limitedWriter is a memWriter whose shard ends after a block count.
type limitedWriter struct {
	memWriter
	max int
}

func (w *limitedWriter) MaxBlocks() int { return w.max }

// replayOpener replays the first shards of an earlier cut by block count
// (as a resumed add does) and cuts the rest by size.
type replayOpener struct {
	memOpener
	counts []int
}

func (o *replayOpener) Open(_ context.Context, i int) (Writer, int64, error) {
	if i < len(o.counts) {
		return &limitedWriter{memWriter{o: &o.memOpener}, o.counts[i]}, 1 << 40, nil
	}
	return &memWriter{o: &o.memOpener}, o.limits(i), nil
}

// TestCutterReplaysByBlockCount: given the block counts of an earlier
// cut's first shards and no size limit for them, the cutter ends them
// where the earlier cut did: the same shard CIDs, and the same after.
func TestCutterReplaysByBlockCount(t *testing.T) {
	data := make([]byte, 2<<20+999)
	rand.NewChaCha8(sha256.Sum256([]byte("replay"))).Read(data)
	p, err := dag.Options{Chunker: "size-16384"}.Params()
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ingest.Config{Params: p})
	if err != nil {
		t.Fatal(err)
	}
	limits := func(i int) int64 { return int64(300000 + (i%2)*100000) }
	cutWith := func(o Opener) []Info {
		cut := NewCutter(o, MaxLinks)
		if _, err := in.File(context.Background(), bytes.NewReader(data), cut); err != nil {
			t.Fatal(err)
		}
		infos, err := cut.Close(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return infos
	}
	first := cutWith(&memOpener{limits: limits})
	if len(first) < 5 {
		t.Fatalf("%d shards: too few to replay some", len(first))
	}
	o := &replayOpener{memOpener: memOpener{limits: limits}}
	for _, in := range first[:3] {
		o.counts = append(o.counts, in.Blocks)
	}
	again := cutWith(o)
	if len(again) != len(first) {
		t.Fatalf("replayed cut has %d shards, the first %d", len(again), len(first))
	}
	for i := range first {
		if again[i].CID != first[i].CID || again[i].Length != first[i].Length {
			t.Fatalf("shard %d: %s (%d bytes), first cut %s (%d bytes)", i, again[i].CID, again[i].Length, first[i].CID, first[i].Length)
		}
	}
}
