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

	"github.com/shoal-project/shoal/allocate"
	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/consensus"
)

// Repair, run by the Raft leader only, so that one peer decides:
//
//  1. Repairs in progress (in the state): when every pending peer holds
//     the part, commit its new holders (the live old ones and the pending
//     ones; holders down past the grace are dropped, so they free the
//     space when they return). A pending peer that is down or reports
//     pin_error is dropped from the repair, and the part is decided again.
//  2. Parts with a holder down for more than health.repair_grace: while
//     the live holders are at least rmin, nothing moves (a peer down for
//     maintenance is not emptied); below rmin, the allocator picks new
//     peers up to rmax among the live ones with fresh metrics, and the
//     leader commits them as pending (OpRepair). Their trackers copy the
//     part from a live holder, verifying every block.
//
// Every decision is a compare-and-set on the part's holders, so a deposed
// leader's late decision fails instead of doubling a copy; a new leader
// finds the repairs in progress in the state and carries on.

// maxRepairsPerRound bounds the repairs one round starts: the copies run
// one at a time on each new holder anyway.
const maxRepairsPerRound = 1000

// repairer holds what the leader remembers between rounds. It is owned by
// the repair loop's goroutine.
type repairer struct {
	p *Peer
	// avoid are peers that failed to copy a part, not asked again for it
	// until the time they map to.
	avoid map[cid.Cid]map[peer.ID]time.Time
	// lost are the parts found with every holder gone, logged once.
	lost        map[cid.Cid]bool
	lastWalk    time.Time
	lastMembers string // the members at the last walk
}

func (p *Peer) runRepairs(ctx context.Context) {
	r := &repairer{p: p, avoid: map[cid.Cid]map[peer.ID]time.Time{}, lost: map[cid.Cid]bool{}}
	tick := time.NewTicker(p.monitor.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !p.cfg.Health.Repair || p.cons.Leader() != p.host.ID() {
			continue
		}
		if err := r.round(ctx); err != nil && ctx.Err() == nil {
			p.log("repair: %v", err)
		}
	}
}

// goneFunc returns what counts a holder as gone for repairs (and a part
// whose every holder is gone as lost): down past health.repair_grace, or
// no longer one of members.
func (p *Peer) goneFunc(members []consensus.Member) func(peer.ID) bool {
	isMember := map[peer.ID]bool{}
	for _, m := range members {
		isMember[m.ID] = true
	}
	grace := time.Duration(p.cfg.Health.RepairGrace)
	return func(id peer.ID) bool { return !isMember[id] || p.monitor.downFor(id) > grace }
}

func (r *repairer) round(ctx context.Context) error {
	members, err := r.p.cons.Peers(ctx)
	if err != nil {
		return err
	}
	gone := r.p.goneFunc(members)
	r.finish(ctx, gone)
	anyGone := false
	for _, m := range members {
		anyGone = anyGone || gone(m.ID)
	}
	// Walking the state costs ~0.1 s per 10^6 pins: done every round only
	// while a member is gone, else when the members change (a holder was
	// removed, a peer joined that can take copies) and now and then.
	ms := fmt.Sprint(members)
	if !anyGone && ms == r.lastMembers && time.Since(r.lastWalk) < repairWalkEvery {
		return nil
	}
	r.lastWalk, r.lastMembers = time.Now(), ms
	return r.start(ctx, members, gone)
}

// repairWalkEvery is how often the leader looks for under-replicated
// parts when every member is up.
const repairWalkEvery = 30 * time.Second

// finish ends the repairs whose pending peers all hold their part, and
// drops pending peers that are gone or failed.
func (r *repairer) finish(ctx context.Context, gone func(peer.ID) bool) {
	st := r.p.cons.State()
	repairs := st.Repairs()
	if len(repairs) == 0 {
		return
	}
	// Ask each pending peer about its parts, one request per peer.
	ask := map[peer.ID][]string{}
	for _, rp := range repairs {
		for _, id := range rp.Pending {
			if !gone(id) {
				ask[id] = append(ask[id], rp.Part.String())
			}
		}
	}
	answers := r.ask(ctx, ask)
	now := time.Now()
	for _, rp := range repairs {
		part, ok := st.Part(rp.Part)
		if !ok {
			continue
		}
		var done, failed []peer.ID
		for _, id := range rp.Pending {
			s, answered := answers[id][rp.Part.String()]
			switch {
			case answered && s.Status == api.StatusPinned:
				done = append(done, id)
			case gone(id), answered && s.Status == api.StatusPinError:
				failed = append(failed, id)
				r.avoidFor(rp.Part, id, now.Add(10*time.Minute))
			}
		}
		if len(done)+len(failed) < len(rp.Pending) {
			continue // copies still running
		}
		// The live holders and the new ones; the gone ones too while
		// those are fewer than rmin (they may come back).
		var to []peer.ID
		for _, h := range part.Holders {
			if !gone(h) {
				to = append(to, h)
			}
		}
		to = append(to, done...)
		if pin, _ := st.Get(rp.Root); len(to) < pin.RMin || len(to) == 0 {
			to = append(slices.Clone(part.Holders), done...)
		}
		op := consensus.ReallocOp(rp.Root, rp.Part, part.Holders, to, now.UTC())
		if err := r.p.cons.Commit(ctx, op); err != nil {
			r.p.log("repair %s of %s: %v", rp.Part, rp.Root, err)
			continue
		}
		r.p.log("repair %s of %s: held by %d peers (%d copied, %d failed)", rp.Part, rp.Root, len(to), len(done), len(failed))
	}
}

// ask asks each peer for its status of the parts it maps to, one request
// per peer, concurrently; peers that did not answer are left out.
func (r *repairer) ask(ctx context.Context, ask map[peer.ID][]string) map[peer.ID]map[string]api.PeerStatus {
	answers := map[peer.ID]map[string]api.PeerStatus{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, keys := range ask {
		wg.Go(func() {
			var out map[string]api.PeerStatus
			var err error
			if id == r.p.host.ID() {
				var body any
				body, err = r.p.serveStatus(ctx, id, statusReq{Shards: keys})
				out, _ = body.(map[string]api.PeerStatus)
			} else {
				err = r.p.call(ctx, id, protoStatus, statusReq{Shards: keys}, &out)
			}
			if err == nil {
				mu.Lock()
				answers[id] = out
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return answers
}

func (r *repairer) avoidFor(part cid.Cid, id peer.ID, until time.Time) {
	if r.avoid[part] == nil {
		r.avoid[part] = map[peer.ID]time.Time{}
	}
	r.avoid[part][id] = until
}

func (r *repairer) avoided(part cid.Cid, id peer.ID) bool {
	until, ok := r.avoid[part][id]
	if ok && time.Now().After(until) {
		delete(r.avoid[part], id)
		return false
	}
	return ok
}

// start commits repairs for the parts whose live holders fell below rmin.
func (r *repairer) start(ctx context.Context, members []consensus.Member, gone func(peer.ID) bool) error {
	st := r.p.cons.State()
	// Candidates: live members with fresh metrics. Their figures change
	// as this round assigns parts, so one round does not overfill a peer.
	free := r.candidates(members, gone)
	inRepair := map[cid.Cid]bool{}
	for _, rp := range st.Repairs() {
		inRepair[rp.Part] = true
	}
	started := 0
	var errs []error
	lostNow := map[cid.Cid]bool{}
	defer func() {
		if started < maxRepairsPerRound { // the walk went through every pin
			for c := range r.lost {
				if !lostNow[c] {
					delete(r.lost, c)
				}
			}
		}
	}()
	st.Each(func(p consensus.Pin) bool {
		if ctx.Err() != nil || started >= maxRepairsPerRound {
			return false
		}
		if p.RMin == consensus.Everywhere {
			return true // held by every peer: nothing to re-allocate
		}
		type part struct {
			c       cid.Cid
			holders []peer.ID
			size    int64
		}
		var parts []part
		p.EachPart(func(c cid.Cid, holders []peer.ID, size int64) { parts = append(parts, part{c, holders, size}) })
		for _, pt := range parts {
			if inRepair[pt.c] {
				continue
			}
			var live []peer.ID
			for _, h := range pt.holders {
				if !gone(h) {
					live = append(live, h)
				}
			}
			if len(live) >= p.RMin || len(live) == len(pt.holders) {
				continue
			}
			if len(live) == 0 {
				// Lost (status says so): nothing to copy from. Said once
				// a part, not every round.
				if !r.lost[pt.c] {
					r.lost[pt.c] = true
					r.p.log("repair: %s of %s is lost: every holder is gone, nothing to copy from; it stays lost until one returns or `shoal pin rm %s`", pt.c, p.CID, p.CID)
				}
				lostNow[pt.c] = true
				continue
			}
			pending, err := r.choose(pt.c, pt.size, p.RMin, p.RMax, live, free)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s of %s: %w", pt.c, p.CID, err))
				continue
			}
			op := consensus.RepairOp(p.CID, pt.c, pt.holders, pending, time.Now().UTC())
			if err := r.p.cons.Commit(ctx, op); err != nil {
				if !errors.Is(err, consensus.ErrStale) {
					errs = append(errs, err)
				}
				continue
			}
			inRepair[pt.c] = true
			assign(free, pending, pt.size)
			started++
			r.p.log("repair %s of %s: %d of %d holders live (rmin %d); copying to %v", pt.c, p.CID, len(live), len(pt.holders), p.RMin, pending)
		}
		return true
	})
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

// candidates are the live members with fresh metrics, as the allocator
// sees them.
func (r *repairer) candidates(members []consensus.Member, gone func(peer.ID) bool) map[peer.ID]allocate.Candidate {
	out := map[peer.ID]allocate.Candidate{}
	for _, m := range members {
		if met, _, fresh := r.p.monitor.metrics(m.ID); fresh && !gone(m.ID) {
			out[m.ID] = allocate.Candidate{ID: m.ID.String(), Free: met.Free, Used: met.Used, Shards: met.Shards}
		}
	}
	return out
}

// assign counts a part of size bytes as stored on peers.
func assign(cands map[peer.ID]allocate.Candidate, peers []peer.ID, size int64) {
	for _, id := range peers {
		if c, ok := cands[id]; ok {
			c.Free, c.Used, c.Shards = c.Free-size, c.Used+size, c.Shards+1
			cands[id] = c
		}
	}
}

// choose picks the new holders of a part: up to rmax with the live ones,
// at least one, among the candidates with room that are not avoided.
func (r *repairer) choose(part cid.Cid, size int64, rmin, rmax int, live []peer.ID, free map[peer.ID]allocate.Candidate) ([]peer.ID, error) {
	cur := make([]string, len(live))
	for i, id := range live {
		cur[i] = id.String()
	}
	pick := func(avoid bool) ([]string, error) {
		var cands []allocate.Candidate
		for id, c := range free {
			if !avoid || !r.avoided(part, id) || slices.Contains(live, id) {
				cands = append(cands, c)
			}
		}
		slices.SortFunc(cands, func(a, b allocate.Candidate) int { return cmp.Compare(a.ID, b.ID) })
		// Ask for rmin, else for one more than the live holders: a part
		// below its minimum gains what it can.
		strategy := r.p.cfg.Health.Allocator
		ids, err := allocate.Allocate(allocate.Request{Size: size, RMin: rmin, RMax: rmax, Current: cur, Strategy: strategy}, cands)
		if err != nil {
			ids, err = allocate.Allocate(allocate.Request{Size: size, RMin: len(live) + 1, RMax: max(rmax, len(live)+1),
				Current: cur, Strategy: strategy}, cands)
		}
		return ids, err
	}
	// Peers that failed to copy this part come last: tried again when no
	// other can take it (a copy can fail for a passing reason, like a
	// holder restarting, and a small cluster may have no one else).
	ids, err := pick(true)
	if err != nil {
		ids, err = pick(false)
	}
	if err != nil {
		return nil, err
	}
	var pending []peer.ID
	for _, s := range ids {
		id, _ := peer.Decode(s)
		if !slices.Contains(live, id) {
			pending = append(pending, id)
		}
	}
	if len(pending) == 0 {
		return nil, errors.New("no live peer with room to copy it to")
	}
	return pending, nil
}

// Lost lists the parts whose every holder is gone, as status counts them
// lost: pins everywhere are left out (any peer that returns holds them).
func (b backend) Lost(ctx context.Context) ([]api.LostPart, error) {
	members, err := b.p.cons.Peers(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	gone := b.p.goneFunc(members)
	st := b.p.cons.State()
	var out []api.LostPart
	st.Each(func(p consensus.Pin) bool {
		if p.RMax == consensus.Everywhere {
			return true
		}
		p.EachPart(func(c cid.Cid, holders []peer.ID, _ int64) {
			if len(holders) == 0 || slices.IndexFunc(holders, func(h peer.ID) bool { return !gone(h) }) >= 0 {
				return
			}
			lp := api.LostPart{Root: p.CID.String(), Name: p.Name, Part: c.String(), Kind: api.PartUnknown}
			if part, ok := st.Part(c); ok {
				lp.Kind = partKind(part.Kind)
			}
			for _, h := range holders {
				lp.Holders = append(lp.Holders, h.String())
			}
			out = append(out, lp)
		})
		return ctx.Err() == nil
	})
	slices.SortFunc(out, func(a, b api.LostPart) int { return cmp.Or(cmp.Compare(a.Root, b.Root), cmp.Compare(a.Part, b.Part)) })
	return out, ctx.Err()
}

var _ api.LostReporter = backend{}
