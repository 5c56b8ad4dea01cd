// Package allocate decides which peers hold a pin or a shard. It is a pure,
// deterministic function of its inputs: no clock, no randomness, no
// networking, so every peer that runs it on the same inputs gets the same
// answer, and tests can compare it with a naive reference.
//
// The freespace strategy, in order:
//
//  1. Peers that already hold the item (current allocations) and are still
//     candidates keep it, in their current order, as long as they can:
//     moving data is the most expensive thing a cluster does.
//  2. The remaining candidates that have room for the item are taken by
//     most free space first; ties go to the lower peer ID, so the order is
//     total and deterministic.
//  3. Peers are added until RMax is reached (every candidate when RMax is
//     -1). Fewer than RMin peers (fewer than one for -1) is an error that
//     says how many could take it.
//
// The balanced strategy (Request.Strategy) changes step 2's order to
// fewest stored bytes, then fewest shards; balanced.go writes it out.
package allocate

import (
	"cmp"
	"fmt"
	"slices"
)

// Everywhere as RMin and RMax means every candidate peer.
const Everywhere = -1

// Candidate is a peer that may receive the item, with its figures as its
// last metrics said: free space in bytes (whatever the strategy, a peer
// without room for the item is never chosen), and for the balanced
// strategy the bytes and shards it stores.
type Candidate struct {
	ID     string
	Free   int64
	Used   int64
	Shards int
}

// Strategies: the order in which peers that do not hold the item yet are
// taken (health.allocator in the configuration).
const (
	// FreeSpace: most free bytes first (this file's package comment).
	FreeSpace = "freespace"
	// Balanced: fewest stored bytes, then fewest shards (balanced.go).
	Balanced = "balanced"
)

// Request describes the item to place.
type Request struct {
	// Size is the item's size in bytes; 0 when unknown (a pin of a CID
	// whose size nobody measured yet), which any peer can take.
	Size int64
	// RMin and RMax are the replication factors (Everywhere for both, or
	// 1 <= RMin <= RMax).
	RMin, RMax int
	// Current are the peers that hold the item now, in order.
	Current []string
	// Strategy orders the other candidates: FreeSpace ("" too) or
	// Balanced.
	Strategy string
}

// ErrNotEnoughPeers is wrapped by Allocate when fewer than RMin peers can
// take the item.
var ErrNotEnoughPeers = fmt.Errorf("not enough peers")

// Allocate returns the ordered peers that should hold the item.
func Allocate(req Request, cands []Candidate) ([]string, error) {
	if req.RMin == 0 || req.RMax == 0 || req.RMin < Everywhere || req.RMax < Everywhere ||
		(req.RMax != Everywhere && req.RMin > req.RMax) || (req.RMin == Everywhere) != (req.RMax == Everywhere) {
		return nil, fmt.Errorf("replication %d..%d is not valid", req.RMin, req.RMax)
	}
	order := byFreeSpace
	switch req.Strategy {
	case "", FreeSpace:
	case Balanced:
		order = byBalance
	default:
		return nil, fmt.Errorf("allocation strategy %q is not known; use %s or %s", req.Strategy, FreeSpace, Balanced)
	}
	fits := func(c Candidate) bool { return c.Free >= req.Size }
	want := req.RMax
	if want == Everywhere {
		want = len(cands)
	}
	byID := make(map[string]Candidate, len(cands))
	for _, c := range cands {
		byID[c.ID] = c
	}
	out := make([]string, 0, min(want, len(cands)))
	taken := make(map[string]bool, want)
	for _, id := range req.Current {
		if len(out) == want {
			break
		}
		if _, ok := byID[id]; ok && !taken[id] {
			// A current holder already has the bytes: no room needed.
			out = append(out, id)
			taken[id] = true
		}
	}
	rest := make([]Candidate, 0, len(cands))
	for _, c := range cands {
		if !taken[c.ID] && fits(c) {
			rest = append(rest, c)
		}
	}
	slices.SortFunc(rest, order)
	for _, c := range rest {
		if len(out) == want {
			break
		}
		if !taken[c.ID] {
			out = append(out, c.ID)
			taken[c.ID] = true
		}
	}
	need := req.RMin
	if need == Everywhere {
		need = 1
	}
	if len(out) < need {
		return nil, fmt.Errorf("%w: %d of %d peers can take %d bytes, replication minimum is %d",
			ErrNotEnoughPeers, len(out), len(cands), req.Size, need)
	}
	return out, nil
}

// byFreeSpace orders by most free space, then lowest ID.
func byFreeSpace(a, b Candidate) int {
	return cmp.Or(cmp.Compare(b.Free, a.Free), cmp.Compare(a.ID, b.ID))
}
