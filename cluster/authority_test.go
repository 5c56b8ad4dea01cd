package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-project/shoal/consensus"
)

// TestMemberCannotStopPeer: a member that tells a peer it was removed,
// while the peer's Raft configuration still lists it, is answered with an
// error and the peer keeps running; a real removal stops it.
func TestMemberCannotStopPeer(t *testing.T) {
	peers := newTestPeers(t, 3)
	ctx := context.Background()
	err := peers[1].call(ctx, peers[2].ID(), protoRemoved, struct{}{}, &struct{}{})
	if want := "this peer's Raft configuration still lists it as a member: not stopping"; err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("a false removal notice answered %v; want it refused: %s", err, want)
	}
	select {
	case <-peers[2].Removed():
		t.Fatal("peer2 stopped on one member's word")
	case <-time.After(2 * time.Second): // past a membership watch
	}
	if err := (backend{peers[1]}).RemovePeer(ctx, peers[2].ID().String()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-peers[2].Removed():
	case <-time.After(10 * time.Second):
		t.Fatal("peer2 still runs 10 s after its removal")
	}

	// The removal is recorded, every member blocks peer2, and it cannot
	// join again as itself: before the record, the join handshake (open
	// to anyone with the secret) made it a member again.
	gone := peers[2].ID()
	for _, p := range peers[:2] {
		if !p.cons.State().IsRemoved(gone) {
			t.Fatalf("%s's state does not record peer2 as removed", p.cfg.PeerName)
		}
	}
	waitFor(t, 3*removedGrace, func() error {
		for _, p := range peers[:2] {
			if !p.host.Blocked(gone) {
				return fmt.Errorf("%s does not block the removed peer", p.cfg.PeerName)
			}
		}
		return nil
	})
	addr, err := ma.NewMultiaddr(peers[0].fullAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := peers[2].host.Join(jctx, addr); err == nil {
		t.Fatal("the removed peer joined again")
	}
	time.Sleep(time.Second)
	for _, p := range peers[:2] {
		if p.cons.IsMember(gone) {
			t.Fatalf("%s lists the removed peer as a member again", p.cfg.PeerName)
		}
	}
}

// TestInfoCheck: storage figures no peer can have keep it out of the
// allocator's candidates, with the figures in the sentence.
func TestInfoCheck(t *testing.T) {
	for _, tc := range []struct {
		in   info
		want string
	}{
		{info{Capacity: 100, Used: 40, Reserved: 10, Free: 50, Shards: 3}, ""},
		{info{Capacity: 0, Used: 5, Free: 0}, ""},
		{info{Capacity: 100, Used: 40, Reserved: 10, Free: 51}, "impossible storage figures (capacity 100, used 40, reserved 10, free 51, shards 0)"},
		{info{Capacity: 1 << 40, Used: -1 << 40, Free: 1 << 40}, "impossible storage figures (capacity 1099511627776, used -1099511627776, reserved 0, free 1099511627776, shards 0)"},
		{info{Capacity: 10, Free: 10, Shards: -1}, "impossible storage figures (capacity 10, used 0, reserved 0, free 10, shards -1)"},
	} {
		err := tc.in.check()
		if (tc.want == "") != (err == nil) || (err != nil && err.Error() != tc.want) {
			t.Errorf("%+v: %v; want %q", tc.in, err, tc.want)
		}
	}
}

// TestRemovedRecordStopsPeer: a peer the committed state records as
// removed stops even when the configuration change that drops it never
// reaches it (CI saw the leader block it first), and no member blocks it
// while it is still in their configuration.
func TestRemovedRecordStopsPeer(t *testing.T) {
	peers := newTestPeers(t, 3)
	ctx := context.Background()
	victim := peers[2].ID()
	if peers[2].cons.Leader() == victim {
		t.Fatal("peer2 leads: a leader waits for its own removal")
	}
	start := time.Now()
	if err := (backend{peers[0]}).commitRetrying(ctx, consensus.RemovedOp(victim, time.Now().UTC())); err != nil {
		t.Fatal(err)
	}
	select {
	case <-peers[2].Removed():
	case <-time.After(4 * removedGrace):
		t.Fatalf("peer2 still runs %v after the state recorded its removal", 4*removedGrace)
	}
	if d := time.Since(start); d < 2*removedGrace {
		t.Fatalf("peer2 stopped after %v, before its configuration had %v to agree", d, 2*removedGrace)
	}
	for _, p := range peers[:2] {
		if !p.cons.IsMember(victim) {
			t.Fatalf("%s dropped peer2 from its configuration: the test would prove nothing", p.cfg.PeerName)
		}
		if p.host.Blocked(victim) {
			t.Fatalf("%s blocks peer2 while its configuration lists it", p.cfg.PeerName)
		}
	}
}
