package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
)

// TestAllocatorsSpreadShards: peers on one disk report the same free
// space, where "most free space" alone put every shard of an add on one
// peer. With either allocator the 7 shards of a sharded add spread evenly
// (2, 2, 3), and no two consecutive shards share a peer.
func TestAllocatorsSpreadShards(t *testing.T) {
	for _, tt := range []struct {
		strategy string
		repl     int
		want     []int // shards per peer, sorted
	}{
		{"freespace", 1, []int{2, 2, 3}},
		{"balanced", 1, []int{2, 2, 3}},
		// Free space compared in bytes, peers sharing a disk differ by
		// what was written between their reports, and the ingesting
		// peer, which reports first, took every shard: 3, 4 and 7.
		{"freespace", 2, []int{4, 5, 5}},
		{"balanced", 2, []int{4, 5, 5}},
	} {
		t.Run(fmt.Sprintf("%s rmin=rmax=%d", tt.strategy, tt.repl), func(t *testing.T) {
			peers := newTestPeersWith(t, 3, func(_ int, cfg *config.Config) { cfg.Health.Allocator = tt.strategy })
			data := seeded("balanced", 6<<20)
			res, err := backend{peers[0]}.Add(context.Background(), bytes.NewReader(data), api.AddParams{Name: "b",
				Chunker: "size-65536", Shard: true, ShardSize: 1 << 20, RMin: tt.repl, RMax: tt.repl})
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
			if !slices.Equal(counts, tt.want) {
				t.Fatalf("shards per peer: %v, want %v", per, tt.want)
			}
		})
	}
}

// TestIngesterReservesItsCopy: while a shard streams, the ingesting peer
// counts its own copy as reserved, as its receiver does, and both give the
// room back when the add ends. Before, the ingesting peer reserved
// nothing, looked emptier than its receivers to the next shard's
// allocation, and could be promised room twice by concurrent adds.
func TestIngesterReservesItsCopy(t *testing.T) {
	peers := newTestPeers(t, 2)
	data := seeded("reserve", 6<<20)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := backend{peers[0]}.Add(context.Background(), pr, api.AddParams{Name: "r", Shard: true,
			ShardSize: 4 << 20, RMin: 2, RMax: 2})
		done <- err
	}()
	if _, err := pw.Write(data[:1<<20]); err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		waitFor(t, 10*time.Second, func() error {
			if r := p.localInfo().Reserved; r != 4<<20 {
				return fmt.Errorf("%s reserves %d bytes during the first shard, want %d", p.cfg.PeerName, r, 4<<20)
			}
			return nil
		})
	}
	if _, err := pw.Write(data[1<<20:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if r := p.localInfo().Reserved; r != 0 {
			t.Fatalf("%s still reserves %d bytes after the add", p.cfg.PeerName, r)
		}
	}
}
