package cluster

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/consensus"
)

// TestRebalance: three peers hold a sharded file; a fourth, empty peer
// joins. A dry run plans moves to it and changes nothing; rebalancing then
// moves shards to it until the free-space spread is within tolerance,
// never leaving a shard below rmin in the state, and the file reads back.
func TestRebalance(t *testing.T) {
	peers := newTestPeersWith(t, 3, fastHealth)
	ctx := context.Background()
	data := seeded("rebalance", 9<<20+11)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "f", Chunker: "size-65536",
		Shard: true, ShardSize: 1 << 20, RMin: 2, RMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := cid.Decode(res.CID)
	boot, _ := ma.NewMultiaddr(peers[0].fullAddrs()[0])
	fresh := startTestPeer(t, 3, []ma.Multiaddr{boot}, fastHealth)
	peers = append(peers, fresh)
	b := backend{peers[0]}
	waitFor(t, 10*time.Second, func() error {
		for _, p := range peers {
			if _, _, ok := peers[0].monitor.metrics(p.ID()); !ok {
				return fmt.Errorf("no fresh metrics from %s", p.cfg.PeerName)
			}
		}
		return nil
	})

	plan, err := b.Rebalance(ctx, true, 0)
	if err != nil || len(plan.Moves) == 0 {
		t.Fatalf("dry run: %v, %+v", err, plan)
	}
	for _, m := range plan.Moves {
		if m.To != fresh.ID().String() {
			t.Fatalf("dry run moves %s to %s, not to the empty peer", m.Part, m.To)
		}
	}
	if len(peers[0].cons.State().Repairs()) != 0 {
		t.Fatal("a dry run started copies")
	}

	st := peers[0].cons.State()
	deadline := time.Now().Add(60 * time.Second)
	for {
		pr, err := b.Rebalance(ctx, false, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(pr.Problems) > 0 {
			t.Fatalf("problems: %v", pr.Problems)
		}
		pin, _ := st.Get(root)
		for i, sh := range pin.Shards {
			if len(sh.Allocations) < 2 {
				t.Fatalf("shard %d fell to %d holders while moving", i, len(sh.Allocations))
			}
		}
		// Done above the tolerance is right only when no part can
		// move: the emptiest peer holds every part of the fullest that
		// would narrow their spread. A step that says done otherwise
		// (a copy ending between two steps) is asked again.
		if pin, _ := st.Get(root); pr.Done && (pr.Spread <= pr.Tolerance || noMove(peers, pin)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not balanced after a minute: %+v", pr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	pin, _ := st.Get(root)
	onFresh := 0
	for _, sh := range pin.Shards {
		if len(sh.Allocations) != 2 {
			t.Fatalf("shard %s on %d peers after rebalancing, want 2", sh.CID, len(sh.Allocations))
		}
		if slices.Contains(sh.Allocations, fresh.ID()) {
			onFresh++
		}
	}
	if onFresh < 2 {
		t.Fatalf("the new peer took %d shards", onFresh)
	}
	waitFor(t, 20*time.Second, func() error {
		for _, p := range peers {
			for _, sh := range p.store.Shards() {
				c, _ := cid.Decode(sh.Key)
				if !p.cons.State().Wants(c, p.ID()) {
					return fmt.Errorf("%s still stores %s, moved away", p.cfg.PeerName, sh.Key)
				}
			}
		}
		var got bufWriter
		if err := (backend{fresh}).Cat(ctx, res.CID, 0, -1, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
			return fmt.Errorf("read back through the new peer: %v (%d of %d bytes)", err, got.Len(), len(data))
		}
		return nil
	})
}

// noMove says whether no part of pin can narrow the free-space spread
// between the fullest and the emptiest of peers, free space counted as the
// rebalancer counts it (capacity less reserved, less the parts the state
// gives the peer): the emptiest holds every part of the fullest no larger
// than half the spread.
func noMove(peers []*Peer, pin consensus.Pin) bool {
	allocated := map[peer.ID]int64{}
	pin.EachPart(func(_ cid.Cid, holders []peer.ID, size int64) {
		for _, h := range holders {
			allocated[h] += size
		}
	})
	full, empty := peers[0], peers[0]
	free := map[peer.ID]int64{}
	for _, p := range peers {
		in := p.localInfo()
		free[p.ID()] = in.Capacity - in.Reserved - allocated[p.ID()]
		if free[p.ID()] < free[full.ID()] {
			full = p
		}
		if free[p.ID()] > free[empty.ID()] {
			empty = p
		}
	}
	spread := free[empty.ID()] - free[full.ID()]
	movable := false
	pin.EachPart(func(_ cid.Cid, holders []peer.ID, size int64) {
		if slices.Contains(holders, full.ID()) && !slices.Contains(holders, empty.ID()) && size <= spread/2 {
			movable = true
		}
	})
	return !movable
}
