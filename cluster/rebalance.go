package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/consensus"
)

// Rebalancing moves parts from the fullest live peer to the emptiest
// (`shoal rebalance`), so that new, empty peers take their share. Each
// step:
//
//  1. ends the moves it started whose copy is done: the part's holders
//     become its old holders minus the peer it left plus the new one
//     (OpRealloc), so the part is never below rmin on the way; a move
//     whose copy failed ends with the holders unchanged;
//  2. while the free space of the emptiest live peer E (its capacity
//     less reserved, less the parts the state gives it: see below)
//     exceeds the fullest F's by more than the tolerance, picks the
//     largest part F holds and E does not, no larger than half the
//     difference (so each move narrows it), and starts copying it to E (OpRepair). Up to
//     maxMovesPerStep moves start per step; later ones plan as if the
//     earlier were done. Ties go to the lower peer ID and part CID.
//
// The tolerance defaults to twice the largest part on any peer: finer
// than that, a move could only swap which peer is fullest. The leader's
// repairer may end a move's repair first (keeping F too): step 1 then
// drops F if the others still meet rmin.
const maxMovesPerStep = 16

// rebalancer remembers the moves in flight: part -> the peer it leaves.
type rebalancer struct {
	mu     sync.Mutex
	moving map[cid.Cid]move
}

type move struct {
	root cid.Cid
	from peer.ID
}

func (p *Peer) rebalancer() *rebalancer {
	p.drainMu.Lock()
	defer p.drainMu.Unlock()
	if p.rebal == nil {
		p.rebal = &rebalancer{moving: map[cid.Cid]move{}}
	}
	return p.rebal
}

// rebalPart is a part with its holders.
type rebalPart struct {
	root, c cid.Cid
	holders []peer.ID
	size    int64
	rmin    int
}

// Rebalance takes one step (see above).
func (b backend) Rebalance(ctx context.Context, dryRun bool, tolerance int64) (api.RebalanceProgress, error) {
	var prog api.RebalanceProgress
	members, err := b.p.cons.Peers(ctx)
	if err != nil {
		return prog, mapErr(err)
	}
	rb := b.p.rebalancer()
	rb.mu.Lock()
	defer rb.mu.Unlock()
	r := b.p.drainer()
	gone := func(id peer.ID) bool { return !b.p.monitor.alive(id) }
	st := b.p.cons.State()
	repairs := map[cid.Cid]consensus.Repair{}
	for _, rp := range st.Repairs() {
		repairs[rp.Part] = rp
	}
	parts := map[cid.Cid]rebalPart{}
	byHolder := map[peer.ID][]rebalPart{}
	var largest int64
	st.Each(func(p consensus.Pin) bool {
		if p.RMin == consensus.Everywhere {
			return true // on every peer: nothing to move
		}
		p.EachPart(func(c cid.Cid, holders []peer.ID, size int64) {
			pt := rebalPart{p.CID, c, holders, size, p.RMin}
			parts[c] = pt
			for _, h := range holders {
				byHolder[h] = append(byHolder[h], pt)
			}
			largest = max(largest, size)
		})
		return true
	})
	problem := func(c cid.Cid, format string, args ...any) {
		if len(prog.Problems) < api.MaxFailures {
			prog.Problems = append(prog.Problems, fmt.Sprintf("%s: ", c)+fmt.Sprintf(format, args...))
		}
	}
	commit := func(c cid.Cid, op consensus.Op) bool {
		err := b.p.cons.Commit(ctx, op)
		if err != nil && !errors.Is(err, consensus.ErrStale) {
			problem(c, "%v", err)
		}
		return err == nil
	}
	now := time.Now().UTC()

	// 1. The moves in flight.
	ask := map[peer.ID][]string{}
	for c := range rb.moving {
		for _, id := range repairs[c].Pending {
			ask[id] = append(ask[id], c.String())
		}
	}
	answers := r.ask(ctx, ask)
	left := map[cid.Cid]peer.ID{} // moves this step ended: the peer each part left
	for c, mv := range rb.moving {
		pt, ok := parts[c]
		if !ok {
			delete(rb.moving, c) // unpinned meanwhile
			continue
		}
		rp, inRepair := repairs[c]
		if !inRepair {
			// The leader's repairer ended it keeping the old holder:
			// drop it if the others still meet rmin.
			others := slices.DeleteFunc(slices.Clone(pt.holders), func(id peer.ID) bool { return id == mv.from })
			switch {
			case len(others) == len(pt.holders) || len(others) < max(pt.rmin, 1):
				delete(rb.moving, c)
			case commit(c, consensus.ReallocOp(pt.root, c, pt.holders, others, now)):
				delete(rb.moving, c)
				left[c] = mv.from
			default:
				prog.Copying++ // this peer's state lags: again next step
			}
			continue
		}
		var done []peer.ID
		decided := 0
		for _, id := range rp.Pending {
			s, answered := answers[id][c.String()]
			switch {
			case answered && s.Status == api.StatusPinned:
				done = append(done, id)
				decided++
			case gone(id), answered && s.Status == api.StatusPinError:
				decided++
			}
		}
		if decided < len(rp.Pending) {
			prog.Copying++
			continue
		}
		to := pt.holders
		if len(done) > 0 {
			to = append(slices.DeleteFunc(slices.Clone(pt.holders), func(id peer.ID) bool { return id == mv.from }), done...)
		} else {
			problem(c, "the copy to %v failed", rp.Pending)
		}
		if commit(c, consensus.ReallocOp(pt.root, c, pt.holders, to, now)) {
			delete(rb.moving, c)
			if len(done) > 0 {
				left[c] = mv.from
			}
		} else {
			prog.Copying++ // the holders changed under it: again next step
		}
	}

	// 2. Plan new moves on the live peers' free space, counting the
	// moves in flight as done. Free space is each peer's room (capacity
	// less reserved, from its heartbeat) less the parts the state gives
	// it and the copies it is making, not the free space its heartbeat
	// reports: that shows a move that just ended only once the old
	// holder has deleted its copy and both peers have reported again,
	// and a step planning on it moved a part back to the peer it had
	// just left.
	allocated := map[peer.ID]int64{}
	for id, pts := range byHolder {
		for _, pt := range pts {
			allocated[id] += pt.size
		}
	}
	for c, rp := range repairs {
		for _, id := range rp.Pending {
			allocated[id] += parts[c].size
		}
	}
	for c, mv := range rb.moving {
		allocated[mv.from] -= parts[c].size
	}
	for c, from := range left { // the state above predates their reallocs
		allocated[from] -= parts[c].size
	}
	free := map[peer.ID]int64{}
	for _, m := range members {
		if met, _, fresh := b.p.monitor.metrics(m.ID); fresh {
			free[m.ID] = met.Capacity - met.Reserved - allocated[m.ID]
		}
	}
	if tolerance <= 0 {
		tolerance = 2 * max(largest, 1<<20)
	}
	prog.Tolerance = tolerance
	if len(free) < 2 {
		prog.Done = prog.Copying == 0
		return prog, nil
	}
	ids := make([]peer.ID, 0, len(free))
	for id := range free {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	extremes := func() (full, empty peer.ID) {
		full, empty = ids[0], ids[0]
		for _, id := range ids[1:] {
			if free[id] < free[full] {
				full = id
			}
			if free[id] > free[empty] {
				empty = id
			}
		}
		return full, empty
	}
	for len(prog.Moves) < maxMovesPerStep && ctx.Err() == nil {
		full, empty := extremes()
		spread := free[empty] - free[full]
		if spread <= tolerance {
			break
		}
		var best *rebalPart
		for i, pt := range byHolder[full] {
			_, busy := repairs[pt.c]
			_, moving := rb.moving[pt.c]
			if busy || moving || pt.size == 0 || pt.size > spread/2 || slices.Contains(pt.holders, empty) {
				continue
			}
			if best == nil || cmp.Or(cmp.Compare(pt.size, best.size), -cmp.Compare(pt.c.KeyString(), best.c.KeyString())) > 0 {
				best = &byHolder[full][i]
			}
		}
		if best == nil {
			break
		}
		mv := api.RebalanceMove{Root: best.root.String(), Part: best.c.String(), From: full.String(), To: empty.String(), Size: best.size}
		if !dryRun {
			if !commit(best.c, consensus.RepairOp(best.root, best.c, best.holders, []peer.ID{empty}, now)) {
				break
			}
			rb.moving[best.c] = move{root: best.root, from: full}
			prog.Copying++
			b.p.log("rebalance: moving %s of %s from %s to %s", best.c, best.root, full, empty)
		}
		prog.Moves = append(prog.Moves, mv)
		// Later picks see this move done.
		free[full] += best.size
		free[empty] -= best.size
		repairs[best.c] = consensus.Repair{}
	}
	full, empty := extremes()
	prog.Spread = free[empty] - free[full]
	prog.Done = len(prog.Moves) == 0 && prog.Copying == 0
	return prog, nil
}

var _ api.Rebalancer = backend{}
