package cluster

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/consensus"
)

// reapAdds ends sharded adds that can never finish, so that no shard is
// left that nobody can remove:
//
//   - at start, this peer aborts its own unfinished adds (it crashed or
//     was stopped while ingesting; the client saw the add fail);
//   - while it leads, it aborts adds whose owner is no member any more,
//     or has been unreachable for AbandonedAddGrace.
//
// Only the leader reaps others' adds, so two peers never race to decide.
func (p *Peer) reapAdds(ctx context.Context) {
	self := p.host.ID()
	own := true
	unreachable := map[peer.ID]time.Time{}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		adds := p.cons.State().Adds()
		if own && p.cons.Leader() != "" {
			// Wait for a leader so the aborts can commit; then once.
			own = false
			for _, a := range adds {
				if a.Owner == self && !p.adding(a.ID) && !p.isInterrupted(a.ID) {
					p.abortAdd(ctx, a.ID, "its peer restarted")
				}
			}
			close(p.ownReaped)
		}
		for _, id := range p.expiredInterrupts(time.Duration(p.cfg.Pinning.ResumeGrace)) {
			p.abortAdd(ctx, id, "its client went away and did not resume it in time")
		}
		if p.cons.Leader() == self {
			p.reapOthers(ctx, adds, unreachable)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Peer) reapOthers(ctx context.Context, adds []consensus.Add, unreachable map[peer.ID]time.Time) {
	now := time.Now()
	grace := time.Duration(p.cfg.Pinning.AbandonedAddGrace)
	seen := map[peer.ID]bool{}
	for _, a := range adds {
		if a.Owner == p.host.ID() {
			continue
		}
		seen[a.Owner] = true
		if !p.cons.IsMember(a.Owner) {
			p.abortAdd(ctx, a.ID, "its peer left the cluster")
			continue
		}
		var in info
		if err := p.call(ctx, a.Owner, protoInfo, struct{}{}, &in); err == nil {
			delete(unreachable, a.Owner)
			continue
		}
		since, ok := unreachable[a.Owner]
		if !ok {
			unreachable[a.Owner] = now
			continue
		}
		if now.Sub(since) >= grace {
			p.abortAdd(ctx, a.ID, "its peer has been unreachable for "+now.Sub(since).Round(time.Second).String())
		}
	}
	for id := range unreachable {
		if !seen[id] {
			delete(unreachable, id)
		}
	}
}

func (p *Peer) abortAdd(ctx context.Context, id, why string) {
	if err := (backend{p}).commitAddOp(ctx, consensus.AddAbortOp(id, time.Now().UTC())); err != nil {
		p.log("abort abandoned add %s (%s): %v", id, why, err)
		return
	}
	p.log("aborted add %s: %s", id, why)
}
