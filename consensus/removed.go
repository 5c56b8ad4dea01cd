package consensus

import (
	"cmp"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// OpRemoved records that an operator removed Op.Peer from the cluster.
// Recording it again keeps the first time. Every member blocks a removed
// peer at its host and refuses its joins, so that a removed peer that
// still holds the secret cannot come back as itself; a peer that leaves
// on its own (leave_on_shutdown) commits no OpRemoved and may rejoin.
//
//	OpRemoved body = peer(bytes)
const OpRemoved OpType = 9

// RemovedOp returns the op that records id as removed, made at time now.
func RemovedOp(id peer.ID, now time.Time) Op { return Op{Type: OpRemoved, Time: now, Peer: id} }

// removedPeer is one entry of State.removed, as a snapshot holds it.
type removedPeer struct {
	ID peer.ID
	At time.Time
}

// Removed returns the peers removed from the cluster, sorted by ID.
func (s *State) Removed() []peer.ID {
	s.mu.RLock()
	out := make([]peer.ID, 0, len(s.removed))
	for id := range s.removed {
		out = append(out, id)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b peer.ID) int { return cmp.Compare(a, b) })
	return out
}

// IsRemoved reports whether id was removed from the cluster.
func (s *State) IsRemoved(id peer.ID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.removed[id]
	return ok
}
