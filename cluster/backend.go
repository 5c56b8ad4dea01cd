package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/allocate"
	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ingest"
	"github.com/shoal-project/shoal/store"
)

// backend serves the REST API from a Peer.
type backend struct{ p *Peer }

var _ api.Backend = backend{}

func (b backend) ID(context.Context) api.ID {
	id := api.ID{ID: b.p.host.ID().String(), Name: b.p.cfg.PeerName, Addresses: b.p.fullAddrs(), Version: b.p.opts.Version,
		Gateway: b.p.GatewayURL()}
	if b.p.ipfs != nil {
		id.IPFS = &api.IPFSHost{ID: b.p.IPFSID(), Addresses: b.p.IPFSAddrs()}
	}
	return id
}

// mapErr turns consensus errors into the API's sentinels.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrClosed):
		return fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	case errors.Is(err, consensus.ErrInvalidOp):
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	case errors.Is(err, consensus.ErrUnknownPeer), errors.Is(err, consensus.ErrNotPinned):
		return fmt.Errorf("%w: %v", api.ErrNotFound, err)
	}
	return err
}

// ReadBarrier makes the API's reads linearizable (consensus.ReadBarrier),
// or reports how current a stale read is.
func (b backend) ReadBarrier(ctx context.Context, stale bool) (api.ReadInfo, error) {
	ri := b.p.cons.Info()
	if !stale {
		var err error
		if ri, err = b.p.cons.ReadBarrier(ctx); err != nil {
			return api.ReadInfo{}, mapErr(err)
		}
	}
	out := api.ReadInfo{Applied: ri.Applied, Leader: ri.Leader, LastContact: -1}
	if !ri.LastContact.IsZero() {
		out.LastContact = max(time.Since(ri.LastContact), 0)
	}
	if ri.Leader {
		out.LastContact = 0
	}
	return out, nil
}

// peerInfo is one member with what it answered (or why it did not).
type peerInfo struct {
	member consensus.Member
	info   info
	err    error
}

// candidate is the member as an allocator sees it.
func (pi peerInfo) candidate() allocate.Candidate {
	return allocate.Candidate{ID: pi.member.ID.String(), Free: pi.info.Free, Used: pi.info.Used, Shards: pi.info.Shards}
}

// survey asks every member for its info, concurrently.
func (b backend) survey(ctx context.Context) ([]peerInfo, error) {
	members, err := b.p.cons.Peers(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]peerInfo, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		out[i].member = m
		if m.ID == b.p.host.ID() {
			out[i].info = b.p.localInfo()
			continue
		}
		wg.Go(func() {
			if out[i].err = b.p.call(ctx, m.ID, protoInfo, struct{}{}, &out[i].info); out[i].err == nil {
				out[i].err = out[i].info.check()
			}
		})
	}
	wg.Wait()
	return out, nil
}

// surveyMaxAge is how old a survey pin allocation may use: at 1,000 pins
// a second, a fresh survey per pin was a third of the daemons' CPU
// (bench/RESULTS.md); free space changes little in a second, and a sharded
// add, which fills peers fast, surveys afresh per shard.
const surveyMaxAge = time.Second

// recentSurvey is survey, reusing one at most surveyMaxAge old.
func (b backend) recentSurvey(ctx context.Context) ([]peerInfo, error) {
	b.p.surveyMu.Lock()
	defer b.p.surveyMu.Unlock()
	if time.Since(b.p.surveyAt) < surveyMaxAge {
		return b.p.surveyCache, nil
	}
	infos, err := b.survey(ctx)
	if err != nil {
		return nil, err
	}
	b.p.surveyAt, b.p.surveyCache = time.Now(), infos
	return infos, nil
}

func (b backend) Peers(ctx context.Context) ([]api.Peer, error) {
	infos, err := b.survey(ctx)
	if err != nil {
		return nil, err
	}
	leader := b.p.cons.Leader()
	out := make([]api.Peer, 0, len(infos))
	for _, pi := range infos {
		role := "follower"
		switch {
		case pi.member.ID == leader:
			role = "leader"
		case !pi.member.Voter:
			role = "nonvoter"
		}
		ap := api.Peer{ID: pi.member.ID.String(), Name: pi.info.Name, Role: role, Alive: pi.err == nil,
			Capacity: pi.info.Capacity, Used: pi.info.Used, Free: pi.info.Free}
		ap.Addresses = pi.info.Addresses
		if pi.err != nil {
			ap.Error = pi.err.Error()
			for _, a := range b.p.host.PeerAddrs(pi.member.ID) {
				ap.Addresses = append(ap.Addresses, a.String()+"/p2p/"+pi.member.ID.String())
			}
		}
		if ap.Addresses == nil {
			ap.Addresses = []string{}
		}
		out = append(out, ap)
	}
	return out, nil
}

func (b backend) RemovePeer(ctx context.Context, id string) error {
	pid, err := peer.Decode(id)
	if err != nil {
		return fmt.Errorf("%w: %q is not a peer ID", api.ErrBadRequest, id)
	}
	// Learn where the peer is before it leaves the configuration, to tell
	// it afterwards.
	b.p.learnAddrs(ctx, pid)
	// Recorded first, so that a removal is never without its record: every
	// member then blocks the peer, and a removed peer that still holds
	// the secret cannot join again as itself. If the removal below fails,
	// the record stays and the same call completes it.
	if b.p.cons.IsMember(pid) {
		if err := b.commitRetrying(ctx, consensus.RemovedOp(pid, time.Now().UTC())); err != nil {
			return err
		}
	}
	if err := b.p.cons.RemovePeer(ctx, pid); err != nil {
		return mapErr(err)
	}
	if pid != b.p.host.ID() {
		// Best effort: a peer that is down learns it when it restarts
		// and finds every member refusing it.
		if err := b.p.call(ctx, pid, protoRemoved, struct{}{}, &struct{}{}); err != nil {
			b.p.log("tell %s it was removed: %v", pid, err)
		}
	} else {
		b.p.markRemoved()
	}
	return nil
}

func toAPIPin(p consensus.Pin) api.Pin {
	allocs := make([]string, len(p.Allocations))
	for i, a := range p.Allocations {
		allocs[i] = a.String()
	}
	return api.Pin{CID: p.CID.String(), Name: p.Name, RMin: p.RMin, RMax: p.RMax, Allocations: allocs,
		Created: p.Created, Updated: p.Updated}
}

// parseCID decodes a CID from an API request and refuses one whose hash
// shoal does not accept (dag.CheckCID).
func parseCID(s string) (cid.Cid, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %q is not a CID", api.ErrBadRequest, s)
	}
	if err := dag.CheckCID(c); err != nil {
		return cid.Undef, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	return c, nil
}

func (b backend) Pin(ctx context.Context, req api.PinRequest) (api.Pin, error) {
	c, err := parseCID(req.CID)
	if err != nil {
		return api.Pin{}, err
	}
	p, err := b.pin(ctx, c, req.Name, req.RMin, req.RMax, 0, nil)
	if err != nil {
		return api.Pin{}, err
	}
	if req.Wait {
		if err := b.waitPinned(ctx, p, req.Timeout); err != nil {
			return toAPIPin(p), err
		}
	}
	return toAPIPin(p), nil
}

// pin allocates and commits a pin of c. prefer are peers that hold the
// content already.
func (b backend) pin(ctx context.Context, c cid.Cid, name string, rmin, rmax int, size int64, prefer []peer.ID) (consensus.Pin, error) {
	if rmin == 0 {
		rmin = b.p.cfg.Pinning.ReplicationMin
	}
	if rmax == 0 {
		rmax = b.p.cfg.Pinning.ReplicationMax
		if rmin > rmax || rmin == consensus.Everywhere {
			rmax = rmin
		}
	}
	if err := config.CheckReplication(rmin, rmax); err != nil {
		return consensus.Pin{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	pin := consensus.NewPin(c)
	pin.Name, pin.RMin, pin.RMax = name, rmin, rmax
	now := time.Now().UTC()
	pin.Created = now
	current := prefer
	if old, ok := b.p.cons.State().Get(c); ok {
		pin.Created = old.Created
		current = append(slices.Clone(old.Allocations), prefer...)
	}
	if rmax != consensus.Everywhere {
		infos, err := b.recentSurvey(ctx)
		if err != nil {
			return consensus.Pin{}, err
		}
		var cands []allocate.Candidate
		for _, pi := range infos {
			if pi.err == nil {
				cands = append(cands, pi.candidate())
			}
		}
		cur := make([]string, len(current))
		for i, a := range current {
			cur[i] = a.String()
		}
		ids, err := allocate.Allocate(allocate.Request{Size: size, RMin: rmin, RMax: rmax, Current: cur,
			Strategy: b.p.cfg.Health.Allocator}, cands)
		if err != nil {
			return consensus.Pin{}, fmt.Errorf("%w: pin %s: %v", api.ErrConflict, c, err)
		}
		for _, id := range ids {
			pid, _ := peer.Decode(id)
			pin.Allocations = append(pin.Allocations, pid)
		}
	}
	pin.Updated = now
	if err := b.commitRetrying(ctx, consensus.PinOp(pin, now)); err != nil {
		return consensus.Pin{}, err
	}
	b.readOwnWrite(ctx, func() bool {
		got, ok := b.p.cons.State().Get(c)
		return ok && got.Updated.Equal(now)
	})
	b.p.tracker.wake()
	return pin, nil
}

// commitRetrying commits an op that may be applied twice with the same
// outcome (a pin op: the second sets what the first set), retrying when
// the leader changed before the outcome was known. Its error is a
// maybeCommitted when some attempt may have reached the log: the op can
// still take effect after the error.
func (b backend) commitRetrying(ctx context.Context, op consensus.Op) error {
	var err error
	unsure := false
	for range 3 {
		err = b.p.cons.Commit(ctx, op)
		unsure = unsure || mayHaveCommitted(err)
		if !errors.Is(err, consensus.ErrOutcomeUnknown) || ctx.Err() != nil {
			break
		}
	}
	if err != nil && unsure {
		if !errors.Is(err, consensus.ErrOutcomeUnknown) {
			err = fmt.Errorf("%w (an earlier attempt may still take effect)", mapErr(err))
		}
		return maybeCommitted{mapErr(err)}
	}
	return mapErr(err)
}

// mayHaveCommitted reports whether a failed Commit may have put its op in
// the log all the same. It did not when no leader took the op, or when
// the op committed and Apply refused it.
func mayHaveCommitted(err error) bool {
	switch {
	case err == nil,
		errors.Is(err, consensus.ErrInvalidOp), errors.Is(err, consensus.ErrNotPinned),
		errors.Is(err, consensus.ErrUnknownPeer):
		return false
	case errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrNotLeader):
		// onLeader gives up only on leaders that never took the op.
		return errors.Is(err, consensus.ErrOutcomeUnknown)
	}
	return true
}

// maybeCommitted is the error of a commit that may take effect later, for
// instance after its leader lost the leadership or the caller gave up
// waiting: whatever the op needs (the blocks of an add) must stay.
type maybeCommitted struct{ error }

func (e maybeCommitted) Unwrap() error { return e.error }

// readOwnWrite waits, briefly, until this peer has applied a commit it
// made, so that a client reading from the same peer next sees it. A
// follower applies a commit within a heartbeat of the leader.
func (b backend) readOwnWrite(ctx context.Context, applied func() bool) {
	timer := time.NewTimer(b.p.rpcTimeout)
	defer timer.Stop()
	st := b.p.cons.State()
	for {
		changed := st.Changed() // before the check: no change is missed
		if applied() {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// waitPinned polls the pin's status until RMin peers report it pinned.
func (b backend) waitPinned(ctx context.Context, p consensus.Pin, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	need := p.RMin
	for {
		st, err := b.Status(ctx, p.CID.String(), false)
		if err == nil {
			n := 0
			for _, ps := range st.Peers {
				if ps.Status == api.StatusPinned {
					n++
				}
			}
			if need == consensus.Everywhere {
				need = len(st.Peers)
			}
			if n >= need {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s is not pinned on %d peers after %s", p.CID, need, timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (b backend) Unpin(ctx context.Context, s string) (api.Pin, error) {
	c, err := parseCID(s)
	if err != nil {
		return api.Pin{}, err
	}
	pin, ok := b.p.cons.State().Get(c)
	if !ok {
		if root, ok := b.p.cons.State().ShardOwner(c); ok {
			return api.Pin{}, fmt.Errorf("%w: %s is part of the sharded pin %s; unpin %s instead", api.ErrBadRequest, c, root, root)
		}
		return api.Pin{}, fmt.Errorf("%w: %s is not pinned", api.ErrNotFound, c)
	}
	if err := b.p.cons.Commit(ctx, consensus.UnpinOp(c, time.Now().UTC())); err != nil {
		return api.Pin{}, mapErr(err)
	}
	b.readOwnWrite(ctx, func() bool { _, ok := b.p.cons.State().Get(c); return !ok })
	b.p.tracker.wake()
	return toAPIPin(pin), nil
}

func (b backend) Pins(context.Context) ([]api.Pin, error) {
	pins := b.p.cons.State().Pins()
	out := make([]api.Pin, len(pins))
	for i, p := range pins {
		out[i] = toAPIPin(p)
	}
	return out, nil
}

func (b backend) Status(ctx context.Context, s string, local bool) (api.PinStatus, error) {
	c, err := parseCID(s)
	if err != nil {
		return api.PinStatus{}, err
	}
	pin, ok := b.p.cons.State().Get(c)
	if !ok {
		return api.PinStatus{}, fmt.Errorf("%w: %s is not pinned", api.ErrNotFound, c)
	}
	members, err := b.p.cons.Peers(ctx)
	if err != nil {
		return api.PinStatus{}, mapErr(err)
	}
	return b.status(ctx, pin, local, b.p.goneFunc(members))
}

// status asks the holders of pin for their state of its parts; gone says
// which holders count as gone, for parts that are lost.
func (b backend) status(ctx context.Context, pin consensus.Pin, local bool, gone func(peer.ID) bool) (api.PinStatus, error) {
	ap := toAPIPin(pin)
	st := api.PinStatus{CID: ap.CID, Name: ap.Name, RMin: ap.RMin, RMax: ap.RMax, Allocations: ap.Allocations,
		Peers: map[string]api.PeerStatus{}, Size: pin.Size}
	if pin.Kind == consensus.KindSharded {
		st.ClusterDAG = pin.ClusterDAG.String()
	}
	self := b.p.host.ID()
	holders := pin.Allocations
	if pin.RMax == consensus.Everywhere && pin.Kind != consensus.KindSharded {
		members, err := b.p.cons.Peers(ctx)
		if err != nil {
			return api.PinStatus{}, mapErr(err)
		}
		holders = nil
		for _, m := range members {
			holders = append(holders, m.ID)
		}
	}
	if local {
		holders = []peer.ID{self}
	}
	// One request per peer, for the pin and for every shard it holds.
	type query struct {
		cids, shards []string
	}
	queries := map[peer.ID]*query{}
	q := func(id peer.ID) *query {
		if queries[id] == nil {
			queries[id] = &query{}
		}
		return queries[id]
	}
	sharded := pin.Kind == consensus.KindSharded
	for _, h := range holders {
		if sharded {
			q(h).shards = append(q(h).shards, pin.ClusterDAG.String())
		} else {
			q(h).cids = append(q(h).cids, pin.CID.String())
		}
	}
	for _, sh := range pin.Shards {
		for _, a := range sh.Allocations {
			if !local || a == self {
				q(a).shards = append(q(a).shards, sh.CID.String())
			}
		}
	}
	answers := make(map[peer.ID]map[string]api.PeerStatus, len(queries))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, qu := range queries {
		wg.Go(func() {
			resp := map[string]api.PeerStatus{}
			if id == self {
				for _, c := range qu.cids {
					cc, _ := cid.Decode(c)
					resp[c] = b.p.tracker.status(cc)
				}
				for _, c := range qu.shards {
					cc, _ := cid.Decode(c)
					resp[c] = b.p.tracker.shardStatus(cc)
				}
			} else if err := b.p.call(ctx, id, protoStatus, statusReq{CIDs: qu.cids, Shards: qu.shards}, &resp); err != nil {
				resp = nil
			}
			mu.Lock()
			answers[id] = resp
			mu.Unlock()
		})
	}
	wg.Wait()
	lookup := func(id peer.ID, c string) api.PeerStatus {
		resp := answers[id]
		if resp == nil {
			return api.PeerStatus{Status: api.StatusUnreachable, Error: "peer did not answer"}
		}
		if ps, ok := resp[c]; ok {
			return ps
		}
		return api.PeerStatus{Status: api.StatusUnreachable, Error: "no answer for " + c}
	}
	key := pin.CID.String()
	if sharded {
		key = pin.ClusterDAG.String()
	}
	pinnedHolders := 0
	for _, h := range holders {
		ps := lookup(h, key)
		st.Peers[h.String()] = ps
		if ps.Status == api.StatusPinned {
			pinnedHolders++
		}
	}
	need := pin.RMin
	if need == consensus.Everywhere {
		need = len(holders)
	}
	// allGone: no copy left to read or repair from (api.OverallLost).
	allGone := func(holders []peer.ID) bool {
		if len(holders) == 0 || local {
			return false
		}
		for _, h := range holders {
			if !gone(h) {
				return false
			}
		}
		return true
	}
	if !sharded {
		switch {
		case pinnedHolders >= need:
			st.Status = api.OverallPinned
		case pinnedHolders > 0:
			st.Status = api.OverallDegraded
		case pin.RMax != consensus.Everywhere && allGone(holders):
			st.Status = api.OverallLost
		default:
			st.Status = api.OverallInProgress
		}
		st.Summary = fmt.Sprintf("pinned on %d of %d peers, rmin %d %s", pinnedHolders, len(holders), pin.RMin, met(pinnedHolders >= need))
		if st.Status == api.OverallLost {
			st.Summary += lostAdvice(pin.CID)
		}
		return st, nil
	}
	healthy, unreachable, lost := 0, 0, 0
	for i, sh := range pin.Shards {
		ss := api.ShardStatus{Index: i, CID: sh.CID.String(), Size: sh.Size, Blocks: sh.Blocks, Offset: sh.Offset,
			Length: sh.Length, Allocations: make([]string, len(sh.Allocations)), Peers: map[string]string{}}
		pinned := 0
		for j, a := range sh.Allocations {
			ss.Allocations[j] = a.String()
			if local && a != self {
				continue
			}
			ps := lookup(a, sh.CID.String())
			ss.Peers[a.String()] = ps.Status
			if ps.Error != "" {
				if ss.Errors == nil {
					ss.Errors = map[string]string{}
				}
				ss.Errors[a.String()] = ps.Error
			}
			if ps.Status == api.StatusPinned {
				pinned++
			}
		}
		switch {
		case pinned >= min(need, len(sh.Allocations)) && pinned > 0:
			healthy++
			ss.Status = api.OverallPinned
		case pinned > 0:
			ss.Status = api.OverallDegraded
		case allGone(sh.Allocations):
			lost++
			ss.Status = api.OverallLost
		default:
			unreachable++
			ss.Status = api.OverallError
		}
		st.Shards = append(st.Shards, ss)
	}
	switch {
	case lost > 0 || (pinnedHolders == 0 && allGone(holders)):
		st.Status = api.OverallLost
	case unreachable > 0:
		st.Status = api.OverallError
	case healthy < len(pin.Shards) || pinnedHolders == 0:
		st.Status = api.OverallDegraded
	default:
		st.Status = api.OverallPinned
	}
	st.Summary = fmt.Sprintf("%d shards, %d healthy, rmin %d %s", len(pin.Shards), healthy, pin.RMin, met(healthy == len(pin.Shards)))
	if unreachable > 0 {
		st.Summary += fmt.Sprintf(", %d with no reachable copy", unreachable)
	}
	if lost > 0 {
		st.Summary += fmt.Sprintf(", %d lost", lost)
	}
	if st.Status == api.OverallLost {
		st.Summary += lostAdvice(pin.CID)
	}
	return st, nil
}

// lostAdvice ends the summary of a lost pin.
func lostAdvice(c cid.Cid) string {
	return fmt.Sprintf(": every peer that held a lost part is gone; it returns only with one of them, or `shoal pin rm %s` drops the pin", c)
}

func met(ok bool) string {
	if ok {
		return "met on all"
	}
	return "NOT met"
}

func (b backend) StatusAll(ctx context.Context, local bool) ([]api.PinStatus, error) {
	pins := b.p.cons.State().Pins()
	out := make([]api.PinStatus, 0, len(pins))
	for _, a := range b.p.cons.State().Adds() {
		st := api.PinStatus{AddID: a.ID, Name: a.Name, Status: api.OverallInProgress, RMin: a.RMin, RMax: a.RMax,
			Allocations: []string{}, Peers: map[string]api.PeerStatus{},
			Summary: fmt.Sprintf("adding on %s since %s: %d shards stored", a.Owner, a.Started.Format(time.RFC3339), len(a.Shards))}
		for i, sh := range a.Shards {
			ss := api.ShardStatus{Index: i, CID: sh.CID.String(), Size: sh.Size, Blocks: sh.Blocks, Offset: sh.Offset,
				Length: sh.Length, Peers: map[string]string{}}
			for _, al := range sh.Allocations {
				ss.Allocations = append(ss.Allocations, al.String())
			}
			st.Size += sh.Length
			st.Shards = append(st.Shards, ss)
		}
		out = append(out, st)
	}
	members, err := b.p.cons.Peers(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	gone := b.p.goneFunc(members)
	for _, p := range pins {
		st, err := b.status(ctx, p, local, gone)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// Add ingests r into this peer's store, then pins the root with this peer
// preferred (it holds the blocks); the others fetch from it. If the pin
// surely did not commit, the stored blocks are deleted again; if it may
// still commit, the tracker decides later.
func (b backend) Add(ctx context.Context, r io.Reader, ap api.AddParams) (api.AddResult, error) {
	return b.AddEvents(ctx, r, ap, nil)
}

var _ api.AddStreamer = backend{}

// AddEvents is Add that reports each shard of a sharded add through shard
// (nil: not reported) once consensus records it.
func (b backend) AddEvents(ctx context.Context, r io.Reader, ap api.AddParams, shard func(api.ShardStatus) error) (api.AddResult, error) {
	if ap.Shard {
		return b.addSharded(ctx, r, ap, shard)
	}
	params, err := ap.DAGOptions().Params()
	if err != nil {
		return api.AddResult{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	in, err := ingest.New(ingest.Config{Params: params})
	if err != nil {
		return api.AddResult{}, err
	}
	w, err := b.p.store.Create(ctx)
	if err != nil {
		return api.AddResult{}, err
	}
	defer w.Abort()
	root, err := in.AddReader(ctx, r, ap.Name, ingest.AddOptions{Wrap: ap.Wrap}, sinkFunc(w.Put), nil)
	if err != nil {
		return api.AddResult{}, fmt.Errorf("%w: add: %v", api.ErrBadRequest, err)
	}
	key := root.CID.String()
	b.p.tracker.protect(key)
	defer b.p.tracker.unprotect(key)
	had := b.p.store.HasShard(key) // then not this add's to delete
	info, err := w.Commit(ctx, key, root.CID)
	if err != nil && !errors.Is(err, store.ErrExists) {
		return api.AddResult{}, err
	}
	pin, err := b.pin(ctx, root.CID, ap.Name, ap.RMin, ap.RMax, info.Size, []peer.ID{b.p.host.ID()})
	if err != nil {
		// A pin that may still commit keeps its blocks: the tracker
		// deletes them after orphanGrace if the leader agrees the pin
		// never came (unprotect, purge).
		var unsure maybeCommitted
		if _, pinned := b.p.cons.State().Get(root.CID); !pinned && !had && !errors.As(err, &unsure) {
			_ = b.p.store.Delete(key)
		}
		return api.AddResult{}, err
	}
	return api.AddResult{CID: key, Name: ap.Name, Size: root.Size, Pin: toAPIPin(pin)}, nil
}

// sinkFunc adapts a block writer to ingest.Sink.
type sinkFunc func(dag.Block) error

func (f sinkFunc) Put(_ context.Context, b dag.Block) error { return f(b) }
