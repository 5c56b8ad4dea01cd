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
//  2. The remaining candidates that have room for the item are taken:
//     a. peers that took the item just before this one in the same batch
//     (Request.Recent[0]: the previous shard of a sharded add) after
//     every other, so consecutive shards spread over the peers instead
//     of piling onto the one with most room (metrics lag behind a fast
//     add, and peers sharing a disk report nearly the same free space);
//     b. then by most free space, counted in whole Request.Units (a
//     sharded add's are at least a shard): peers less than a unit apart
//     tie;
//     c. then the least recently used in the batch (a peer in no entry of
//     Recent first, then the one whose latest item is oldest, then the one
//     in fewest entries), so peers that tie take turns;
//     d. then the lower peer ID, so the order is total and deterministic.
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
	"math"
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
	// Recent are the allocations of the latest items of the same batch,
	// most recent first (a sharded add passes its last shards'); nil when
	// the item stands alone. Step 2 a and c read it; a few entries per
	// candidate peer are enough.
	Recent [][]string
	// Unit is the granule in which free space is compared (0 or 1:
	// bytes). A sharded add passes its shard size or more (a hundredth of
	// the most free space): free space figures move by what is written
	// between two peers' reports, so peers that share a disk, or have
	// disks of one size, report figures a few megabytes apart, and
	// compared in bytes the one asked first would take every shard.
	Unit int64
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
	unit := max(req.Unit, 1)
	strategy := func(a, b Candidate) int { return byFreeSpace(a, b, unit) }
	switch req.Strategy {
	case "", FreeSpace:
	case Balanced:
		strategy = func(a, b Candidate) int { return byBalance(a, b, unit) }
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
	prev, age, count := recency(req.Recent)
	slices.SortFunc(rest, func(a, b Candidate) int {
		return cmp.Or(compareBool(prev[a.ID], prev[b.ID]), strategy(a, b),
			cmp.Compare(ageOf(age, b.ID), ageOf(age, a.ID)), cmp.Compare(count[a.ID], count[b.ID]),
			cmp.Compare(a.ID, b.ID))
	})
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

// byFreeSpace orders by most free space in whole units.
func byFreeSpace(a, b Candidate, unit int64) int { return cmp.Compare(b.Free/unit, a.Free/unit) }

// recency reads Recent: the peers of the previous item, and for each peer
// the index of the latest entry that holds it and how many entries do.
func recency(recent [][]string) (prev map[string]bool, age, count map[string]int) {
	prev, age, count = map[string]bool{}, map[string]int{}, map[string]int{}
	for i, ids := range recent {
		for _, id := range ids {
			if i == 0 {
				prev[id] = true
			}
			if _, ok := age[id]; !ok {
				age[id] = i
			}
			count[id]++
		}
	}
	return prev, age, count
}

// ageOf is how many items ago id last took one: unused peers are oldest.
func ageOf(age map[string]int, id string) int {
	if a, ok := age[id]; ok {
		return a
	}
	return math.MaxInt
}

// compareBool orders false before true.
func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
