package consensus

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A pin's parts are what peers hold of it, each with its own allocations:
// a plain pin's DAG (the part is the pin's CID, held by Pin.Allocations),
// a sharded pin's cluster-DAG (held by Pin.Allocations) and each of its
// shards (held by Shard.Allocations).
//
// Repairs and re-allocations change one part's holders:
//
//	OpRepair   root part from pending: peers in pending start copying the
//	           part from its holders; the part's allocations must still be
//	           from (else ErrStale), and no repair of the part may be in
//	           progress.
//	OpRealloc  root part from to: the part's allocations become to, if they
//	           are still from (else ErrStale); ends the part's repair, if any.
//
// The compare-and-set on from makes a decision taken on an old view (a
// deposed leader's, a lagging follower's) fail instead of repairing a
// part twice. The leader commits OpRepair, waits until every pending peer
// holds the part, then commits OpRealloc with the confirmed holders; a new
// leader finds the repair in the state and carries on.
const (
	OpRepair  OpType = 7
	OpRealloc OpType = 8
)

// Repair is a copy of one part of a pin to new peers, in progress.
type Repair struct {
	Root, Part cid.Cid
	// Pending are the peers copying the part; they keep it (State.Wants)
	// while the repair lasts.
	Pending []peer.ID
	Started time.Time
}

// RepairOp returns an op that starts copying part of root to pending;
// from are the part's allocations the decision was based on.
func RepairOp(root, part cid.Cid, from, pending []peer.ID, now time.Time) Op {
	return Op{Type: OpRepair, Time: now, Pin: Pin{CID: root, Allocations: from},
		Shard: Shard{CID: part, Allocations: pending}}
}

// ReallocOp returns an op that sets the holders of part of root to to,
// if they are still from.
func ReallocOp(root, part cid.Cid, from, to []peer.ID, now time.Time) Op {
	return Op{Type: OpRealloc, Time: now, Pin: Pin{CID: root, Allocations: from},
		Shard: Shard{CID: part, Allocations: to}}
}

// The op format of both (after version, type and time):
//
//	root(bytes) part(bytes) nfrom(uvarint) peer(bytes)*nfrom nto(uvarint) peer(bytes)*nto
//
// where "to" is OpRepair's pending peers or OpRealloc's new allocations.

func (o Op) validateRepairOp() error {
	if !o.Pin.CID.Defined() || !o.Shard.CID.Defined() {
		return fmt.Errorf("%s: root and part CIDs are required: %w", o.Type, ErrInvalidOp)
	}
	for _, set := range [][]peer.ID{o.Pin.Allocations, o.Shard.Allocations} {
		if len(set) > MaxAllocations {
			return fmt.Errorf("%s %s: %d peers exceed %d: %w", o.Type, o.Shard.CID, len(set), MaxAllocations, ErrInvalidOp)
		}
		for i, a := range set {
			if slices.Contains(set[:i], a) {
				return fmt.Errorf("%s %s: peer %s listed twice: %w", o.Type, o.Shard.CID, a, ErrInvalidOp)
			}
		}
	}
	if len(o.Shard.Allocations) == 0 {
		return fmt.Errorf("%s %s: no peer to hold it: %w", o.Type, o.Shard.CID, ErrInvalidOp)
	}
	if o.Type == OpRepair {
		for _, a := range o.Shard.Allocations {
			if slices.Contains(o.Pin.Allocations, a) {
				return fmt.Errorf("repair %s: peer %s holds it already: %w", o.Shard.CID, a, ErrInvalidOp)
			}
		}
	}
	return nil
}

func (o Op) appendRepairOp(b []byte) []byte {
	b = appendField(b, o.Pin.CID.Bytes())
	b = appendField(b, o.Shard.CID.Bytes())
	for _, set := range [][]peer.ID{o.Pin.Allocations, o.Shard.Allocations} {
		b = binary.AppendUvarint(b, uint64(len(set)))
		for _, a := range set {
			b = appendField(b, []byte(a))
		}
	}
	return b
}

func (d *decoder) peerIDs() []peer.ID {
	n := d.uvarint()
	if d.err == nil && n > MaxAllocations {
		d.fail(fmt.Errorf("%d peers exceed %d", n, MaxAllocations))
	}
	var out []peer.ID
	for i := uint64(0); i < n && d.err == nil; i++ {
		out = append(out, d.peerIDField())
	}
	return out
}

func (d *decoder) repairOp(o *Op) {
	o.Pin.CID = d.cid()
	o.Shard.CID = d.cid()
	o.Pin.Allocations = d.peerIDs()
	o.Shard.Allocations = d.peerIDs()
	if d.err == nil {
		if err := o.validateRepairOp(); err != nil {
			d.fail(err)
		}
	}
}

// partHolders returns the allocations of part of p, and whether p has
// such a part.
func partHolders(p *Pin, part cid.Cid) ([]peer.ID, bool) {
	if part == p.CID && p.Kind == KindPlain || part == p.ClusterDAG && p.Kind == KindSharded {
		return p.Allocations, true
	}
	for i := range p.Shards {
		if p.Shards[i].CID == part {
			return p.Shards[i].Allocations, true
		}
	}
	return nil, false
}

// applyRepair applies OpRepair and OpRealloc. The caller holds s.mu.
func (s *State) applyRepair(op Op) error {
	root, part := op.Pin.CID, op.Shard.CID
	p, ok := s.pins[root]
	if !ok {
		return fmt.Errorf("%s %s of %s: %w", op.Type, part, root, ErrNotPinned)
	}
	cur, ok := partHolders(p, part)
	if !ok {
		return fmt.Errorf("%s: %s is not a part of %s: %w", op.Type, part, root, ErrInvalidOp)
	}
	if !slices.Equal(cur, op.Pin.Allocations) {
		return fmt.Errorf("%s %s of %s: its holders changed since the decision: %w", op.Type, part, root, ErrStale)
	}
	ids := make([]peer.ID, len(op.Shard.Allocations))
	for i, a := range op.Shard.Allocations {
		ids[i] = peer.ID(internID(string(a)))
	}
	if op.Type == OpRepair {
		if s.repairOf(root, part) != nil {
			return fmt.Errorf("repair %s of %s: a repair is in progress: %w", part, root, ErrStale)
		}
		s.repairs[part] = append(s.repairs[part], &Repair{Root: root, Part: part, Pending: ids, Started: op.Time})
		s.journal.add(part)
		return nil
	}
	np := *p // copy on write: snapshots may hold p
	np.Updated = op.Time
	if part == p.CID || part == p.ClusterDAG && p.Kind == KindSharded {
		np.Allocations = ids
	} else {
		np.Shards = slices.Clone(p.Shards)
		for i := range np.Shards {
			if np.Shards[i].CID == part {
				np.Shards[i].Allocations = ids
			}
		}
	}
	s.pins[root] = &np // the same parts: the index stays
	s.endRepair(root, part)
	s.journal.add(part)
	return nil
}

// repairOf returns the repair of part of root, if any. The caller holds
// s.mu.
func (s *State) repairOf(root, part cid.Cid) *Repair {
	for _, r := range s.repairs[part] {
		if r.Root == root {
			return r
		}
	}
	return nil
}

// endRepair forgets the repair of part of root. The caller holds s.mu.
func (s *State) endRepair(root, part cid.Cid) {
	rs := slices.DeleteFunc(slices.Clone(s.repairs[part]), func(r *Repair) bool { return r.Root == root })
	if len(rs) == 0 {
		delete(s.repairs, part)
	} else {
		s.repairs[part] = rs
	}
}

// dropRepairs forgets the repairs of old's parts that next (nil: none)
// does not have: old was unpinned or replaced by next. The caller holds
// s.mu.
func (s *State) dropRepairs(old, next *Pin) {
	if len(s.repairs) == 0 {
		return
	}
	old.parts(func(c cid.Cid) {
		if next != nil {
			if _, ok := partHolders(next, c); ok {
				return
			}
		}
		s.endRepair(old.CID, c)
	})
}

// Repairs returns the repairs in progress, by root and part.
func (s *State) Repairs() []Repair {
	s.mu.RLock()
	var out []Repair
	for _, rs := range s.repairs {
		for _, r := range rs {
			c := *r
			c.Pending = slices.Clone(r.Pending)
			out = append(out, c)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Repair) int {
		return cmp.Or(cmp.Compare(a.Root.KeyString(), b.Root.KeyString()), cmp.Compare(a.Part.KeyString(), b.Part.KeyString()))
	})
	return out
}

// pendingHere reports whether self is copying part c in a repair. The
// caller holds s.mu.
func (s *State) pendingHere(c cid.Cid, self peer.ID) bool {
	for _, r := range s.repairs[c] {
		if slices.Contains(r.Pending, self) {
			return true
		}
	}
	return false
}

// PartKind says what a part is.
type PartKind uint8

const (
	PartPlain      PartKind = iota + 1 // a plain pin's DAG
	PartShard                          // a shard of a sharded pin
	PartClusterDAG                     // a sharded pin's cluster-DAG
)

// Part describes one part of a pin, for a peer that copies it.
type Part struct {
	Root cid.Cid
	Kind PartKind
	// Shard is the shard, for PartShard (its Allocations are Holders).
	Shard Shard
	// Holders are the part's allocations.
	Holders []peer.ID
}

// EachPart calls fn for each part of p that peers hold, with its store
// key (a CID), its holders and its size: a plain pin itself; a sharded
// pin's cluster-DAG (size 0: a few list nodes) and each of its shards.
// The holders are p's own slices, not copies.
func (p Pin) EachPart(fn func(c cid.Cid, holders []peer.ID, size int64)) {
	if p.Kind == KindPlain {
		fn(p.CID, p.Allocations, int64(p.Size))
		return
	}
	fn(p.ClusterDAG, p.Allocations, 0)
	for _, sh := range p.Shards {
		fn(sh.CID, sh.Allocations, int64(sh.Size))
	}
}

// Part returns what store key c is: a plain pin, a shard of a sharded pin
// (the first pin that lists it) or a cluster-DAG.
func (s *State) Part(c cid.Cid) (Part, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p, ok := s.pins[c]; ok && p.Kind == KindPlain {
		return Part{Root: c, Kind: PartPlain, Holders: slices.Clone(p.Allocations)}, true
	}
	for _, root := range s.refs[c] {
		p := s.pins[root]
		if p.ClusterDAG == c {
			return Part{Root: root, Kind: PartClusterDAG, Holders: slices.Clone(p.Allocations)}, true
		}
		for i := range p.Shards {
			if p.Shards[i].CID == c {
				sh := p.Shards[i]
				sh.Allocations = slices.Clone(sh.Allocations)
				return Part{Root: root, Kind: PartShard, Shard: sh, Holders: sh.Allocations}, true
			}
		}
	}
	return Part{}, false
}
