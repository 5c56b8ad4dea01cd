package cluster

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/api"
)

// TestDrain: 4 peers, a sharded file at rmin=rmax=2. Draining a peer that
// holds parts copies each of them to a new holder first (its one other
// holder is below rmin), then drops the peer from every part; the peer
// can then be removed with every part on 2 live peers that store it, and
// the file reads back identical.
func TestDrain(t *testing.T) {
	peers := newTestPeersWith(t, 4, fastHealth)
	ctx := context.Background()
	data := seeded("drain", 4<<20+31)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "d", Chunker: "size-65536",
		Shard: true, ShardSize: 1 << 20, RMin: 2, RMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := cid.Decode(res.CID)
	waitApplied(t, peers, root)
	leader := peers[0].cons.Leader()
	var victim *Peer
	held := 0
	pin, _ := peers[0].cons.State().Get(root)
	for _, p := range peers {
		n := 0
		for _, sh := range pin.Shards {
			if slices.Contains(sh.Allocations, p.ID()) {
				n++
			}
		}
		if p.ID() != leader && n > held {
			victim, held = p, n
		}
	}
	if held == 0 {
		t.Fatal("no follower holds a shard: the test would prove nothing")
	}
	b := backend{peers[0]}
	if victim == peers[0] {
		b = backend{peers[1]}
	}
	copying := false
	waitFor(t, 30*time.Second, func() error {
		pr, err := b.Drain(ctx, victim.ID().String())
		if err != nil {
			return err
		}
		copying = copying || pr.Copying > 0
		if pr.Parts != 0 {
			return fmt.Errorf("%d parts left, %d copying: %v", pr.Parts, pr.Copying, pr.Problems)
		}
		return nil
	})
	if !copying {
		t.Fatal("no part was copied before the peer was dropped")
	}
	if err := b.RemovePeer(ctx, victim.ID().String()); err != nil {
		t.Fatal(err)
	}
	var live []*Peer
	for _, p := range peers {
		if p != victim {
			live = append(live, p)
		}
	}
	st := live[0].cons.State()
	pin, _ = st.Get(root)
	parts := append([]cid.Cid{pin.ClusterDAG}, func() (cs []cid.Cid) {
		for _, sh := range pin.Shards {
			cs = append(cs, sh.CID)
		}
		return cs
	}()...)
	for _, c := range parts {
		part, _ := st.Part(c)
		if slices.Contains(part.Holders, victim.ID()) || len(part.Holders) < 2 {
			t.Errorf("%s held by %v after the drain", c, part.Holders)
		}
		for _, p := range live {
			if slices.Contains(part.Holders, p.ID()) && !p.store.HasShard(c.String()) {
				t.Errorf("%s allocated to %s, not stored there", c, p.cfg.PeerName)
			}
		}
	}
	var got bufWriter
	if err := (backend{live[0]}).Cat(ctx, res.CID, 0, -1, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("read back: %v (%d of %d bytes)", err, got.Len(), len(data))
	}
	if _, err := b.Drain(ctx, victim.ID().String()); err == nil ||
		err.Error() != fmt.Sprintf("not found: %s is not a member of the cluster", victim.ID()) {
		t.Errorf("drain of a removed peer: %v", err)
	}
}
