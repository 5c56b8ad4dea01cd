package cluster

import (
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
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/store"
)

// tracker reconciles what the shared state says this peer should hold with
// what its store holds: it fetches what is missing from peers that have
// it, and deletes what is no longer allocated here. Side effects live
// here, never in the consensus FSM.
//
// Goroutines: run (one) owns the reconciliation rounds and starts at most
// one fetch at a time; status may be called from any goroutine.
type tracker struct {
	p *Peer

	mu     sync.Mutex
	states map[string]api.PeerStatus // by CID string: queued, pinning, pin_error
	// protected are store keys written by a local add whose pin may not
	// have reached this peer's state yet (a follower applies a commit a
	// heartbeat after the leader): not to be deleted as orphans until the
	// time they map to.
	protected map[string]time.Time
	// received are shards other peers sent for their adds, by key: kept
	// until the state records them, or their owner has no add in
	// progress any more (then the state alone decides), or
	// receivedShardGrace passed.
	received map[string]receivedShard

	kick chan struct{}
}

func newTracker(p *Peer) *tracker {
	return &tracker{p: p, states: map[string]api.PeerStatus{}, protected: map[string]time.Time{},
		received: map[string]receivedShard{}, kick: make(chan struct{}, 1)}
}

// receivedShard is a shard received for an add. seen says this peer's
// state has shown an add in progress by owner since then: once it shows
// none, that add is over (committed or aborted) and the state alone
// decides. Until seen, a lagging follower may simply not have applied the
// add's beginning yet, so the shard waits for receivedShardGrace.
type receivedShard struct {
	owner peer.ID
	at    time.Time
	seen  bool
}

// receivedAskAfter is when the tracker asks the leader about a received
// shard its own state does not explain.
const receivedAskAfter = 2 * time.Second

// receive protects a shard that owner sent for an add in progress.
func (t *tracker) receive(key string, owner peer.ID) {
	seen := false
	for _, a := range t.p.cons.State().Adds() {
		seen = seen || a.Owner == owner
	}
	t.mu.Lock()
	t.received[key] = receivedShard{owner: owner, at: time.Now(), seen: seen}
	t.mu.Unlock()
}

// wake asks for a reconciliation round soon.
func (t *tracker) wake() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// orphanGrace is how long a locally added shard is kept after its add
// returned, waiting for its pin to show up in this peer's state.
const orphanGrace = 30 * time.Second

// protect keeps key from deletion until unprotect plus orphanGrace.
func (t *tracker) protect(key string) {
	t.mu.Lock()
	t.protected[key] = time.Now().Add(24 * time.Hour)
	t.mu.Unlock()
}

// receivedShardGrace is how long a shard received for an add is kept
// before the add records it: long enough for the sender to finish the
// shard's confirmations and commit its op, even through a leader change.
const receivedShardGrace = 2 * time.Minute

// release ends the protection of key at once: the add that wrote it is
// over, and this peer's state already shows its outcome.
func (t *tracker) release(key string) {
	t.mu.Lock()
	delete(t.protected, key)
	t.mu.Unlock()
}

// unprotect ends the protection once the add is over: at once if its pin
// is in this peer's state already, else after orphanGrace (a round that
// sees the pin ends it sooner).
func (t *tracker) unprotect(key string) {
	c, err := cid.Decode(key)
	_, pinned := t.p.cons.State().Get(c)
	t.mu.Lock()
	if err == nil && pinned {
		delete(t.protected, key)
	} else {
		t.protected[key] = time.Now().Add(orphanGrace)
	}
	t.mu.Unlock()
}

// allocatedHere reports whether pin p should be held by peer self.
func allocatedHere(p consensus.Pin, self peer.ID) bool {
	return p.RMax == consensus.Everywhere || slices.Contains(p.Allocations, self)
}

func keepShards(keep map[string]bool, shards []consensus.Shard, self peer.ID) {
	for _, sh := range shards {
		if slices.Contains(sh.Allocations, self) {
			keep[sh.CID.String()] = true
		}
	}
}

// shardStatus is this peer's state for the shard (or cluster-DAG) whose
// list root is c: a shard's list nodes are stored with it, so holding the
// root block means holding the committed shard.
func (t *tracker) shardStatus(c cid.Cid) api.PeerStatus {
	st := api.PeerStatus{Name: t.p.cfg.PeerName, Status: api.StatusPinned}
	if !t.p.store.Has(c) {
		st.Status, st.Error = api.StatusPinError, "shard not stored here"
	}
	return st
}

// status is this peer's state for c.
func (t *tracker) status(c cid.Cid) api.PeerStatus {
	st := api.PeerStatus{Name: t.p.cfg.PeerName}
	pin, ok := t.p.cons.State().Get(c)
	t.mu.Lock()
	s, tracked := t.states[c.String()]
	t.mu.Unlock()
	switch {
	case !ok:
		st.Status = api.StatusUnpinned
	case !allocatedHere(pin, t.p.host.ID()):
		st.Status = api.StatusRemote
	case t.p.store.Has(c):
		st.Status = api.StatusPinned
	case tracked:
		st.Status, st.Error = s.Status, s.Error
	default:
		st.Status = api.StatusQueued
	}
	return st
}

// retryAfter is how long a failed pin waits before the tracker tries again.
const retryAfter = 10 * time.Second

// run reconciles until ctx ends.
func (t *tracker) run(ctx context.Context) {
	tick := time.NewTicker(t.p.reconcileEvery)
	defer tick.Stop()
	failed := map[string]time.Time{}
	for {
		t.round(ctx, failed)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.kick:
		}
	}
}

// round does one reconciliation pass: delete what is not wanted, then
// fetch what is missing, one pin at a time.
func (t *tracker) round(ctx context.Context, failed map[string]time.Time) {
	// Read the protected set before the state: a key unprotected after
	// this point has its pin in the state read below.
	now := time.Now()
	t.mu.Lock()
	protected := make(map[string]bool, len(t.protected))
	for k, until := range t.protected {
		if now.After(until) {
			delete(t.protected, k)
			continue
		}
		protected[k] = true
	}
	t.mu.Unlock()
	self := t.p.host.ID()
	state := t.p.cons.State()
	pins := state.Pins()
	// want: plain pins allocated here, by root; keep: every store key
	// that must stay, which adds the shards of sharded pins and of adds
	// in progress allocated here. A shard two files share has one key, so
	// it stays while either wants it.
	want := make(map[string]consensus.Pin, len(pins))
	keep := make(map[string]bool, len(pins))
	for _, p := range pins {
		if p.Kind == consensus.KindSharded {
			keepShards(keep, p.Shards, self)
			if slices.Contains(p.Allocations, self) {
				keep[p.ClusterDAG.String()] = true // its list nodes
			}
			continue
		}
		if allocatedHere(p, self) {
			want[p.CID.String()] = p
			keep[p.CID.String()] = true
		}
	}
	for _, a := range state.Adds() {
		keepShards(keep, a.Shards, self)
	}
	owners := map[peer.ID]bool{}
	for _, a := range state.Adds() {
		owners[a.Owner] = true
	}
	t.mu.Lock()
	var unsure []string
	for k, r := range t.received {
		switch {
		case keep[k], now.Sub(r.at) > receivedShardGrace, r.seen && !owners[r.owner]:
			delete(t.received, k)
		default:
			if owners[r.owner] {
				r.seen = true
				t.received[k] = r
			} else if now.Sub(r.at) > receivedAskAfter {
				unsure = append(unsure, k)
			}
			protected[k] = true
		}
	}
	for k := range t.states {
		if _, ok := want[k]; !ok {
			delete(t.states, k)
		}
	}
	t.mu.Unlock()

	if len(unsure) > 0 {
		// This peer's state shows neither the shards nor an add by their
		// owner: it lags, or the add is over. The leader knows which.
		for _, k := range t.p.notWanted(ctx, unsure) {
			t.mu.Lock()
			delete(t.received, k)
			t.mu.Unlock()
			delete(protected, k)
		}
	}

	for _, sh := range t.p.store.Shards() {
		if keep[sh.Key] || protected[sh.Key] {
			continue
		}
		if err := t.p.store.Delete(sh.Key); err != nil && !errors.Is(err, store.ErrNotFound) {
			t.p.log("unpin %s: %v", sh.Key, err)
		}
	}

	for k, p := range want {
		if ctx.Err() != nil {
			return
		}
		if t.p.store.Has(p.CID) {
			continue
		}
		if at, ok := failed[k]; ok && time.Since(at) < retryAfter {
			continue
		}
		t.set(k, api.StatusPinning, "")
		if err := t.pin(ctx, p); err != nil {
			if ctx.Err() != nil {
				return
			}
			failed[k] = time.Now()
			t.set(k, api.StatusPinError, err.Error())
			t.p.log("pin %s: %v", k, err)
			continue
		}
		delete(failed, k)
		t.set(k, api.StatusPinned, "")
	}
}

func (t *tracker) set(k, status, msg string) {
	t.mu.Lock()
	t.states[k] = api.PeerStatus{Name: t.p.cfg.PeerName, Status: status, Error: msg}
	t.mu.Unlock()
}

// pin fetches p's DAG from the first peer that has it: its other
// allocations first, then every other member.
func (t *tracker) pin(ctx context.Context, p consensus.Pin) error {
	self := t.p.host.ID()
	var sources []peer.ID
	for _, a := range p.Allocations {
		if a != self {
			sources = append(sources, a)
		}
	}
	members, err := t.p.cons.Peers(ctx)
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.ID != self && !slices.Contains(sources, m.ID) {
			sources = append(sources, m.ID)
		}
	}
	if len(sources) == 0 {
		return fmt.Errorf("no other peer to fetch %s from", p.CID)
	}
	var errs []error
	for _, src := range sources {
		err := t.fetchInto(ctx, src, p.CID)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("no peer could provide %s: %w", p.CID, errors.Join(errs...))
}

// fetchInto copies root's DAG from src into a new shard of the local store.
func (t *tracker) fetchInto(ctx context.Context, src peer.ID, root cid.Cid) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := t.p.store.Create(ctx)
	if err != nil {
		return err
	}
	defer w.Abort()
	if err := t.p.fetch(ctx, src, root, func(b dag.Block) error { return w.Put(b) }); err != nil {
		return err
	}
	_, err = w.Commit(ctx, root.String(), root)
	return err
}
