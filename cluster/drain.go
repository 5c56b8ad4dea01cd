package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/consensus"
)

// Draining empties a peer before it is removed (shoal peers rm), with the
// repairer's rules and ops. Each step looks at every part the state
// allocates to the peer D:
//
//   - a part whose live other holders are at least its rmin drops D at
//     once (OpRealloc from its holders to the others);
//   - a part below that gets new holders (repairer.choose, which never
//     picks D, a peer that failed to copy it, or one without room),
//     committed as pending (OpRepair); they copy it from its holders, D
//     included while it is up;
//   - a part whose repair is done (every pending peer holds it or failed)
//     drops D and the failed ones (OpRealloc to the others plus the new
//     holders); if every new holder failed, the repair ends with the
//     holders unchanged and the next step chooses again.
//
// Every op is a compare-and-set on the part's holders: the leader's
// repairer may act on the same parts meanwhile (it may, say, end a
// repair keeping D), and the loser's op fails and is decided again next
// step. The caller repeats steps until no part is left.

// drainer keeps, between steps, the peers that failed to copy a part.
func (p *Peer) drainer() *repairer {
	p.drainMu.Lock()
	defer p.drainMu.Unlock()
	if p.drain == nil {
		p.drain = &repairer{p: p, avoid: map[cid.Cid]map[peer.ID]time.Time{}}
	}
	return p.drain
}

// Drain takes one step of moving peer s's parts to other peers.
func (b backend) Drain(ctx context.Context, s string) (api.DrainProgress, error) {
	pid, err := peer.Decode(s)
	if err != nil {
		return api.DrainProgress{}, fmt.Errorf("%w: %q is not a peer ID", api.ErrBadRequest, s)
	}
	members, err := b.p.cons.Peers(ctx)
	if err != nil {
		return api.DrainProgress{}, mapErr(err)
	}
	if !slices.ContainsFunc(members, func(m consensus.Member) bool { return m.ID == pid }) {
		return api.DrainProgress{}, fmt.Errorf("%w: %s is not a member of the cluster", api.ErrNotFound, pid)
	}
	r := b.p.drainer()
	b.p.drainMu.Lock() // one step at a time: r.avoid is not shared
	defer b.p.drainMu.Unlock()
	return r.drainStep(ctx, pid, members)
}

// drainPart is a part of a pin that D holds.
type drainPart struct {
	root, c cid.Cid
	holders []peer.ID
	size    int64
	rmin    int
}

func (r *repairer) drainStep(ctx context.Context, pid peer.ID, members []consensus.Member) (api.DrainProgress, error) {
	prog := api.DrainProgress{Peer: pid.String()}
	isMember := map[peer.ID]bool{}
	for _, m := range members {
		isMember[m.ID] = true
	}
	grace := time.Duration(r.p.cfg.Health.RepairGrace)
	// gone: D itself, and holders repair would count as lost.
	gone := func(id peer.ID) bool { return id == pid || !isMember[id] || r.p.monitor.downFor(id) > grace }
	st := r.p.cons.State()
	repairs := map[cid.Cid]consensus.Repair{}
	for _, rp := range st.Repairs() {
		repairs[rp.Part] = rp
	}
	var parts []drainPart
	st.Each(func(p consensus.Pin) bool {
		p.EachPart(func(c cid.Cid, holders []peer.ID, size int64) {
			if slices.Contains(holders, pid) {
				parts = append(parts, drainPart{p.CID, c, holders, size, p.RMin})
			}
		})
		return true
	})
	prog.Parts = len(parts)
	// Where repairs run, ask their pending peers how far they got.
	ask := map[peer.ID][]string{}
	for _, pt := range parts {
		for _, id := range repairs[pt.c].Pending {
			if !gone(id) {
				ask[id] = append(ask[id], pt.c.String())
			}
		}
	}
	answers := r.ask(ctx, ask)
	cands := r.candidates(members, gone)
	problem := func(pt drainPart, format string, args ...any) {
		if len(prog.Problems) < api.MaxFailures {
			prog.Problems = append(prog.Problems, fmt.Sprintf("%s of %s: ", pt.c, pt.root)+fmt.Sprintf(format, args...))
		}
	}
	commit := func(pt drainPart, op consensus.Op) bool {
		err := r.p.cons.Commit(ctx, op)
		if err != nil && !errors.Is(err, consensus.ErrStale) {
			problem(pt, "%v", err)
		}
		return err == nil
	}
	now := time.Now()
	for _, pt := range parts {
		if ctx.Err() != nil {
			return prog, ctx.Err()
		}
		others := slices.DeleteFunc(slices.Clone(pt.holders), func(id peer.ID) bool { return id == pid })
		var live []peer.ID
		for _, h := range others {
			if !gone(h) {
				live = append(live, h)
			}
		}
		need := pt.rmin
		if need == consensus.Everywhere {
			need = 1
		}
		if rp, ok := repairs[pt.c]; ok {
			prog.Copying++
			var done []peer.ID
			decided := 0
			for _, id := range rp.Pending {
				s, answered := answers[id][pt.c.String()]
				switch {
				case answered && s.Status == api.StatusPinned:
					done = append(done, id)
					decided++
				case gone(id), answered && s.Status == api.StatusPinError:
					r.avoidFor(pt.c, id, now.Add(10*time.Minute))
					decided++
				}
			}
			if decided < len(rp.Pending) {
				continue // copies still running
			}
			to := append(others, done...)
			if len(done) == 0 {
				to = pt.holders // end the repair; the next step chooses again
			}
			if commit(pt, consensus.ReallocOp(pt.root, pt.c, pt.holders, to, now.UTC())) && len(done) > 0 {
				prog.Moved++
				prog.Copying--
			}
			continue
		}
		if len(live) >= need {
			if commit(pt, consensus.ReallocOp(pt.root, pt.c, pt.holders, others, now.UTC())) {
				prog.Moved++
			}
			continue
		}
		if len(live) == 0 && r.p.monitor.downFor(pid) > 0 {
			problem(pt, "no other peer holds it and %s is down: nothing to copy from", pid)
			continue
		}
		pending, err := r.choose(pt.c, pt.size, pt.rmin, max(pt.rmin, len(live)+1), live, cands)
		if err != nil {
			problem(pt, "%v", err)
			continue
		}
		if commit(pt, consensus.RepairOp(pt.root, pt.c, pt.holders, pending, now.UTC())) {
			assign(cands, pending, pt.size)
			prog.Copying++
			r.p.log("drain %s: copying %s of %s to %v", pid, pt.c, pt.root, pending)
		}
	}
	prog.Parts -= prog.Moved
	return prog, nil
}

var _ api.Drainer = backend{}
