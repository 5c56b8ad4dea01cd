package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unique"

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
// here, never in the consensus FSM. It deletes only what the state knows:
// shards stored before the state began (unknown.go) stay, whatever the
// state says, until it wants them here or the operator deletes them.
//
// It works incrementally: each round reads the state's journal of changed
// keys (consensus.State.Changes) and looks at those keys only, at a cost
// that does not grow with the pinset. It walks the whole state and store
// when the journal cannot say what changed (at start, after a snapshot
// was restored, after falling behind) and every fullEvery as a safety
// net. Pins it cannot fetch wait with an exponential backoff; it asks the
// other members which of up to haveBatch pins they hold in one request,
// so pins nobody holds cost no fetch at all.
//
// Goroutines: run (one) owns the rounds, the queue and the journal
// position, and fetches one pin at a time; status, protect, receive and
// the other methods may be called from any goroutine.
type tracker struct {
	p *Peer

	mu sync.Mutex
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
	// failed are the plain pins allocated here that could not be
	// fetched, with when to try again; fetching are those being fetched.
	failed    map[cid.Cid]failure
	nextRetry time.Time // no failure is due before
	fetching  map[cid.Cid]bool

	// recheckKeys are store keys to check next round (a part quarantined
	// by a verification); syncWaiters are closed once a round walked the
	// whole state and store (shoal sync).
	recheckKeys []cid.Cid
	syncWaiters []chan struct{}

	// unknown are the stored keys this peer's state does not know
	// (unknown.go), with their sizes in bytes, which add up to
	// unknownBytes; saved in unknownPath.
	unknown      map[string]int64
	unknownBytes int64
	unknownPath  string

	kick chan struct{}

	queueLen atomic.Int64 // len(queue), for metrics

	// Owned by run.
	since    uint64 // journal position
	lastFull time.Time
	queue    []cid.Cid // plain pins to fetch, in the order they came
	queued   map[cid.Cid]bool
	doomed   map[string]bool // stored keys this peer's state no longer wants
	// unknownDirty: unknown changed since it was saved; unknownSaid: what
	// was logged about it last.
	unknownDirty bool
	unknownSaid  unknownSaid
}

// failure is a pin that could not be fetched. msg is interned: a million
// pins nobody holds share one message.
type failure struct {
	next  time.Time
	tries int
	msg   unique.Handle[string]
}

// Reconciliation pacing.
const (
	// fullEvery is how often a round walks the whole state and store even
	// though the journal says what changed: a safety net for a delete
	// that failed, at ~0.1 s of CPU per 10^6 pins.
	fullEvery = 10 * time.Minute
	// retryAfter is the first wait before a failed pin is tried again;
	// each failure doubles it, up to maxRetryAfter.
	retryAfter    = 10 * time.Second
	maxRetryAfter = 10 * time.Minute
	// haveBatch is how many pins one /shoal/have/1 request asks about
	// (~250 KiB of JSON).
	haveBatch = 4096
)

// newTracker makes p's tracker. unknown are the stored keys p's state
// does not know, as loadUnknown read them from unknownPath.
func newTracker(p *Peer, unknown map[string]int64, unknownPath string) *tracker {
	t := &tracker{p: p, protected: map[string]time.Time{}, received: map[string]receivedShard{},
		failed: map[cid.Cid]failure{}, fetching: map[cid.Cid]bool{}, queued: map[cid.Cid]bool{}, doomed: map[string]bool{}, kick: make(chan struct{}, 1),
		unknown: unknown, unknownPath: unknownPath}
	for _, size := range unknown {
		t.unknownBytes += size
	}
	return t
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
	t.protected[key] = time.Time{} // expired: the next round looks at key
	t.mu.Unlock()
	t.wake()
}

// unprotect ends the protection once the add is over: at once if its pin
// is in this peer's state already (the next round checks the key against
// it), else after orphanGrace.
func (t *tracker) unprotect(key string) {
	c, err := cid.Decode(key)
	_, pinned := t.p.cons.State().Get(c)
	t.mu.Lock()
	if err == nil && pinned {
		t.protected[key] = time.Time{}
	} else {
		t.protected[key] = time.Now().Add(orphanGrace)
	}
	t.mu.Unlock()
}

// allocatedHere reports whether pin p should be held by peer self.
func allocatedHere(p consensus.Pin, self peer.ID) bool {
	return p.RMax == consensus.Everywhere || slices.Contains(p.Allocations, self)
}

// shardStatus is this peer's state for the shard (or cluster-DAG) whose
// list root is c: a shard's list nodes are stored with it, so holding the
// root block means holding the committed shard.
func (t *tracker) shardStatus(c cid.Cid) api.PeerStatus {
	st := api.PeerStatus{Name: t.p.cfg.PeerName, Status: api.StatusPinned}
	if t.p.store.Has(c) {
		return st
	}
	if t.missing(c, &st) {
		return st
	}
	if t.p.cons.State().Wants(c, t.p.host.ID()) {
		st.Status = api.StatusQueued
	} else {
		st.Status, st.Error = api.StatusPinError, "shard not stored here"
	}
	return st
}

// missing sets st for a part wanted here and not stored: pinning while it
// is fetched, pin_error after a failure. It reports whether it set st.
func (t *tracker) missing(c cid.Cid, st *api.PeerStatus) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, failed := t.failed[c]
	switch {
	case t.fetching[c]:
		st.Status = api.StatusPinning
	case failed:
		st.Status, st.Error = api.StatusPinError, f.msg.Value()
	default:
		return false
	}
	return true
}

// status is this peer's state for c.
func (t *tracker) status(c cid.Cid) api.PeerStatus {
	st := api.PeerStatus{Name: t.p.cfg.PeerName}
	pin, ok := t.p.cons.State().Get(c)
	switch {
	case !ok:
		st.Status = api.StatusUnpinned
		return st
	case !allocatedHere(pin, t.p.host.ID()):
		st.Status = api.StatusRemote
		return st
	case t.p.store.Has(c):
		st.Status = api.StatusPinned
		return st
	}
	if !t.missing(c, &st) {
		st.Status = api.StatusQueued
	}
	return st
}

// run reconciles until ctx ends.
func (t *tracker) run(ctx context.Context) {
	tick := time.NewTicker(t.p.reconcileEvery)
	defer tick.Stop()
	for {
		t.round(ctx)
		if len(t.queue) > 0 {
			t.wake() // more to fetch: go on after a look at the journal
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.kick:
		}
	}
}

// round does one reconciliation pass: look at what changed (or at
// everything), then fetch up to haveBatch queued pins.
func (t *tracker) round(ctx context.Context) {
	t.mu.Lock()
	waiters, recheck := t.syncWaiters, t.recheckKeys
	t.syncWaiters, t.recheckKeys = nil, nil
	t.mu.Unlock()
	// Waiters learn the round's outcome before its fetches, which may
	// take long; an interrupted walk releases them too (ctx ended).
	defer func() {
		for _, w := range waiters {
			close(w)
		}
	}()
	st := t.p.cons.State()
	keys, next, complete := st.Changes(t.since)
	t.since = next
	walked := !complete || len(waiters) > 0 || time.Since(t.lastFull) >= fullEvery
	if walked {
		t.lastFull = time.Now()
		if !t.full(ctx) {
			t.since = 0 // interrupted: walk again next time
			return
		}
	} else {
		for _, k := range keys {
			t.check(k)
		}
	}
	for _, k := range recheck {
		t.check(k)
	}
	for _, k := range t.unguarded(ctx) {
		t.check(k)
	}
	t.purge(ctx)
	t.tendUnknown(walked)
	t.retryDue()
	t.queueLen.Store(int64(len(t.queue)))
	for _, w := range waiters {
		close(w)
	}
	waiters = nil
	t.fetchQueued(ctx)
	t.queueLen.Store(int64(len(t.queue)))
}

// purge deletes the doomed keys the leader's state does not want here
// either, and that are still unwanted and unguarded here. The others stay
// doomed until the leader answers, or are forgotten once wanted again.
func (t *tracker) purge(ctx context.Context) {
	if len(t.doomed) == 0 {
		return
	}
	st, self := t.p.cons.State(), t.p.host.ID()
	keys := make([]string, 0, min(len(t.doomed), maxWantedKeys))
	for k := range t.doomed {
		if c, err := cid.Decode(k); err != nil || st.Wants(c, self) || !t.p.store.HasShard(k) {
			delete(t.doomed, k)
			continue
		}
		if len(keys) < maxWantedKeys {
			keys = append(keys, k)
		}
	}
	var unwanted []string
	for _, k := range t.p.unwantedHere(ctx, keys) {
		t.mu.Lock()
		_, guarded := t.protected[k]
		_, received := t.received[k]
		_, unknown := t.unknown[k]
		t.mu.Unlock()
		if guarded || received || unknown {
			delete(t.doomed, k)
			continue
		}
		unwanted = append(unwanted, k)
	}
	for _, k := range t.handedOff(ctx, unwanted) {
		delete(t.doomed, k)
		if err := t.p.store.Delete(k); err != nil && !errors.Is(err, store.ErrNotFound) {
			t.p.log("unpin %s: %v", k, err)
		}
	}
}

// handedOff returns the keys of keys that this peer may delete: those the
// state no longer pins anywhere, and the parts still pinned elsewhere
// that enough of their holders store already (rmin of them, or all when
// fewer are allocated). The others stay doomed, and are asked about
// again next round: a peer never deletes what may be a part's last copy
// while the part is pinned. That happens when an op moves a part off this
// peer before its new holders copied it (a re-add built on a state that
// an unpin then changed, a re-allocation whose new holders are down), and
// the new holders fetch it from here.
func (t *tracker) handedOff(ctx context.Context, keys []string) []string {
	st, self := t.p.cons.State(), t.p.host.ID()
	type pending struct {
		key  string
		need int
	}
	var out []string
	var wait []pending
	ask := map[peer.ID][]int{} // holder -> indexes into wait
	for _, k := range keys {
		c, err := cid.Decode(k)
		if err != nil {
			continue // never deleted: check keeps undecodable keys
		}
		part, ok := st.Part(c)
		if !ok {
			out = append(out, k)
			continue
		}
		need := 1
		if pin, ok := st.Get(part.Root); ok {
			need = max(pin.RMin, 1)
		}
		holders := slices.DeleteFunc(slices.Clone(part.Holders), func(id peer.ID) bool { return id == self })
		need = min(need, len(holders))
		if need == 0 {
			continue // allocated nowhere else: kept until the pin changes
		}
		for _, h := range holders {
			ask[h] = append(ask[h], len(wait))
		}
		wait = append(wait, pending{k, need})
	}
	if len(wait) == 0 {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	has := make([]atomic.Int32, len(wait))
	var wg sync.WaitGroup
	for h, idx := range ask {
		wg.Go(func() {
			for chunk := range slices.Chunk(idx, haveBatch) {
				req := haveReq{Keys: make([]string, len(chunk))}
				for i, j := range chunk {
					req.Keys[i] = wait[j].key
				}
				var got []bool
				if err := t.p.call(ctx, h, protoHave, req, &got); err != nil || len(got) != len(chunk) {
					return // unreachable or wrong: counts as not holding
				}
				for i, j := range chunk {
					if got[i] {
						has[j].Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	for i, w := range wait {
		if int(has[i].Load()) >= w.need {
			out = append(out, w.key)
		}
	}
	return out
}

// load returns how many items wait to be fetched and how many failed.
func (t *tracker) load() (queued, failed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int(t.queueLen.Load()), len(t.failed)
}

// full walks the store and the state. It returns false if ctx ended first.
func (t *tracker) full(ctx context.Context) bool {
	for i, sh := range t.p.store.Shards() {
		if i%1024 == 0 && ctx.Err() != nil {
			return false
		}
		if c, err := cid.Decode(sh.Key); err == nil {
			t.check(c)
		}
	}
	self, n := t.p.host.ID(), 0
	t.p.cons.State().Each(func(p consensus.Pin) bool {
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return false
		}
		switch {
		case p.Kind == consensus.KindPlain:
			if allocatedHere(p, self) && !t.p.store.Has(p.CID) {
				t.enqueue(p.CID)
			}
		case slices.Contains(p.Allocations, self) && !t.p.store.HasShard(p.ClusterDAG.String()):
			t.enqueue(p.ClusterDAG)
		}
		for i := range p.Shards {
			if slices.Contains(p.Shards[i].Allocations, self) && !t.p.store.HasShard(p.Shards[i].CID.String()) {
				t.enqueue(p.Shards[i].CID)
			}
		}
		return true
	})
	for _, r := range t.p.cons.State().Repairs() {
		if slices.Contains(r.Pending, self) {
			t.check(r.Part)
		}
	}
	st := t.p.cons.State()
	t.mu.Lock()
	for c := range t.failed {
		if !st.Wants(c, self) {
			delete(t.failed, c)
		}
	}
	t.mu.Unlock()
	return ctx.Err() == nil
}

// check reconciles one store key with the state: deletes it if stored,
// unwanted here, unguarded and known to the state; queues it if it is a
// part (a plain pin, a shard, a cluster-DAG) this peer should hold and
// does not. A wanted key the state did not know becomes its own.
func (t *tracker) check(c cid.Cid) {
	st, self, key := t.p.cons.State(), t.p.host.ID(), c.String()
	if !st.Wants(c, self) {
		t.mu.Lock()
		delete(t.failed, c)
		_, guarded := t.protected[key]
		_, received := t.received[key]
		_, unknown := t.unknown[key]
		t.mu.Unlock()
		if guarded || received || unknown || !t.p.store.HasShard(key) {
			return
		}
		t.doomed[key] = true // deleted once the leader agrees (purge)
		return
	}
	t.adopt(key)
	// A part that changed is tried now, even if it waits after a failure:
	// a new op is the likeliest sign that something changed.
	if part, ok := st.Part(c); ok && !t.holds(c, part.Kind) {
		t.enqueue(c)
	}
}

// holds reports whether the store holds part c: a plain pin's root block
// (its DAG is stored whole), or the shard or cluster-DAG file of c.
func (t *tracker) holds(c cid.Cid, kind consensus.PartKind) bool {
	if kind == consensus.PartPlain {
		return t.p.store.Has(c)
	}
	return t.p.store.HasShard(c.String())
}

func (t *tracker) enqueue(c cid.Cid) {
	if !t.queued[c] {
		t.queued[c] = true
		t.queue = append(t.queue, c)
	}
}

// unguarded ends the protections that expired and the received shards
// that the state now explains or no longer needs, and returns their keys
// for a check.
func (t *tracker) unguarded(ctx context.Context) []cid.Cid {
	st, self, now := t.p.cons.State(), t.p.host.ID(), time.Now()
	owners := map[peer.ID]bool{}
	for _, a := range st.Adds() {
		owners[a.Owner] = true
	}
	var out []cid.Cid
	var unsure []string
	t.mu.Lock()
	for k, until := range t.protected {
		if now.After(until) {
			delete(t.protected, k)
			if c, err := cid.Decode(k); err == nil {
				out = append(out, c)
			}
		}
	}
	for k, r := range t.received {
		c, err := cid.Decode(k)
		switch {
		case err != nil:
			delete(t.received, k)
		case st.Wants(c, self), now.Sub(r.at) > receivedShardGrace, r.seen && !owners[r.owner]:
			delete(t.received, k)
			out = append(out, c)
		case owners[r.owner]:
			r.seen = true
			t.received[k] = r
		case now.Sub(r.at) > receivedAskAfter:
			unsure = append(unsure, k)
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
			if c, err := cid.Decode(k); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// retryDue queues the failed pins whose wait is over.
func (t *tracker) retryDue() {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Before(t.nextRetry) || len(t.failed) == 0 {
		return
	}
	t.nextRetry = now.Add(maxRetryAfter)
	for c, f := range t.failed {
		switch {
		case !f.next.After(now):
			t.enqueue(c)
		case f.next.Before(t.nextRetry):
			t.nextRetry = f.next
		}
	}
	// Retries come in waves at least retryAfter apart: the scan is over
	// every failure (10^6 pins nobody holds cost ~50 ms), and failures
	// that happened at different times would otherwise make one due
	// every round.
	if wave := now.Add(retryAfter); t.nextRetry.Before(wave) {
		t.nextRetry = wave
	}
}

// fail records that c could not be fetched.
func (t *tracker) fail(c cid.Cid, msg string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.failed[c]
	f.tries++
	wait := min(retryAfter<<min(f.tries-1, 16), maxRetryAfter)
	f.next, f.msg = time.Now().Add(wait), unique.Make(msg)
	t.failed[c] = f
	if t.nextRetry.IsZero() || f.next.Before(t.nextRetry) {
		t.nextRetry = f.next
	}
}

// fetchQueued fetches up to haveBatch queued parts that are still wanted
// here and missing: plain pins from a peer that says it holds them,
// shards and cluster-DAGs from their holders.
func (t *tracker) fetchQueued(ctx context.Context) {
	st, self := t.p.cons.State(), t.p.host.ID()
	n := min(len(t.queue), haveBatch)
	var plain []consensus.Pin
	var parts []queuedPart
	for _, c := range t.queue[:n] {
		delete(t.queued, c)
		part, ok := st.Part(c)
		if !ok || !st.Wants(c, self) || t.holds(c, part.Kind) {
			continue
		}
		if part.Kind != consensus.PartPlain {
			parts = append(parts, queuedPart{c, part})
		} else if p, ok := st.Get(c); ok {
			plain = append(plain, p)
		}
	}
	t.queue = t.queue[n:]
	if len(t.queue) == 0 {
		t.queue = nil // let the array go
	}
	t.copyParts(ctx, parts)
	if len(plain) == 0 {
		return
	}
	holders, asked := t.whoHas(ctx, plain)
	for _, p := range plain {
		if ctx.Err() != nil {
			t.enqueue(p.CID) // not tried: still to do after a restart of the loop
			continue
		}
		srcs := holders[p.CID]
		if len(srcs) == 0 {
			t.fail(p.CID, fmt.Sprintf("no peer holds it (asked %d)", asked))
			continue
		}
		if t.fetch(ctx, p.CID, func() error { return t.pin(ctx, p, srcs) }) {
			t.check(p.CID) // as copyParts does
		}
	}
}

// copyWorkers is how many shards or cluster-DAGs a peer copies at once. A
// copy is a chain of stages on two peers (read, encrypt, decrypt, hash,
// write) that leaves cores idle on its own; two fill them. More would
// only divide the same cores and disk.
const copyWorkers = 2

// queuedPart is a shard or cluster-DAG to copy here.
type queuedPart struct {
	c    cid.Cid
	part consensus.Part
}

// copyParts copies parts, copyWorkers at a time, and checks each one it
// stored again on the calling goroutine (run's), which owns the queue.
func (t *tracker) copyParts(ctx context.Context, parts []queuedPart) {
	var (
		wg     sync.WaitGroup
		sem    = make(chan struct{}, copyWorkers)
		mu     sync.Mutex
		stored []cid.Cid
	)
	for _, it := range parts {
		if ctx.Err() != nil || t.syncWanted() {
			t.enqueue(it.c) // a sync waits for the next round: keep it short
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if t.fetch(ctx, it.c, func() error { return t.copyPart(ctx, it.c, it.part) }) {
				mu.Lock()
				stored = append(stored, it.c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, c := range stored {
		// The state may have stopped wanting c while it was copied (a
		// repair ended without this peer, an unpin): its journal entry
		// was checked before the copy was stored.
		t.check(c)
	}
}

// fetch runs get for c, showing c as pinning meanwhile, records the
// outcome and reports whether get succeeded. It is safe on several
// goroutines at once.
func (t *tracker) fetch(ctx context.Context, c cid.Cid, get func() error) bool {
	t.mu.Lock()
	t.fetching[c] = true
	t.mu.Unlock()
	err := get()
	t.mu.Lock()
	delete(t.fetching, c)
	if err == nil {
		delete(t.failed, c)
	}
	t.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		msg := err.Error()
		if errors.Is(err, syscall.ENOSPC) {
			msg = "this peer's disk is full: " + msg
		}
		t.fail(c, msg)
		t.p.log("pin %s: %s", c, msg)
		if errors.Is(err, syscall.ENOSPC) {
			t.shed(ctx, c)
		}
	}
	return err == nil
}

// shed gives up this peer's allocation of part c, which its full disk
// cannot take, when the part's other holders have it pinned at least rmin
// times: the allocator chose this peer on room it no longer has (a disk
// filled by something else), and the part would otherwise wait here in
// pin_error for good. Below rmin it stays, for the repairer or an
// operator: dropping it would leave the part short.
func (t *tracker) shed(ctx context.Context, c cid.Cid) {
	st, self := t.p.cons.State(), t.p.host.ID()
	part, ok := st.Part(c)
	if !ok || !slices.Contains(part.Holders, self) {
		return
	}
	pin, ok := st.Get(part.Root)
	if !ok || pin.RMin == consensus.Everywhere || pin.RMax == consensus.Everywhere {
		return
	}
	others := slices.DeleteFunc(slices.Clone(part.Holders), func(id peer.ID) bool { return id == self })
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pinned := 0
	for _, id := range others {
		req := statusReq{Shards: []string{c.String()}}
		if part.Kind == consensus.PartPlain {
			req = statusReq{CIDs: []string{c.String()}}
		}
		var out map[string]api.PeerStatus
		if err := t.p.call(ctx, id, protoStatus, req, &out); err == nil && out[c.String()].Status == api.StatusPinned {
			pinned++
		}
	}
	if pinned < max(pin.RMin, 1) {
		t.p.log("pin %s: this peer's disk is full and %d other holders have it, below rmin %d: it stays allocated here", c, pinned, pin.RMin)
		return
	}
	err := t.p.cons.Commit(ctx, consensus.ReallocOp(part.Root, c, part.Holders, others, time.Now().UTC()))
	switch {
	case err == nil:
		t.p.log("pin %s: this peer's disk is full and %d other holders have it (rmin %d): gave up its allocation here", c, pinned, pin.RMin)
	case !errors.Is(err, consensus.ErrStale):
		t.p.log("pin %s: give up its allocation on a full disk: %v", c, err)
	}
}

// copyPart copies shard or cluster-DAG c from the first of its holders
// (then any member) that serves it.
func (t *tracker) copyPart(ctx context.Context, c cid.Cid, part consensus.Part) error {
	members, err := t.p.cons.Peers(ctx)
	if err != nil {
		return err
	}
	var ids []peer.ID
	for _, m := range members {
		ids = append(ids, m.ID)
	}
	var errs []error
	for _, src := range holderOrder(t.p.host.ID(), part.Holders, ids) {
		if !t.p.monitor.alive(src) {
			continue
		}
		err := t.p.copyPart(ctx, src, part, c)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%s: %w", src, err))
	}
	if len(errs) == 0 {
		return errors.New("no live peer holds it")
	}
	return fmt.Errorf("no peer could provide it: %w", errors.Join(errs...))
}

// whoHas asks every other member which of pins it holds, concurrently,
// and returns each pin's holders, its own allocations first, and how
// many members answered.
func (t *tracker) whoHas(ctx context.Context, pins []consensus.Pin) (map[cid.Cid][]peer.ID, int) {
	self := t.p.host.ID()
	members, err := t.p.cons.Peers(ctx)
	if err != nil {
		return nil, 0
	}
	keys := make([]string, len(pins))
	for i, p := range pins {
		keys[i] = p.CID.String()
	}
	var others []peer.ID
	for _, m := range members {
		if m.ID != self {
			others = append(others, m.ID)
		}
	}
	has := make([][]bool, len(others))
	var wg sync.WaitGroup
	for i, m := range others {
		wg.Go(func() {
			var got []bool
			if err := t.p.call(ctx, m, protoHave, haveReq{Keys: keys}, &got); err == nil && len(got) == len(keys) {
				has[i] = got
			}
		})
	}
	wg.Wait()
	out := make(map[cid.Cid][]peer.ID)
	asked := 0
	for i, m := range others {
		if has[i] == nil {
			continue
		}
		asked++
		for j, p := range pins {
			if has[i][j] {
				out[p.CID] = append(out[p.CID], m)
			}
		}
	}
	for _, p := range pins {
		srcs := out[p.CID]
		slices.SortStableFunc(srcs, func(a, b peer.ID) int {
			ia, ib := slices.Contains(p.Allocations, a), slices.Contains(p.Allocations, b)
			switch {
			case ia && !ib:
				return -1
			case ib && !ia:
				return 1
			}
			return 0
		})
	}
	return out, asked
}

// pin fetches p's DAG from the first of srcs that serves it.
func (t *tracker) pin(ctx context.Context, p consensus.Pin, srcs []peer.ID) error {
	var errs []error
	for _, src := range srcs {
		err := t.fetchInto(ctx, src, p.CID)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("no peer could provide it: %w", errors.Join(errs...))
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
