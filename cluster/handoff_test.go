package cluster

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/consensus"
)

// TestNoDeleteBeforeHandoff: an op that moves a plain pin off the only
// peer holding its data (as a re-add built on a state that an unpin then
// changed does: chaos run 2 left such a pin on no disk at all) does not
// make that peer delete it while its new holder has no copy; once the
// new holder copied it from there, the old copy goes.
func TestNoDeleteBeforeHandoff(t *testing.T) {
	peers := newTestPeersWith(t, 3, func(_ int, cfg *config.Config) {
		cfg.Pinning.ReplicationMin, cfg.Pinning.ReplicationMax = 1, 1
	})
	ctx := context.Background()
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(seeded("handoff", 300<<10)), api.AddParams{Name: "moved"})
	if err != nil {
		t.Fatal(err)
	}
	root := cid.MustParse(res.CID)
	st := peers[0].cons.State()
	pin, ok := st.Get(root)
	if !ok || len(pin.Allocations) != 1 || pin.Allocations[0] != peers[0].ID() {
		t.Fatalf("pin after the add: %+v, want it allocated to peer0 alone", pin)
	}
	// down will be the new holder while it is stopped; up the one after.
	var down, up *Peer
	for _, p := range peers[1:] {
		if p.ID() != peers[0].cons.Leader() && down == nil {
			down = p
		} else {
			up = p
		}
	}
	down.Close()
	move := func(to *Peer) {
		t.Helper()
		now := time.Now().UTC()
		pin.Allocations, pin.Updated = []peer.ID{to.ID()}, now
		if err := peers[0].cons.Commit(ctx, consensus.PinOp(pin, now)); err != nil {
			t.Fatalf("move the pin to %s: %v", to.cfg.PeerName, err)
		}
	}

	move(down)
	for range 3 {
		if err := peers[0].tracker.sync(ctx); err != nil {
			t.Fatal(err)
		}
		if !peers[0].store.Has(root) {
			t.Fatalf("peer0 deleted %s while its only holder (%s, down) had no copy", root, down.cfg.PeerName)
		}
	}

	move(up)
	waitFor(t, 10*time.Second, func() error {
		if s := up.tracker.status(root); s.Status != api.StatusPinned {
			return fmt.Errorf("%s: %s %q", up.cfg.PeerName, s.Status, s.Error)
		}
		return nil
	})
	waitFor(t, 10*time.Second, func() error {
		if err := peers[0].tracker.sync(ctx); err != nil {
			return err
		}
		if peers[0].store.Has(root) {
			return fmt.Errorf("peer0 still holds %s after %s copied it", root, up.cfg.PeerName)
		}
		return nil
	})
}
