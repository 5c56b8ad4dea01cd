package consensus

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestApplyRepairs walks repairs and re-allocations of a plain pin and of
// a shard, with the stale decisions a deposed leader could propose.
func TestApplyRepairs(t *testing.T) {
	s := repairedGoldenState(t) // shard s0 of root: held by p2, p1; p3 copying it
	p1, p2, p3, p4 := fixedPeer(t, 1), fixedPeer(t, 2), fixedPeer(t, 3), fixedPeer(t, 4)
	root, s0, s1 := fixedCID(t, false, "root"), fixedCID(t, true, "s0"), fixedCID(t, true, "s1")
	plain := fixedCID(t, true, "b") // allocated to p1, p2
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Minute) }
	_, pos, _ := s.Changes(0)

	steps := []struct {
		name string
		op   Op
		want error
	}{
		{"second repair of s0", RepairOp(root, s0, []peer.ID{p2, p1}, []peer.ID{p4}, at(1)), ErrStale},
		{"realloc from old holders", ReallocOp(root, s0, []peer.ID{p1}, []peer.ID{p1, p3}, at(2)), ErrStale},
		{"not a part", RepairOp(root, plain, nil, []peer.ID{p4}, at(3)), ErrInvalidOp},
		{"not pinned", RepairOp(fixedCID(t, true, "zz"), s0, nil, []peer.ID{p4}, at(4)), ErrNotPinned},
		{"repair the plain pin", RepairOp(plain, plain, []peer.ID{p1, p2}, []peer.ID{p3}, at(5)), nil},
		{"end the shard's repair", ReallocOp(root, s0, []peer.ID{p2, p1}, []peer.ID{p1, p3}, at(6)), nil},
	}
	for _, st := range steps {
		err := s.apply(0, st.op)
		if !errors.Is(err, st.want) || (st.want == nil && err != nil) {
			t.Fatalf("%s: %v, want %v", st.name, err, st.want)
		}
	}
	pin, _ := s.Get(root)
	if !slices.Equal(pin.Shards[0].Allocations, []peer.ID{p1, p3}) || pin.Shards[1].CID != s1 || !slices.Equal(pin.Shards[1].Allocations, []peer.ID{p3}) ||
		!pin.Updated.Equal(at(6)) {
		t.Fatalf("after realloc: shards %+v", pin.Shards)
	}
	if !s.Wants(s0, p3) || s.Wants(s0, p2) || !s.Wants(plain, p3) || !s.Wants(plain, p2) {
		t.Fatal("Wants disagrees with the repairs")
	}
	if rs := s.Repairs(); len(rs) != 1 || rs[0].Part != plain || !slices.Equal(rs[0].Pending, []peer.ID{p3}) {
		t.Fatalf("repairs %+v", rs)
	}
	keys, _, _ := s.Changes(pos)
	if len(keys) != 2 || keys[0] != plain || keys[1] != s0 {
		t.Fatalf("journal %v, want [plain s0]", keys)
	}
	// Renaming the pin keeps its repairs; unpinning drops them.
	re := NewPin(plain)
	re.Name, re.RMin, re.RMax, re.Allocations = "renamed", 2, 3, []peer.ID{p1, p2}
	if err := s.apply(0, PinOp(re, at(7))); err != nil || len(s.Repairs()) != 1 {
		t.Fatalf("re-pin: %v, %d repairs", err, len(s.Repairs()))
	}
	if err := s.apply(0, UnpinOp(plain, at(8))); err != nil || len(s.Repairs()) != 0 || s.Wants(plain, p3) {
		t.Fatalf("unpin: %v, %d repairs", err, len(s.Repairs()))
	}
	// Ops a decoder must refuse.
	for name, op := range map[string]Op{
		"copy to a holder": RepairOp(root, s0, []peer.ID{p1}, []peer.ID{p1}, at(9)),
		"nobody to copy":   RepairOp(root, s0, []peer.ID{p1}, nil, at(9)),
		"nobody to hold":   ReallocOp(root, s0, []peer.ID{p1}, nil, at(9)),
		"a peer twice":     ReallocOp(root, s0, []peer.ID{p1}, []peer.ID{p3, p3}, at(9)),
	} {
		if _, err := op.MarshalBinary(); !errors.Is(err, ErrInvalidOp) {
			t.Errorf("%s: encoded: %v", name, err)
		}
	}
}

// TestEachPart: a plain pin is one part; a sharded pin is its cluster-DAG
// (size 0) and its shards in order, each with its own holders and size.
func TestEachPart(t *testing.T) {
	a, b := peer.ID("a"), peer.ID("b")
	root, cdag, s0, s1 := fixedCID(t, false, "root"), fixedCID(t, true, "cdag"), fixedCID(t, true, "s0"), fixedCID(t, true, "s1")
	type seen struct {
		c       cid.Cid
		holders string
		size    int64
	}
	collect := func(p Pin) []seen {
		var out []seen
		p.EachPart(func(c cid.Cid, holders []peer.ID, size int64) {
			out = append(out, seen{c, fmt.Sprint(holders), size})
		})
		return out
	}
	plain := Pin{CID: root, Kind: KindPlain, Size: 77, Allocations: []peer.ID{a}}
	if got, want := collect(plain), []seen{{root, fmt.Sprint([]peer.ID{a}), 77}}; !slices.Equal(got, want) {
		t.Fatalf("plain: %v, want %v", got, want)
	}
	sharded := Pin{CID: root, Kind: KindSharded, ClusterDAG: cdag, Allocations: []peer.ID{a, b}, Shards: []Shard{
		{CID: s0, Size: 100, Allocations: []peer.ID{b}}, {CID: s1, Size: 50, Allocations: []peer.ID{a}}}}
	want := []seen{{cdag, fmt.Sprint([]peer.ID{a, b}), 0}, {s0, fmt.Sprint([]peer.ID{b}), 100}, {s1, fmt.Sprint([]peer.ID{a}), 50}}
	if got := collect(sharded); !slices.Equal(got, want) {
		t.Fatalf("sharded: %v, want %v", got, want)
	}
}
