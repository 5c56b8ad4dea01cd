package consensus

import (
	"slices"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// This file holds what State derives from its pins to answer a peer's
// reconciler in constant time per key, instead of a walk over the whole
// pinset: the index of shard and cluster-DAG CIDs to the sharded pins
// that list them, and the journal of store keys whose wanted-ness may
// have changed. Both are derived data: Apply updates them
// deterministically, Restore rebuilds them, snapshots never hold them.

// journalLen is how many changed keys the journal holds: a reconciler that
// falls further behind (65,536 pins in one round at 1,000 pins/s is more
// than a minute) walks the whole state once instead.
const journalLen = 1 << 16

// journal is a ring of the store keys touched by applied ops. Entry i
// (lo <= i < hi) is keys[i%len(keys)].
type journal struct {
	keys   []cid.Cid
	lo, hi uint64
}

func (j *journal) add(c cid.Cid) {
	if j.keys == nil {
		j.keys = make([]cid.Cid, journalLen)
	}
	j.keys[j.hi%journalLen] = c
	j.hi++
	if j.hi-j.lo > journalLen {
		j.lo = j.hi - journalLen
	}
}

// lose forgets every entry: readers must walk the whole state (after a
// Restore).
func (j *journal) lose() {
	j.hi++
	j.lo = j.hi
}

// Changes returns the store keys touched by ops applied since the journal
// position since, and the position to ask from next time. complete is
// false when the journal no longer holds every change since then (since
// is 0, the reader fell behind by more than the journal holds, or a
// snapshot was restored): the caller must then look at the whole state
// (Each) and may use next from this call. A key may appear more than once.
func (s *State) Changes(since uint64) (keys []cid.Cid, next uint64, complete bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	j := &s.journal
	if since < j.lo || since > j.hi {
		return nil, j.hi, false
	}
	keys = make([]cid.Cid, 0, j.hi-since)
	for i := since; i < j.hi; i++ {
		keys = append(keys, j.keys[i%journalLen])
	}
	return keys, j.hi, true
}

// parts calls fn with the store keys a pin accounts for: its root, and for
// a sharded pin its cluster-DAG and every shard.
func (p *Pin) parts(fn func(c cid.Cid)) {
	fn(p.CID)
	if p.Kind != KindSharded {
		return
	}
	fn(p.ClusterDAG)
	for i := range p.Shards {
		fn(p.Shards[i].CID)
	}
}

// setPin stores p under its CID, replacing any pin there, and keeps the
// index and the journal. The caller holds s.mu.
func (s *State) setPin(p *Pin) {
	if old, ok := s.pins[p.CID]; ok {
		s.unindex(old)
		s.dropRepairs(old, p)
		old.parts(s.journal.add)
	}
	s.pins[p.CID] = p
	s.index(p)
	p.parts(s.journal.add)
}

// delPin removes the pin of c, if any. The caller holds s.mu.
func (s *State) delPin(c cid.Cid) {
	old, ok := s.pins[c]
	if !ok {
		return
	}
	delete(s.pins, c)
	s.unindex(old)
	s.dropRepairs(old, nil)
	old.parts(s.journal.add)
}

func (s *State) index(p *Pin) {
	if p.Kind != KindSharded {
		return
	}
	p.parts(func(c cid.Cid) {
		if c != p.CID && !slices.Contains(s.refs[c], p.CID) {
			s.refs[c] = append(s.refs[c], p.CID)
		}
	})
}

func (s *State) unindex(p *Pin) {
	if p.Kind != KindSharded {
		return
	}
	p.parts(func(c cid.Cid) {
		if c == p.CID {
			return
		}
		roots := slices.DeleteFunc(s.refs[c], func(r cid.Cid) bool { return r == p.CID })
		if len(roots) == 0 {
			delete(s.refs, c)
		} else {
			s.refs[c] = roots
		}
	})
}

// reindex rebuilds the index from the pins and loses the journal. The
// caller holds s.mu.
func (s *State) reindex() {
	s.refs = make(map[cid.Cid][]cid.Cid)
	for _, p := range s.pins {
		s.index(p)
	}
	s.journal.lose()
}

// Wants reports whether peer self should keep store key c: c is a plain
// pin allocated to self (or to every peer), the cluster-DAG of a sharded
// pin allocated to self, or a shard allocated to self of a sharded pin or
// of an add in progress. It costs a few map lookups, plus a look at each
// add in progress.
func (s *State) Wants(c cid.Cid, self peer.ID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p, ok := s.pins[c]; ok && p.Kind == KindPlain &&
		(p.RMax == Everywhere || slices.Contains(p.Allocations, self)) {
		return true
	}
	for _, root := range s.refs[c] {
		p := s.pins[root]
		if p.ClusterDAG == c && slices.Contains(p.Allocations, self) {
			return true
		}
		for i := range p.Shards {
			if p.Shards[i].CID == c && slices.Contains(p.Shards[i].Allocations, self) {
				return true
			}
		}
	}
	for _, a := range s.adds {
		for i := range a.Shards {
			if a.Shards[i].CID == c && slices.Contains(a.Shards[i].Allocations, self) {
				return true
			}
		}
	}
	return s.pendingHere(c, self)
}

// Referenced reports whether any pin or add in progress accounts for c:
// as a pin's root, a cluster-DAG or a shard.
func (s *State) Referenced(c cid.Cid) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if _, ok := s.pins[c]; ok {
		return true
	}
	if len(s.refs[c]) > 0 {
		return true
	}
	for _, a := range s.adds {
		for i := range a.Shards {
			if a.Shards[i].CID == c {
				return true
			}
		}
	}
	return false
}

// ShardOwner returns the sharded pin that holds shard c, or whose
// cluster-DAG is c.
func (s *State) ShardOwner(c cid.Cid) (cid.Cid, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if roots := s.refs[c]; len(roots) > 0 {
		return roots[0], true
	}
	return cid.Undef, false
}

// Each calls fn with every pin, in no order, until fn returns false. The
// pins share their slices with the state: fn must not modify them. No lock
// is held while fn runs, so fn may take its time; pins applied meanwhile
// may or may not be seen.
func (s *State) Each(fn func(p Pin) bool) {
	s.mu.RLock()
	ptrs := make([]*Pin, 0, len(s.pins))
	for _, p := range s.pins {
		ptrs = append(ptrs, p)
	}
	s.mu.RUnlock()
	for _, p := range ptrs {
		if !fn(*p) {
			return
		}
	}
}
