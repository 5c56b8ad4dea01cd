package consensus

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestLeaderChecksForwardedOps: the leader refuses a forwarded op that
// places a part on a peer that is not a member, or that changes an add
// the forwarder does not own (authority.go), with ErrForbidden and one
// sentence; the same ops from the right peer commit.
func TestLeaderChecksForwardedOps(t *testing.T) {
	peers := newCluster(t, 3, nil)
	leader, others := leaderOf(t, peers)
	f, g := others[0], others[1]
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	commit := func(via *testPeer, op Op) error {
		return via.c.Commit(ctxT(t, 5*time.Second), op)
	}
	forbidden := func(what string, err error, want string) {
		t.Helper()
		if !errors.Is(err, ErrForbidden) || err.Error() != want {
			t.Fatalf("%s: %v; want ErrForbidden: %s", what, err, want)
		}
	}
	now := time.Now().UTC()
	prefix := fmt.Sprintf("commit %%s: peer %s: ", leader.id())

	p := NewPin(testCID(1))
	p.Allocations = []peer.ID{f.id(), stranger}
	forbidden("a pin on a stranger", commit(f, PinOp(p, now)),
		fmt.Sprintf(prefix, "pin "+p.CID.String())+fmt.Sprintf("pin %s from %s places a part on %s, which is not a member: not allowed", p.CID, f.id(), stranger))
	p.Allocations = []peer.ID{f.id(), g.id()}
	if err := commit(f, PinOp(p, now)); err != nil {
		t.Fatalf("a pin on two members: %v", err)
	}

	a := Add{ID: "add-of-g", Name: "big", RMin: 1, RMax: 1, Owner: g.id()}
	forbidden("an add begun for another peer", commit(f, AddBeginOp(a, now)),
		fmt.Sprintf(prefix, fmt.Sprintf("add-begin %x", a.ID))+fmt.Sprintf("add-begin %x from %s names %s as its owner: an add is begun by the peer that ingests it: not allowed", a.ID, f.id(), g.id()))
	if err := commit(g, AddBeginOp(a, now)); err != nil {
		t.Fatalf("g begins its own add: %v", err)
	}
	sh := Shard{CID: testCID(2), Size: 10, Blocks: 1, Length: 5, Allocations: []peer.ID{g.id()}}
	forbidden("a shard recorded into another's add", commit(f, AddShardOp(a.ID, 0, sh, now)),
		fmt.Sprintf(prefix, fmt.Sprintf("add-shard %x", a.ID))+fmt.Sprintf("add-shard %x from %s: the add is %s's: only its owner may change it: not allowed", a.ID, f.id(), g.id()))
	forbidden("another's add aborted", commit(f, AddAbortOp(a.ID, now)),
		fmt.Sprintf(prefix, fmt.Sprintf("add-abort %x", a.ID))+fmt.Sprintf("add-abort %x from %s: the add is %s's: only its owner may change it: not allowed", a.ID, f.id(), g.id()))
	if _, ok := leader.c.State().GetAdd(a.ID); !ok {
		t.Fatal("the add is gone after a refused abort")
	}
	if err := commit(g, AddShardOp(a.ID, 0, sh, now)); err != nil {
		t.Fatalf("g records its own shard: %v", err)
	}
	// The leader's own ops are not forwarded: its reaper aborts others' adds.
	if err := commit(leader, AddAbortOp(a.ID, now)); err != nil {
		t.Fatalf("the leader aborts g's add: %v", err)
	}
}
