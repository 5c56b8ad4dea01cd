package transfer

import (
	"bytes"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/shard"
	"github.com/shoal-project/shoal/store"
)

// twiceShard is a shard whose blocks come twice in a row, under a list as
// wide as one run: its root is {L, L}, so the honest stream sends the node
// L twice, then the root.
func twiceShard(t testing.TB, rng *mrand.Rand) (blocks []dag.Block, info shard.Info, nodes []dag.Block) {
	t.Helper()
	run := testBlocks(t, rng, 4, 2<<10)
	blocks = append(append([]dag.Block(nil), run...), run...)
	info, nodes = shardOf(t, blocks, len(run))
	if len(nodes) != 3 || !nodes[0].CID.Equals(nodes[1].CID) {
		t.Fatalf("list nodes %v, want L, L, root", nodes)
	}
	return blocks, info, nodes
}

// bogus is a valid list node, but not the bytes of the one it replaces.
func bogus(t testing.TB, blocks []dag.Block) []byte {
	t.Helper()
	n, err := shard.Node{Kind: shard.KindShard, Links: []cid.Cid{blocks[0].CID}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return n.Data
}

// stream is a transfer's body: blocks, then the end frame of info and nodes.
func stream(blocks []dag.Block, info shard.Info, nodes []dag.Block) []byte {
	var b []byte
	for _, blk := range blocks {
		b = rawFrame(b, blk.CID, blk.Data)
	}
	return rawEnd(b, info, nodes)
}

// TestReceiverRefusesDifferentDuplicates: a list node sent twice must be
// the same bytes both times. The sender of the security review sent L
// genuine, then L bogus (root {L, L}, the blocks twice), and got OK: the
// stored shard held the bogus copy and failed Verify. Either order is now
// refused with one sentence and nothing is stored; the same stream with
// both copies genuine is confirmed, stored as sent, and passes Verify.
func TestReceiverRefusesDifferentDuplicates(t *testing.T) {
	nodes := newCluster(t, 2)
	from, to := nodes[0], nodes[1]
	blocks, info, list := twiceShard(t, mrand.New(mrand.NewPCG(41, 42)))
	l, root := list[0], list[2]
	wrong := dag.Block{CID: l.CID, Data: bogus(t, blocks)}
	want := fmt.Sprintf("shard list: node %s was sent twice with different bytes", l.CID)
	for _, tt := range []struct {
		name  string
		nodes []dag.Block
	}{
		{"genuine then bogus", []dag.Block{l, wrong, root}},
		{"bogus then genuine", []dag.Block{wrong, l, root}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			info := fixSize(info, blocks, tt.nodes)
			first, second := rawSend(t, from.h, to.h.ID(), rawHeader(1, 1<<20), stream(blocks, info, tt.nodes))
			if first.status != statusOK {
				t.Fatalf("header refused: %q", first.reason)
			}
			if second.status == statusOK || second.reason != want {
				t.Fatalf("final answer: %d %q, want a failure %q", second.status, second.reason, want)
			}
			assertEmpty(t, to)
			if to.st.HasShard(info.CID.String()) {
				t.Fatal("the refused shard is stored")
			}
			if ents, err := os.ReadDir(filepath.Join(to.dir, "shards")); err != nil || len(ents) != 0 {
				t.Fatalf("shards/ holds %v (%v), want nothing", ents, err)
			}
		})
	}

	first, second := rawSend(t, from.h, to.h.ID(), rawHeader(1, 1<<20), stream(blocks, info, list))
	if first.status != statusOK || second.status != statusOK {
		t.Fatalf("honest transfer answered %+v, %+v", first, second)
	}
	key := info.CID.String()
	if err := to.st.Verify(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	got := readShard(t, to.st, key)
	sent := append(append([]dag.Block(nil), blocks...), list...)
	if len(got) != len(sent) {
		t.Fatalf("stored %d blocks, sent %d", len(got), len(sent))
	}
	for i := range got {
		if !got[i].CID.Equals(sent[i].CID) || !bytes.Equal(got[i].Data, sent[i].Data) {
			t.Fatalf("stored block %d is %s, sent %s", i, got[i].CID, sent[i].CID)
		}
	}
}

// TestConfirmedShardsVerify: whatever a sender does to an honest stream
// (node frames duplicated, replaced by other bytes, dropped, swapped, junk
// nodes and duplicate blocks added, with an Info that counts what is sent
// or not), the receiver either refuses it and keeps nothing, or confirms a
// shard that passes the store's own Verify and whose list reads back.
func TestConfirmedShardsVerify(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := &Server{Store: st}
	rng := mrand.New(mrand.NewPCG(51, 52))
	blocks, info, list := twiceShard(t, rng)
	wrong := bogus(t, blocks)
	junk := testBlocks(t, rng, 3, 200)
	mutations := []func(bs, ns []dag.Block) ([]dag.Block, []dag.Block){
		func(bs, ns []dag.Block) ([]dag.Block, []dag.Block) { // a node sent once more
			i := rng.IntN(len(ns))
			return bs, insert(ns, rng.IntN(len(ns)+1), ns[i])
		},
		func(bs, ns []dag.Block) ([]dag.Block, []dag.Block) { // a node's bytes replaced
			i := rng.IntN(len(ns))
			ns = append([]dag.Block(nil), ns...)
			ns[i].Data = wrong
			return bs, ns
		},
		func(bs, ns []dag.Block) ([]dag.Block, []dag.Block) { // a junk node
			return bs, insert(ns, rng.IntN(len(ns)+1), junk[rng.IntN(len(junk))])
		},
		func(bs, ns []dag.Block) ([]dag.Block, []dag.Block) { // a node dropped
			i := rng.IntN(len(ns))
			return bs, append(append([]dag.Block(nil), ns[:i]...), ns[i+1:]...)
		},
		func(bs, ns []dag.Block) ([]dag.Block, []dag.Block) { // two nodes swapped
			ns = append([]dag.Block(nil), ns...)
			i, j := rng.IntN(len(ns)), rng.IntN(len(ns))
			ns[i], ns[j] = ns[j], ns[i]
			return bs, ns
		},
		func(bs, ns []dag.Block) ([]dag.Block, []dag.Block) { // a block sent once more
			return insert(bs, rng.IntN(len(bs)+1), bs[rng.IntN(len(bs))]), ns
		},
	}
	confirmed, refused := 0, 0
	for range 400 {
		bs, ns, inf := blocks, list, info
		for range 1 + rng.IntN(3) {
			bs, ns = mutations[rng.IntN(len(mutations))](bs, ns)
		}
		if rng.IntN(5) > 0 { // mostly an Info that matches: only the frames are wrong
			inf = fixSize(inf, bs, ns)
			inf.Blocks = len(bs)
		}
		var out bytes.Buffer
		in := append(rawHeader(1, 1<<20), stream(bs, inf, ns)...)
		if err := srv.serve(bytes.NewReader(in), &out, ""); err != nil {
			refused++
			if sh := st.Shards(); len(sh) != 0 {
				t.Fatalf("refused (%v), yet the store holds %v", err, sh)
			}
		} else {
			confirmed++
			key := inf.CID.String()
			if err := st.Verify(t.Context(), key); err != nil {
				t.Fatalf("confirmed nodes %v, %d blocks: %v", cids(ns), len(bs), err)
			}
			if _, err := shard.ReadList(inf.CID, shard.KindShard, st.Get); err != nil {
				t.Fatalf("confirmed a shard whose list does not read back: %v", err)
			}
			if err := st.Delete(key); err != nil {
				t.Fatal(err)
			}
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
			t.Fatalf("temporary files left: %v", ents)
		}
	}
	t.Logf("%d confirmed, %d refused", confirmed, refused)
	if confirmed == 0 || refused == 0 {
		t.Fatalf("%d confirmed, %d refused: the mutations test one side only", confirmed, refused)
	}
}

func insert(s []dag.Block, i int, b dag.Block) []dag.Block {
	out := append([]dag.Block(nil), s[:i]...)
	return append(append(out, b), s[i:]...)
}

func cids(bs []dag.Block) []cid.Cid {
	out := make([]cid.Cid, len(bs))
	for i, b := range bs {
		out[i] = b.CID
	}
	return out
}
