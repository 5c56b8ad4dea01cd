package consensus

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestApplyAdds walks an add through its ops, including the retries and
// mistakes a proposer can make.
func TestApplyAdds(t *testing.T) {
	s := newState()
	p1 := fixedPeer(t, 1)
	sh := func(name string) Shard {
		return Shard{CID: fixedCID(t, true, name), Size: 10, Blocks: 1, Length: 5, Allocations: []peer.ID{p1}}
	}
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	root, cdag := fixedCID(t, false, "root"), fixedCID(t, true, "cdag")
	steps := []struct {
		op   Op
		want error
	}{
		{AddShardOp("x", 0, sh("s0"), at(0)), ErrNoSuchAdd},
		{AddBeginOp(Add{ID: "x", Name: "f", RMin: 1, RMax: 2, Owner: p1}, at(1)), nil},
		{AddBeginOp(Add{ID: "x", Name: "f", RMin: 1, RMax: 2, Owner: p1}, at(2)), ErrInvalidOp},
		{AddShardOp("x", 1, sh("s1"), at(3)), ErrInvalidOp}, // before shard 0
		{AddShardOp("x", 0, sh("s0"), at(4)), nil},
		{AddShardOp("x", 0, sh("s0"), at(5)), nil},             // a retried op: no-op
		{AddShardOp("x", 0, sh("other"), at(6)), ErrInvalidOp}, // a different shard 0
		{AddShardOp("x", 1, sh("s1"), at(7)), nil},
		{AddCommitOp("y", root, cdag, 10, nil, at(8)), ErrNoSuchAdd},
		{AddCommitOp("x", root, cdag, 10, []peer.ID{p1}, at(9)), nil},
		{AddAbortOp("x", at(10)), nil}, // gone already: no-op
	}
	for i, st := range steps {
		err := s.apply(0, st.op)
		if !errors.Is(err, st.want) || (st.want == nil && err != nil) {
			t.Fatalf("step %d (%s): %v, want %v", i, st.op, err, st.want)
		}
	}
	p, ok := s.Get(root)
	if !ok || p.Kind != KindSharded || len(p.Shards) != 2 || p.Shards[1].CID != fixedCID(t, true, "s1") ||
		p.Name != "f" || p.Created != at(9) {
		t.Fatalf("pin %+v", p)
	}
	if len(s.Adds()) != 0 {
		t.Fatal("the committed add is still in progress")
	}
	if owner, ok := s.ShardOwner(fixedCID(t, true, "s0")); !ok || owner != root {
		t.Fatalf("shard owner %s %v", owner, ok)
	}
	if owner, ok := s.ShardOwner(cdag); !ok || owner != root {
		t.Fatalf("cluster-DAG owner %s %v", owner, ok)
	}
	// Pinning the root again renames it and keeps its shards.
	re := NewPin(root)
	re.Name, re.RMin, re.RMax = "renamed", 2, 3
	if err := s.apply(0, PinOp(re, at(11))); err != nil {
		t.Fatal(err)
	}
	p, _ = s.Get(root)
	if p.Kind != KindSharded || len(p.Shards) != 2 || p.Name != "renamed" || p.RMin != 2 || p.Created != at(9) {
		t.Fatalf("after re-pin: %+v", p)
	}
	// A pin op may not smuggle in a sharded pin.
	bad := NewPin(fixedCID(t, false, "z"))
	bad.Kind = KindSharded
	if _, err := PinOp(bad, at(12)).MarshalBinary(); !errors.Is(err, ErrInvalidOp) {
		t.Fatalf("sharded pin op encoded: %v", err)
	}
}
