package cluster

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// TestJoinRetries: a join refused for a reason that passes (here the
// first two: an election under way, as loaded test machines saw) is
// asked again, and the peer starts; it used to exit at the first refusal.
func TestJoinRetries(t *testing.T) {
	peers := newTestPeers(t, 1)
	var tries atomic.Int32
	first := peers[0]
	first.host.SetOnJoin(func(ctx context.Context, id peer.ID, addrs []ma.Multiaddr) error {
		if tries.Add(1) <= 2 {
			return errors.New("lost leadership before the entry committed: outcome unknown")
		}
		first.host.AddAddrs(id, addrs)
		return first.cons.AddPeer(ctx, id)
	})
	boot, err := ma.NewMultiaddr(first.fullAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	startTestPeer(t, 1, []ma.Multiaddr{boot}, nil)
	if n := tries.Load(); n != 3 {
		t.Fatalf("%d join attempts, want 3", n)
	}
	members, err := first.cons.Peers(context.Background())
	if err != nil || len(members) != 2 {
		t.Fatalf("members %v, %v; want both peers", members, err)
	}
}
