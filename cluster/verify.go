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
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/store"
)

// Verification re-hashes stored parts (store.Verify, one shard file at a
// time) to find silent corruption while a healthy copy still exists
// elsewhere. A damaged part is quarantined (moved to the store's
// corrupt/ directory, kept for a post-mortem); the state still wants it
// here, so the tracker fetches it again from another holder, checking
// every block.
//
// It runs when an operator asks (shoal verify, on one peer or through
// /shoal/verify/1 on every member) and every health.verify_interval on
// each peer (runVerify). Both hold Peer.verifyMu for one shard at a time,
// so a peer never re-hashes two shards at once; the periodic walk rests
// as long as each shard took, so it uses at most half of the disk's time.

// protoVerify asks a peer to verify the parts it stores.
const protoVerify protocol.ID = "/shoal/verify/1"

// verifyRPCTimeout bounds a verification asked of another member: long
// enough to re-hash a few TB at disk speed. A client that goes away does
// not stop a remote verification before then.
const verifyRPCTimeout = 6 * time.Hour

type verifyReq struct {
	// CID is the pin whose parts to verify; empty: every stored part.
	CID string `json:"cid,omitempty"`
}

// verifyItem is a part to verify.
type verifyItem struct {
	key    cid.Cid
	root   string
	kind   string
	wanted bool // allocated here: missing is worth reporting
}

// partKind names a consensus part kind for the API.
func partKind(k consensus.PartKind) string {
	switch k {
	case consensus.PartPlain:
		return api.PartPlain
	case consensus.PartShard:
		return api.PartShard
	case consensus.PartClusterDAG:
		return api.PartClusterDAG
	}
	return api.PartUnknown
}

// verifyItems lists what to verify here: the parts of root stored or
// allocated here, or with root undefined every stored shard and every
// part the state allocates here (those not stored are reported missing).
func (p *Peer) verifyItems(root cid.Cid) ([]verifyItem, error) {
	st, self := p.cons.State(), p.host.ID()
	if !root.Defined() {
		var out []verifyItem
		stored := map[cid.Cid]bool{}
		for _, sh := range p.store.Shards() {
			c, err := cid.Decode(sh.Key)
			if err != nil {
				continue // not a key this daemon writes
			}
			stored[c] = true
			it := verifyItem{key: c, kind: api.PartUnknown}
			if part, ok := st.Part(c); ok {
				it.root, it.kind = part.Root.String(), partKind(part.Kind)
				it.wanted = slices.Contains(part.Holders, self)
			}
			out = append(out, it)
		}
		st.Each(func(pin consensus.Pin) bool {
			pin.EachPart(func(c cid.Cid, holders []peer.ID, _ int64) {
				here := slices.Contains(holders, self) || (pin.Kind == consensus.KindPlain && allocatedHere(pin, self))
				if stored[c] || !here {
					return
				}
				stored[c] = true // a shard two files share is listed once
				it := verifyItem{key: c, root: pin.CID.String(), kind: api.PartUnknown, wanted: true}
				if part, ok := st.Part(c); ok {
					it.kind = partKind(part.Kind)
				}
				out = append(out, it)
			})
			return true
		})
		return out, nil
	}
	pin, ok := st.Get(root)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not pinned", api.ErrNotFound, root)
	}
	r := root.String()
	if pin.Kind == consensus.KindPlain {
		return []verifyItem{{key: root, root: r, kind: api.PartPlain, wanted: allocatedHere(pin, self)}}, nil
	}
	out := []verifyItem{{key: pin.ClusterDAG, root: r, kind: api.PartClusterDAG, wanted: slices.Contains(pin.Allocations, self)}}
	for _, sh := range pin.Shards {
		out = append(out, verifyItem{key: sh.CID, root: r, kind: api.PartShard, wanted: slices.Contains(sh.Allocations, self)})
	}
	return out, nil
}

// verifyLocal verifies the parts of root (every stored part when root is
// undefined) on this peer.
func (p *Peer) verifyLocal(ctx context.Context, root cid.Cid) ([]api.VerifyResult, error) {
	items, err := p.verifyItems(root)
	if err != nil {
		return nil, err
	}
	out := []api.VerifyResult{}
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !p.store.HasShard(it.key.String()) && !it.wanted {
			continue // another peer's part
		}
		res := api.VerifyResult{Peer: p.host.ID().String(), Name: p.cfg.PeerName, Root: it.root, Part: it.key.String(), Kind: it.kind}
		res.Status, res.Error = p.verifyPart(ctx, it.key)
		out = append(out, res)
	}
	return out, nil
}

// verifyPart re-hashes the part stored under c, quarantines it if it is
// damaged and has the tracker look at it again. It returns an
// api.Verify* status and the damage or error.
func (p *Peer) verifyPart(ctx context.Context, c cid.Cid) (string, string) {
	key := c.String()
	p.verifyMu.Lock()
	err := p.store.Verify(ctx, key)
	p.verifyMu.Unlock()
	var ce *store.CorruptError
	switch {
	case err == nil:
		return api.VerifyOK, ""
	case errors.Is(err, store.ErrNotFound):
		st := p.tracker.shardStatus(c)
		msg := "not stored here; the tracker says " + st.Status
		if st.Error != "" {
			msg += ": " + st.Error
		}
		return api.VerifyMissing, msg
	case errors.As(err, &ce):
		dst, qerr := p.store.QuarantineShard(key, err)
		if qerr != nil {
			p.log("verify: %v; quarantine: %v", ce, qerr)
		} else {
			p.log("verify: %v; moved to %s, fetching a good copy", ce, dst)
		}
		p.tracker.recheck(c)
		return api.VerifyCorrupt, ce.Error()
	}
	return api.VerifyError, err.Error()
}

func (p *Peer) serveVerify(ctx context.Context, _ peer.ID, req verifyReq) (any, error) {
	var root cid.Cid
	if req.CID != "" {
		c, err := peerCID(req.CID)
		if err != nil {
			return nil, err
		}
		root = c
	}
	ctx, cancel := context.WithTimeout(ctx, verifyRPCTimeout)
	defer cancel()
	return p.verifyLocal(ctx, root)
}

// Verify re-hashes the parts of pin s (every stored part when s is "")
// on this peer, or on every member unless local.
func (b backend) Verify(ctx context.Context, s string, local bool) ([]api.VerifyResult, error) {
	var root cid.Cid
	if s != "" {
		c, err := parseCID(s)
		if err != nil {
			return nil, err
		}
		st := b.p.cons.State()
		if _, ok := st.Get(c); !ok {
			if owner, ok := st.ShardOwner(c); ok {
				return nil, fmt.Errorf("%w: %s is part of the sharded pin %s; verify %s instead", api.ErrBadRequest, c, owner, owner)
			}
			return nil, fmt.Errorf("%w: %s is not pinned", api.ErrNotFound, c)
		}
		root = c
	}
	self := b.p.host.ID()
	ids := []peer.ID{self}
	if !local {
		members, err := b.p.cons.Peers(ctx)
		if err != nil {
			return nil, mapErr(err)
		}
		ids = ids[:0]
		for _, m := range members {
			ids = append(ids, m.ID)
		}
	}
	results := make([][]api.VerifyResult, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			var res []api.VerifyResult
			var err error
			if id == self {
				res, err = b.p.verifyLocal(ctx, root)
			} else {
				err = b.p.callFor(ctx, id, protoVerify, verifyReq{CID: s}, &res, verifyRPCTimeout)
			}
			if err != nil {
				met, _, _ := b.p.monitor.metrics(id)
				res = []api.VerifyResult{{Peer: id.String(), Name: met.Name, Status: api.VerifyUnreachable, Error: err.Error()}}
			}
			results[i] = res
		})
	}
	wg.Wait()
	out := slices.Concat(results...)
	slices.SortStableFunc(out, func(a, b api.VerifyResult) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Peer, b.Peer), cmp.Compare(a.Root, b.Root), cmp.Compare(a.Part, b.Part))
	})
	if out == nil {
		out = []api.VerifyResult{}
	}
	return out, nil
}

var _ api.Verifier = backend{}

// runVerify re-hashes every stored shard each health.verify_interval,
// one at a time, resting after each as long as it took. The first pass
// starts one interval after the daemon: a restart does not re-read
// everything.
func (p *Peer) runVerify(ctx context.Context) {
	every := time.Duration(p.cfg.Health.VerifyInterval)
	if every <= 0 {
		return
	}
	next := time.Now().Add(every)
	for {
		if !sleepCtx(ctx, time.Until(next)) {
			return
		}
		start, damaged, n := time.Now(), 0, 0
		for _, sh := range p.store.Shards() {
			c, err := cid.Decode(sh.Key)
			if err != nil {
				continue
			}
			t0 := time.Now()
			status, _ := p.verifyPart(ctx, c)
			if ctx.Err() != nil {
				return
			}
			n++
			if status == api.VerifyCorrupt {
				damaged++
			}
			if !sleepCtx(ctx, time.Since(t0)) {
				return
			}
		}
		p.log("verify: %d shards re-hashed in %s, %d damaged", n, time.Since(start).Round(time.Millisecond), damaged)
		next = start.Add(every)
	}
}

// sleepCtx waits d, and returns false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
