package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/shard"
)

// testShard is a shard built in the test: its blocks in stream order, its
// list nodes in BuildList's order and in the order of a walk from the root
// (ReadList's, the order a holder sends them in), and its record.
type testShard struct {
	sh     consensus.Shard
	blocks []dag.Block
	nodes  []dag.Block
	walk   []dag.Block
}

// newTestShard builds a shard of raw blocks a b a b c under lists two
// links wide, so that its tree names the node {a, b} twice, as the list of
// a file with a repeated run of blocks does.
func newTestShard(t *testing.T) testShard {
	t.Helper()
	raw := func(s string) dag.Block {
		data := seeded(s, 3000)
		return dag.Block{CID: cid.NewCidV1(cid.Raw, mustSum(t, data)), Data: data}
	}
	a, b, c := raw("a"), raw("b"), raw("c")
	ts := testShard{blocks: []dag.Block{a, b, a, b, c}}
	items := make([]cid.Cid, len(ts.blocks))
	for i, blk := range ts.blocks {
		items[i] = blk.CID
	}
	root, nodes, err := shard.BuildList(shard.KindShard, items, 2)
	if err != nil {
		t.Fatal(err)
	}
	ts.nodes = nodes
	byKey := map[string][]byte{}
	for _, n := range nodes {
		byKey[n.CID.KeyString()] = n.Data
	}
	if _, err := shard.ReadList(root, shard.KindShard, func(c cid.Cid) ([]byte, error) {
		ts.walk = append(ts.walk, dag.Block{CID: c, Data: byKey[c.KeyString()]})
		return byKey[c.KeyString()], nil
	}); err != nil {
		t.Fatal(err)
	}
	ts.sh = consensus.Shard{CID: root, Blocks: uint64(len(ts.blocks))}
	return ts
}

// repeated is the list node the shard's tree names twice, and how many
// times a walk visits it.
func (ts testShard) repeated(t *testing.T) (dag.Block, int) {
	t.Helper()
	counts := map[string]int{}
	for _, n := range ts.walk {
		counts[n.CID.KeyString()]++
	}
	for _, n := range ts.walk {
		if counts[n.CID.KeyString()] > 1 {
			return n, counts[n.CID.KeyString()]
		}
	}
	t.Fatal("the shard's tree names no node twice: the test would prove nothing")
	return dag.Block{}, 0
}

// storeShard writes ts into p's store, blocks then list nodes, as a
// receiver does, and keeps p's tracker from deleting it.
func storeShard(t *testing.T, p *Peer, ts testShard) {
	t.Helper()
	w, err := p.store.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, b := range append(append([]dag.Block(nil), ts.blocks...), ts.nodes...) {
		if err := w.Put(b); err != nil {
			t.Fatal(err)
		}
	}
	p.tracker.protect(ts.sh.CID.String())
	if _, err := w.Commit(context.Background(), ts.sh.CID.String(), ts.sh.CID); err != nil {
		t.Fatal(err)
	}
}

// fakeHolder serves /shoal/read/1 on p in place of its read server: it
// answers every request with the list frames lists, then the blocks, as a
// holder sends a shard. It returns the count of requests.
func fakeHolder(p *Peer, lists, blocks *atomic.Pointer[[]dag.Block]) *atomic.Int32 {
	var asked atomic.Int32
	p.host.Handle(protoRead, func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := bufio.NewReader(io.LimitReader(s, 256)).ReadString('\n'); err != nil {
			_ = s.Reset()
			return
		}
		asked.Add(1)
		bw := bufio.NewWriter(s)
		err := bw.WriteByte(readOK)
		for _, n := range *lists.Load() {
			err = errors.Join(err, writeFrame(bw, n.CID, n.Data))
		}
		err = errors.Join(err, bw.WriteByte(0))
		for _, b := range *blocks.Load() {
			err = errors.Join(err, writeFrame(bw, b.CID, b.Data))
		}
		_, werr := bw.Write([]byte{0, readOK})
		if errors.Join(err, werr, bw.Flush()) != nil {
			_ = s.Reset() // the reader refused the stream
		}
	})
	return &asked
}

// assertNotStored fails if p's store holds key or any file of it.
func assertNotStored(t *testing.T, p *Peer, key string) {
	t.Helper()
	if p.store.HasShard(key) {
		t.Fatalf("%s stores shard %s", p.cfg.PeerName, key)
	}
	for _, d := range []string{"shards", "tmp"} {
		ents, err := os.ReadDir(filepath.Join(p.dir, config.StoreDir, d))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if d == "tmp" || strings.HasPrefix(e.Name(), key) {
				t.Fatalf("%s has %s/%s", p.cfg.PeerName, d, e.Name())
			}
		}
	}
}

// TestCopyRefusesUnverifiedListNodes: a repair copy from a holder that
// sends list frames other than the tree's walk (a junk frame, a second and
// wrong copy of the root, either side of the genuine one, a node once more
// or once fewer than the tree names it) fails with one error naming the
// holder, and nothing of it is stored; the tracker then copies the shard
// from the next holder. The same fake holder, honest, is copied from, and
// that copy passes Verify.
func TestCopyRefusesUnverifiedListNodes(t *testing.T) {
	peers := newTestPeers(t, 3)
	ctx := context.Background()
	dst, bad, good := peers[0], peers[1], peers[2]
	ts := newTestShard(t)
	c, key := ts.sh.CID, ts.sh.CID.String()
	dst.tracker.protect(key) // the copy is in no pin: keep the tracker off it
	part := consensus.Part{Root: c, Kind: consensus.PartShard, Shard: ts.sh}

	junk := dag.Block{CID: cid.NewCidV1(cid.Raw, mustSum(t, []byte("junk"))), Data: []byte("junk")}
	// Valid dag-cbor, a list node even, but not the bytes of the root.
	other, err := shard.Node{Kind: shard.KindShard, Links: []cid.Cid{ts.blocks[0].CID}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	wrongRoot := dag.Block{CID: c, Data: other.Data}
	rep, named := ts.repeated(t)
	with := func(before, after []dag.Block) []dag.Block {
		return append(append(append([]dag.Block(nil), before...), ts.walk...), after...)
	}
	var lists, blocks atomic.Pointer[[]dag.Block]
	blocks.Store(&ts.blocks)
	asked := fakeHolder(bad, &lists, &blocks)

	tests := []struct {
		name  string
		lists []dag.Block
		want  string
	}{
		{"junk frame", with(nil, []dag.Block{junk}),
			fmt.Sprintf("the holder sent list node %s, which the shard's list does not name", junk.CID)},
		{"wrong copy of the root first", with([]dag.Block{wrongRoot}, nil),
			fmt.Sprintf("the holder sent two different list nodes named %s", c)},
		{"wrong copy of the root after", with(nil, []dag.Block{wrongRoot}),
			fmt.Sprintf("the holder sent two different list nodes named %s", c)},
		{"a node once more than named", with(nil, []dag.Block{rep}),
			fmt.Sprintf("the holder sent list node %s %d times, the shard's list names it %d times", rep.CID, named+1, named)},
		{"a node once fewer than named", without(ts.walk, rep),
			fmt.Sprintf("read list node %s: the list names it more often than the holder sent it (%d)", rep.CID, named-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lists.Store(&tt.lists)
			err := dst.copyPart(ctx, bad.ID(), part, c)
			want := fmt.Sprintf("copy shard %s from %s: %s", c, bad.ID(), tt.want)
			if err == nil || err.Error() != want {
				t.Fatalf("copy: %v\nwant: %s", err, want)
			}
			assertNotStored(t, dst, key)
		})
	}

	// The next holder: the tracker's copy goes on to it after the hostile
	// one, which it asks first.
	storeShard(t, good, ts)
	waitFor(t, 10*time.Second, func() error {
		for _, p := range []*Peer{bad, good} {
			if !dst.monitor.alive(p.ID()) {
				return fmt.Errorf("no heartbeat from %s yet", p.cfg.PeerName)
			}
		}
		return nil
	})
	lists.Store(&tests[0].lists)
	part.Holders = []peer.ID{bad.ID(), good.ID()}
	n := asked.Load()
	if err := dst.tracker.copyPart(ctx, c, part); err != nil {
		t.Fatalf("copy from the next holder: %v", err)
	}
	if asked.Load() == n {
		t.Fatal("the hostile holder was not asked first: the test proved nothing")
	}
	if err := dst.store.Verify(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := dst.store.Delete(key); err != nil {
		t.Fatal(err)
	}

	// The same fake holder, honest (the node named twice sent twice).
	lists.Store(&ts.walk)
	if err := dst.copyPart(ctx, bad.ID(), part, c); err != nil {
		t.Fatalf("copy from the honest holder: %v", err)
	}
	if err := dst.store.Verify(ctx, key); err != nil {
		t.Fatal(err)
	}
	if got, want := storedBlocks(t, dst, key), len(ts.blocks)+len(ts.walk); got != want {
		t.Fatalf("the copy holds %d blocks, want %d (data blocks and the walk's nodes)", got, want)
	}
}

// without is nodes without the last copy of n.
func without(nodes []dag.Block, n dag.Block) []dag.Block {
	for i := len(nodes) - 1; i >= 0; i-- {
		if nodes[i].CID.Equals(n.CID) {
			return append(append([]dag.Block(nil), nodes[:i]...), nodes[i+1:]...)
		}
	}
	return nodes
}

func mustSum(t *testing.T, data []byte) mh.Multihash {
	t.Helper()
	h, err := mh.Sum(data, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// storedBlocks counts the sections of the stored shard key.
func storedBlocks(t *testing.T, p *Peer, key string) int {
	t.Helper()
	for _, sh := range p.store.Shards() {
		if sh.Key == key {
			return sh.Blocks
		}
	}
	t.Fatalf("%s does not store %s", p.cfg.PeerName, key)
	return 0
}
