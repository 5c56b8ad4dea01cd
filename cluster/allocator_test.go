package cluster

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
)

// TestAllocatorsSpreadShards: peers on one disk report the same free
// space, where "most free space" alone put every shard of an add on one
// peer. With either allocator the 7 shards of a sharded add spread evenly
// (2, 2, 3), and no two consecutive shards share a peer.
func TestAllocatorsSpreadShards(t *testing.T) {
	for _, strategy := range []string{"freespace", "balanced"} {
		t.Run(strategy, func(t *testing.T) {
			peers := newTestPeersWith(t, 3, func(_ int, cfg *config.Config) { cfg.Health.Allocator = strategy })
			data := seeded("balanced", 6<<20)
			res, err := backend{peers[0]}.Add(context.Background(), bytes.NewReader(data), api.AddParams{Name: "b",
				Chunker: "size-65536", Shard: true, ShardSize: 1 << 20, RMin: 1, RMax: 1})
			if err != nil {
				t.Fatal(err)
			}
			root, _ := cid.Decode(res.CID)
			pin, _ := peers[0].cons.State().Get(root)
			if len(pin.Shards) != 7 { // 6 MiB of leaves plus the DAG's nodes
				t.Fatalf("%d shards, want 7", len(pin.Shards))
			}
			per := map[string]int{}
			for i, sh := range pin.Shards {
				if i > 0 && slices.Equal(sh.Allocations, pin.Shards[i-1].Allocations) {
					t.Fatalf("shards %d and %d both on %v", i-1, i, sh.Allocations)
				}
				for _, p := range peers {
					if slices.Contains(sh.Allocations, p.ID()) {
						per[p.cfg.PeerName]++
					}
				}
			}
			counts := []int{per["peer0"], per["peer1"], per["peer2"]}
			slices.Sort(counts)
			if !slices.Equal(counts, []int{2, 2, 3}) {
				t.Fatalf("shards per peer: %v, want 2, 2 and 3", per)
			}
		})
	}
}
