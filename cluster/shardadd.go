package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/allocate"
	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ingest"
	"github.com/shoal-project/shoal/shard"
)

// DefaultShardSize is the shard size when an add asks for none: IPFS
// Cluster's design default, 100 MiB, small enough that one lost peer moves
// little per shard, large enough that a 1 TiB file is ~10,000 shards.
const DefaultShardSize = 100 << 20

// shardOpTimeout bounds recording a confirmed shard in consensus, which
// goes on after the add's client went away.
const shardOpTimeout = 30 * time.Second

// minShardRoom is the least free space a peer needs to be offered a shard:
// below it a shard would hold a handful of blocks.
const minShardRoom = 4 << 20

// addSharded ingests r on this peer, cuts the block stream into shards,
// streams each shard to the peers allocated to it while it is being cut,
// and records the add in consensus: begun, one op per confirmed shard, and
// committed only when every shard is confirmed on at least rmin peers. On
// any failure the add is aborted, and the peers drop its shards.
// Each shard is reported to onShard (when not nil) once consensus
// records it.
func (b backend) addSharded(ctx context.Context, r io.Reader, ap api.AddParams, onShard func(api.ShardStatus) error) (api.AddResult, error) {
	params, err := ap.DAGOptions().Params()
	if err != nil {
		return api.AddResult{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	rmin, rmax := b.replication(ap.RMin, ap.RMax)
	if err := config.CheckReplication(rmin, rmax); err != nil {
		return api.AddResult{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if rmin == consensus.Everywhere {
		return api.AddResult{}, fmt.Errorf("%w: a sharded add needs replication counts, not -1 (every peer)", api.ErrBadRequest)
	}
	size := ap.ShardSize
	if size == 0 {
		size = DefaultShardSize
	}
	// The largest block and its list entry must fit an empty shard.
	if need := int64(params.Chunker.MaxChunk()) + 1024; size < need {
		return api.AddResult{}, fmt.Errorf("%w: shard size %d bytes is below one block of this chunker (%d bytes with framing)",
			api.ErrBadRequest, size, need)
	}
	in, err := ingest.New(ingest.Config{Params: params})
	if err != nil {
		return api.AddResult{}, err
	}
	key := resumeKey(ap)
	id, done := b.p.resumable(key)
	if id == "" {
		idb := make([]byte, 16)
		if _, err := rand.Read(idb); err != nil {
			return api.AddResult{}, err
		}
		id = hex.EncodeToString(idb)
	}
	b.p.setAdding(id, true)
	defer b.p.setAdding(id, false)
	now := time.Now().UTC()
	self := b.p.host.ID()
	if done == nil {
		if err := b.commitAddOp(ctx, consensus.AddBeginOp(consensus.Add{ID: id, Name: ap.Name, RMin: rmin, RMax: rmax, Owner: self}, now)); err != nil {
			return api.AddResult{}, err
		}
	} else {
		b.p.log("add %s: resuming after its %d confirmed shards", id, len(done))
	}
	committed := false
	op := &shardOpener{b: b, id: id, size: size, rmin: rmin, rmax: rmax, onShard: onShard, done: done}
	defer func() {
		// By now this peer's state shows the pin (readOwnWrite) or the
		// add is aborted: the state alone decides what stays.
		defer func() {
			for _, k := range op.keys {
				b.p.tracker.release(k)
			}
		}()
		if !committed && ctx.Err() != nil && op.recorded > 0 && b.p.cfg.Pinning.ResumeGrace > 0 {
			// The client went away: keep the confirmed shards for a
			// resume (the reaper aborts the add after ResumeGrace).
			b.p.interrupt(id, key)
			b.p.log("add %s interrupted after %d shards; the same add within %s resumes it", id, op.recorded,
				time.Duration(b.p.cfg.Pinning.ResumeGrace))
			return
		}
		if !committed {
			// Best effort, on a context of its own: the add's may be
			// what failed. The leader also drops adds whose owner is gone.
			actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b.commitAddOp(actx, consensus.AddAbortOp(id, time.Now().UTC())); err != nil {
				b.p.log("abort add %s: %v", id, err)
			}
		}
	}()

	cut := shard.NewCutter(op, shard.MaxLinks)
	// Shard i is confirmed and recorded while shard i+1 streams: the
	// receivers' fsync and the consensus round no longer stall the add.
	cut.Overlap(ctx)
	root, err := in.AddReader(ctx, r, ap.Name, ingest.AddOptions{Wrap: ap.Wrap}, cut, nil)
	if err != nil {
		cut.Abort()
		return api.AddResult{}, err
	}
	infos, err := cut.Close(ctx)
	if err != nil {
		return api.AddResult{}, err
	}
	// The cluster-DAG's list nodes are stored like one more, tiny shard.
	roots := make([]cid.Cid, len(infos))
	for i, in := range infos {
		roots[i] = in.CID
	}
	cdag, nodes, err := shard.BuildList(shard.KindCluster, roots, shard.MaxLinks)
	if err != nil {
		return api.AddResult{}, err
	}
	holders, err := op.storeNodes(ctx, cdag, nodes)
	if err != nil {
		return api.AddResult{}, fmt.Errorf("store the cluster-DAG: %w", err)
	}
	if err := b.commitAddOp(ctx, consensus.AddCommitOp(id, root.CID, cdag, root.Size, holders, time.Now().UTC())); err != nil {
		return api.AddResult{}, err
	}
	committed = true
	b.readOwnWrite(ctx, func() bool { _, ok := b.p.cons.State().Get(root.CID); return ok })
	b.p.tracker.wake()
	pin, _ := b.p.cons.State().Get(root.CID)
	res := api.AddResult{CID: root.CID.String(), Name: ap.Name, Size: root.Size, Pin: toAPIPin(pin),
		ClusterDAG: cdag.String()}
	for i, sh := range pin.Shards {
		res.Shards = append(res.Shards, shardStatus(i, sh))
	}
	return res, nil
}

// shardStatus is shard i as the API shows it, without peer states.
func shardStatus(i int, sh consensus.Shard) api.ShardStatus {
	ss := api.ShardStatus{Index: i, CID: sh.CID.String(), Size: sh.Size, Blocks: sh.Blocks, Offset: sh.Offset,
		Length: sh.Length, Allocations: make([]string, len(sh.Allocations))}
	for j, a := range sh.Allocations {
		ss.Allocations[j] = a.String()
	}
	return ss
}

// commitAddOp commits an op of a sharded add, retrying when its outcome is
// unknown (the leader changed under it): the add ops are idempotent, and a
// retry that finds its first attempt applied counts as done.
func (b backend) commitAddOp(ctx context.Context, op consensus.Op) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = b.p.cons.Commit(ctx, op)
		if err == nil || ctx.Err() != nil {
			break
		}
		if attempt > 0 {
			// Did an earlier attempt apply after all?
			st := b.p.cons.State()
			switch op.Type {
			case consensus.OpAddBegin:
				if a, ok := st.GetAdd(op.Add.ID); ok && a.Owner == op.Add.Owner {
					return nil
				}
			case consensus.OpAddCommit:
				if _, ok := st.GetAdd(op.Add.ID); !ok {
					if p, ok := st.Get(op.Pin.CID); ok && p.Kind == consensus.KindSharded {
						return nil
					}
				}
			}
		}
		if !errors.Is(err, consensus.ErrOutcomeUnknown) && !errors.Is(err, consensus.ErrNoLeader) {
			break
		}
	}
	return mapErr(err)
}

// replication applies the configured defaults to a request's factors.
func (b backend) replication(rmin, rmax int) (int, int) {
	if rmin == 0 {
		rmin = b.p.cfg.Pinning.ReplicationMin
	}
	if rmax == 0 {
		rmax = b.p.cfg.Pinning.ReplicationMax
		if rmin > rmax || rmin == consensus.Everywhere {
			rmax = rmin
		}
	}
	return rmin, rmax
}

// shardOpener allocates each shard as the cutter opens it and records it
// in consensus once the peers confirmed it. The cutter overlaps commits:
// a recordingWriter's Commit runs while Open chooses the next shard's
// peers, so the two touch disjoint fields (Open: shards, recent; Commit:
// keys, recorded).
type shardOpener struct {
	b          backend
	id         string
	size       int64
	rmin, rmax int
	// onShard, when not nil, hears of each shard consensus recorded.
	onShard func(api.ShardStatus) error
	// shards counts the shards opened so far; keys are the store keys
	// this peer wrote for the add; recorded counts the shards consensus
	// recorded.
	shards   int
	keys     []string
	recorded int
	// done are the shards a resumed add recorded before it was
	// interrupted: the same bytes must cut into them again.
	done []consensus.Shard
	// recent are the peers chosen for the latest shards, most recent
	// first (allocate.Request.Recent), at most recentShards of them.
	recent [][]string
}

// recentShards is how many earlier shards' peers the allocator sees: enough
// for peers that tie to take turns in clusters of a few dozen peers.
const recentShards = 32

// choose picks the peers for the next shard and the most bytes it may
// take: the requested size, or the room of the smallest chosen peer.
func (o *shardOpener) choose(ctx context.Context, index int) ([]peer.ID, int64, error) {
	infos, err := o.b.survey(ctx)
	if err != nil {
		return nil, 0, err
	}
	var cands []allocate.Candidate
	for _, pi := range infos {
		if pi.err == nil && pi.info.Free >= minShardRoom {
			cands = append(cands, pi.candidate())
		}
	}
	ids, err := allocate.Allocate(allocate.Request{Size: minShardRoom, RMin: o.rmin, RMax: o.rmax,
		Strategy: o.b.p.cfg.Health.Allocator, Recent: o.recent, Unit: freeUnit(o.size, cands)}, cands)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: shard %d: %v", api.ErrConflict, index, err)
	}
	o.recent = append([][]string{ids}, o.recent[:min(len(o.recent), recentShards-1)]...)
	limit := o.size
	peers := make([]peer.ID, len(ids))
	for i, id := range ids {
		peers[i], _ = peer.Decode(id)
		for _, c := range cands {
			if c.ID == id {
				limit = min(limit, c.Free)
			}
		}
	}
	return peers, limit, nil
}

// freeUnit is the granule in which a sharded add compares free space
// (allocate's Request.Unit): a shard, or a hundredth of the most free
// space rounded up to a power of two when that is more. Figures move by
// what is written between two peers' reports (by megabytes on peers that
// share a disk), and peers that differ by less should tie and take turns;
// a power of two keeps the unit's boundaries where they are while the
// figures move.
func freeUnit(shardSize int64, cands []allocate.Candidate) int64 {
	var most int64
	for _, c := range cands {
		most = max(most, c.Free)
	}
	unit := int64(1) << bits.Len64(uint64(most/100))
	return max(shardSize, unit)
}

func (o *shardOpener) Open(ctx context.Context, index int) (shard.Writer, int64, error) {
	if index < len(o.done) {
		o.shards = index + 1
		return &replayWriter{o: o, want: o.done[index]}, 1 << 62, nil
	}
	peers, limit, err := o.choose(ctx, index)
	if err != nil {
		return nil, 0, err
	}
	o.shards = index + 1
	f, err := o.b.p.newFanout(ctx, peers, limit)
	if err != nil {
		return nil, 0, err
	}
	return &recordingWriter{o: o, f: f, peers: peers}, limit, nil
}

// recordingWriter is one shard on its way: a fan-out to its peers, and the
// consensus op that records it once enough of them confirmed.
type recordingWriter struct {
	o     *shardOpener
	f     fanout
	peers []peer.ID // the peers allocated to it
}

func (w *recordingWriter) Put(ctx context.Context, b dag.Block) error { return w.f.Put(ctx, b) }

func (w *recordingWriter) Commit(ctx context.Context, info shard.Info, nodes []dag.Block) error {
	w.o.keys = append(w.o.keys, info.CID.String())
	confirmed, failures, err := w.f.Commit(ctx, info, nodes)
	if err != nil {
		return err
	}
	if len(confirmed) < w.o.rmin && len(confirmed) > 0 {
		// A receiver failed: other peers copy the shard from one that
		// confirmed it, instead of the whole add failing.
		more, errs := w.o.replace(ctx, info, nodes, confirmed, w.peers)
		confirmed, failures = append(confirmed, more...), append(failures, errs...)
	}
	if len(confirmed) < w.o.rmin {
		return fmt.Errorf("shard %d confirmed by %d peers, fewer than rmin %d: %w", info.Index, len(confirmed), w.o.rmin, errors.Join(failures...))
	}
	sh := consensus.Shard{CID: info.CID, Size: uint64(info.Size), Blocks: uint64(info.Blocks), Offset: info.Offset,
		Length: info.Length, Allocations: confirmed}
	// Peers hold the shard now: record it even if the client goes away
	// meanwhile. An op given up mid-flight can still apply after the add
	// returned, behind the back of the add that resumes it.
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shardOpTimeout)
	defer cancel()
	if err := w.o.b.commitAddOp(octx, consensus.AddShardOp(w.o.id, info.Index, sh, time.Now().UTC())); err != nil {
		return err
	}
	w.o.recorded = info.Index + 1
	if w.o.onShard == nil {
		return nil
	}
	return w.o.onShard(shardStatus(info.Index, sh))
}

func (w *recordingWriter) Abort() { w.f.Abort() }

// replayWriter stands for a shard a resumed add recorded before: nothing
// is sent; the cutter ends it after its recorded block count, and Commit
// checks that the bytes cut into the same shard.
type replayWriter struct {
	o    *shardOpener
	want consensus.Shard
}

func (w *replayWriter) MaxBlocks() int                       { return int(w.want.Blocks) }
func (w *replayWriter) Put(context.Context, dag.Block) error { return nil }
func (w *replayWriter) Abort()                               {}
func (w *replayWriter) Commit(ctx context.Context, info shard.Info, _ []dag.Block) error {
	if info.CID != w.want.CID || info.Length != w.want.Length {
		return fmt.Errorf("%w: the input differs from the interrupted add this one resumes, at shard %d (bytes %d..%d); "+
			"it is aborted, add the file again", api.ErrBadRequest, info.Index, info.Offset, info.Offset+info.Length)
	}
	w.o.recorded = info.Index + 1
	if w.o.onShard == nil {
		return nil
	}
	return w.o.onShard(shardStatus(info.Index, w.want))
}

// resumeKey says which adds are the same add: the same name and options.
func resumeKey(ap api.AddParams) string {
	b, _ := json.Marshal(ap)
	return string(b)
}

// interrupt remembers add id (its client went away) for a resume.
func (p *Peer) interrupt(id, key string) {
	p.addsMu.Lock()
	defer p.addsMu.Unlock()
	p.interrupted[id] = interruptedAdd{key: key, at: time.Now()}
}

// interruptedAdd is a sharded add whose client went away, kept for a
// resume until the reaper aborts it.
type interruptedAdd struct {
	key string
	at  time.Time
}

// resumable returns the interrupted add with key, still in progress in
// the state, and its recorded shards; it is no longer interrupted.
func (p *Peer) resumable(key string) (string, []consensus.Shard) {
	p.addsMu.Lock()
	defer p.addsMu.Unlock()
	for id, ia := range p.interrupted {
		if ia.key != key {
			continue
		}
		delete(p.interrupted, id)
		if a, ok := p.cons.State().GetAdd(id); ok && a.Owner == p.host.ID() {
			return id, a.Shards
		}
	}
	return "", nil
}

// expiredInterrupts returns the interrupted adds older than grace, and
// forgets them.
func (p *Peer) expiredInterrupts(grace time.Duration) []string {
	p.addsMu.Lock()
	defer p.addsMu.Unlock()
	var out []string
	for id, ia := range p.interrupted {
		if time.Since(ia.at) >= grace {
			out = append(out, id)
			delete(p.interrupted, id)
		}
	}
	return out
}

// replace sends the shard described by info and nodes, read back from one
// of have (this peer's store first), to peers other than tried, so that it
// reaches rmin holders; it returns those that confirmed it.
func (o *shardOpener) replace(ctx context.Context, info shard.Info, nodes []dag.Block, have, tried []peer.ID) ([]peer.ID, []error) {
	infos, err := o.b.survey(ctx)
	if err != nil {
		return nil, []error{err}
	}
	var cands []allocate.Candidate
	for _, pi := range infos {
		id := pi.member.ID
		if pi.err == nil && pi.info.Free >= info.Size && !slices.Contains(have, id) && !slices.Contains(tried, id) {
			cands = append(cands, pi.candidate())
		}
	}
	need := o.rmin - len(have)
	ids, err := allocate.Allocate(allocate.Request{Size: info.Size, RMin: need, RMax: max(o.rmax-len(have), need),
		Strategy: o.b.p.cfg.Health.Allocator}, cands)
	if err != nil {
		return nil, []error{fmt.Errorf("replace the failed receivers of shard %d: %w", info.Index, err)}
	}
	targets := make([]peer.ID, len(ids))
	for i, id := range ids {
		targets[i], _ = peer.Decode(id)
	}
	// A shard's blocks come back from a holder; the cluster-DAG (no
	// blocks, its list nodes are all of it) needs nothing but nodes.
	sc := &shardCopy{close: func() {}}
	if info.Blocks > 0 {
		sh := consensus.Shard{CID: info.CID, Blocks: uint64(info.Blocks)}
		if slices.Contains(have, o.b.p.host.ID()) {
			sc, err = o.b.p.openLocalShard(sh)
		} else {
			sc, err = o.b.p.openRemoteShard(ctx, have[0], sh)
		}
		if err != nil {
			return nil, []error{fmt.Errorf("read shard %d back to resend it: %w", info.Index, err)}
		}
	}
	defer sc.close()
	f, err := o.b.p.newFanout(ctx, targets, info.Size)
	if err != nil {
		return nil, []error{err}
	}
	for range sc.items {
		b, err := sc.next()
		if err == nil {
			err = f.Put(ctx, b)
		}
		if err != nil {
			f.Abort()
			return nil, []error{fmt.Errorf("resend shard %d: %w", info.Index, err)}
		}
	}
	confirmed, failures, err := f.Commit(ctx, info, nodes)
	if err != nil {
		return nil, []error{err}
	}
	o.b.p.log("add %s: shard %d resent to %v after a receiver failed; %d confirmed", o.id, info.Index, targets, len(confirmed))
	return confirmed, failures
}

// storeNodes stores the cluster-DAG's list nodes as a shard of their own on
// up to rmax peers and returns those that confirmed.
func (o *shardOpener) storeNodes(ctx context.Context, root cid.Cid, nodes []dag.Block) ([]peer.ID, error) {
	peers, limit, err := o.choose(ctx, o.shards)
	if err != nil {
		return nil, err
	}
	f, err := o.b.p.newFanout(ctx, peers, limit)
	if err != nil {
		return nil, err
	}
	// A list of list nodes: the shard's "blocks" are the nodes below the
	// root, and its list is the root itself.
	var size int64
	for _, n := range nodes { // CAR sections, as shard.Info counts them
		l := uint64(n.CID.ByteLen() + len(n.Data))
		size += int64(len(binary.AppendUvarint(nil, l))) + int64(l)
	}
	info := shard.Info{Index: o.shards, CID: root, Size: size, Blocks: 0}
	o.keys = append(o.keys, root.String())
	confirmed, failures, err := f.Commit(ctx, info, nodes)
	if err != nil {
		return nil, err
	}
	if len(confirmed) < o.rmin && len(confirmed) > 0 {
		more, errs := o.replace(ctx, info, nodes, confirmed, peers)
		confirmed, failures = append(confirmed, more...), append(failures, errs...)
	}
	if len(confirmed) < o.rmin {
		return nil, fmt.Errorf("cluster-DAG confirmed by %d peers, fewer than rmin %d: %w", len(confirmed), o.rmin, errors.Join(failures...))
	}
	return slices.Clip(confirmed), nil
}
