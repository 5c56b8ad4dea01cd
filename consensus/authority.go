package consensus

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// What a member may ask the leader for. A member holds the cluster secret
// and is trusted to run shoal (package p2p's threat model): it may pin,
// unpin, add and remove peers, as the API calls it serves ask. The leader
// still checks, for every op a member forwards, what the op itself shows
// about who may make it:
//
//   - an op that places a part (a pin's allocations, a shard's, a cluster-
//     DAG's, a repair's pending peers, a re-allocation's new holders)
//     names current members only: a forwarder cannot make the cluster
//     wait on, or send data to, a peer it made up or one that was removed;
//   - the ops of a sharded add (begin, shard, commit, abort) come from the
//     add's owner, the peer that ingests it: no other member can record
//     shards into, commit or abort an add that is not its own. The leader's
//     own ops are not forwarded, so its reaper still aborts abandoned adds.
//
// A refusal is ErrForbidden, never retried.
func (c *Consensus) checkForwarded(from peer.ID, op Op) error {
	var placed []peer.ID
	switch op.Type {
	case OpPin, OpAddCommit:
		placed = op.Pin.Allocations
	case OpAddShard, OpRepair, OpRealloc:
		placed = op.Shard.Allocations
	}
	for _, id := range placed {
		if !c.IsMember(id) {
			return fmt.Errorf("%s from %s places a part on %s, which is not a member: %w", op, from, id, ErrForbidden)
		}
	}
	switch op.Type {
	case OpAddBegin:
		if op.Add.Owner != from {
			return fmt.Errorf("%s from %s names %s as its owner: an add is begun by the peer that ingests it: %w", op, from, op.Add.Owner, ErrForbidden)
		}
	case OpAddShard, OpAddCommit, OpAddAbort:
		// An add the state does not know is Apply's to refuse
		// (ErrNoSuchAdd, or nothing for an abort).
		if a, ok := c.state.GetAdd(op.Add.ID); ok && a.Owner != from {
			return fmt.Errorf("%s from %s: the add is %s's: only its owner may change it: %w", op, from, a.Owner, ErrForbidden)
		}
	}
	return nil
}
