package ipfsserve

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/dag"
)

// A whole-file CAR of a sharded pin reads every block of every shard, so
// its leaves come faster from whole-shard streams, as `shoal export`
// reads them, than one /shoal/read/1 stream per block: a holder reads a
// shard sequentially past the page cache and sends it on one stream, and
// two workers here hash it (Cluster.Shard). The walk asks for blocks in
// depth-first pre-order, the shards hold them in post-order: leaves in
// file order, each internal node after its last leaf. So a feed keeps
// the leaves of its shard as they come, in a bounded buffer, and the
// walk takes them in the same order; internal nodes (one in 174 blocks)
// are needed before their leaves, so the walk fetches them on their own,
// ahead of need (Reader.advance), and the feed drops its copy.
//
//	shard k's stream:  l0 l1 ... l173 n0 l174 ...     (post-order)
//	the walk:          n0 l0 l1 ... l173 n1 l174 ...  (pre-order)
//	                   n0: fetched alone; l0..: from the feed
//
// A walk has at most two feeds open: the shard it reads and the next, so
// that the next stream has started when the walk gets there. A feed is
// dropped once the walk asks for a leaf of a later shard. A block the
// feed cannot give (the stream failed, the buffer is full of leaves the
// walk does not ask for, or the feed passed the block's bytes without
// it) is read as without a feed.

// feedBytes bounds the leaves one feed holds: 32 leaves of 256 KiB.
const feedBytes = 8 << 20

// feedIdle is how long a feed keeps leaves nobody takes: a walk that
// stopped (a bitswap client gone) frees its buffer after it, and the
// stream's holder its read slot.
const feedIdle = 30 * time.Second

// maxFeeds bounds the feeds of a Source at once (feedBytes each): four
// whole-file CARs at a time stream, more read block by block. Each feed
// is a read stream on a holder, which serves 32 at once.
const maxFeeds = 8

// ShardStream is one copy of a shard being read, its data blocks in the
// order the shard stores them, each checked against its CID.
type ShardStream interface {
	// Next returns the next block, its Data valid until the next call;
	// io.EOF after the last.
	Next() (dag.Block, error)
	// Close ends the read.
	Close()
}

// feed is the leaves of one shard's stream that the walk has not taken.
type feed struct {
	idx    int
	cancel context.CancelFunc
	idle   time.Duration // feedIdle; shorter in tests

	mu      sync.Mutex
	wake    chan struct{} // closed and replaced on every change
	leaves  map[string]fedLeaf
	bytes   int
	pos     uint64              // the file offset after the last leaf read
	taken   map[string]struct{} // leaves the walk asked for: a copy is dropped
	stalled bool                // the stream waits for room in the buffer
	done    bool                // the stream ended or failed
}

// fedLeaf is a leaf in a feed's buffer and its offset in the file.
type fedLeaf struct {
	data []byte
	off  uint64
}

// StreamShards tells a Reader with ReadAhead on, of a sharded pin, to read
// its leaves from whole-shard streams (see feed) for as long as ctx lasts.
// It must be called before the first Block of the walk after the root.
func (r *Reader) StreamShards(ctx context.Context) {
	if r.pin.Kind != consensus.KindSharded || !r.ahead {
		return
	}
	r.streaming, r.feedCtx = true, ctx
}

// fedSpan reports whether the block covering sp would come from a feed:
// a leaf, or a node no longer than a leaf may be, with bytes.
func (r *Reader) fedSpan(sp span, hasSpan bool) bool {
	return r.streaming && hasSpan && sp.to > sp.from && sp.to-sp.from <= dag.BlockLimit
}

// fromFeed returns block c, covering sp, from the feed of its shard, or
// false when it is to be read without one.
func (r *Reader) fromFeed(ctx context.Context, c cid.Cid, sp span, hasSpan bool) ([]byte, bool) {
	if !r.fedSpan(sp, hasSpan) {
		return nil, false
	}
	f := r.feedFor(sp)
	if f == nil {
		return nil, false
	}
	return f.take(ctx, c.KeyString(), sp)
}

// feedFor returns the feed of the shard whose leaves cover sp, opening it
// and the next shard's, and dropping the feeds of earlier shards; nil
// when sp crosses a shard boundary (an internal node, read alone), the
// walk moved back or the Source has no feed to spare.
func (r *Reader) feedFor(sp span) *feed {
	r.mu.Lock()
	defer r.mu.Unlock()
	shards := r.pin.Shards
	k := sort.Search(len(shards), func(i int) bool { return shards[i].Offset+shards[i].Length > sp.from })
	if k == len(shards) || sp.to > shards[k].Offset+shards[k].Length {
		return nil
	}
	open := r.feeds[:0]
	for _, f := range r.feeds {
		if f.idx < k {
			f.cancel()
			continue
		}
		open = append(open, f)
	}
	r.feeds = open
	if len(open) > 0 && open[0].idx > k {
		return nil
	}
	for i := k; i <= k+1 && i < len(shards); i++ {
		if !slices.ContainsFunc(r.feeds, func(f *feed) bool { return f.idx == i }) {
			if f := r.openFeed(i); f != nil {
				r.feeds = append(r.feeds, f)
			}
		}
	}
	if len(r.feeds) > 0 && r.feeds[0].idx == k {
		return r.feeds[0]
	}
	return nil
}

// openFeed starts the stream of shard idx, or returns nil when the
// Source has no feed to spare or is closed. r.mu is held.
func (r *Reader) openFeed(idx int) *feed {
	select {
	case r.s.feeds <- struct{}{}:
	default:
		return nil
	}
	if !r.s.enter() {
		<-r.s.feeds
		return nil
	}
	sh := r.pin.Shards[idx]
	ctx, cancel := context.WithCancel(r.feedCtx)
	f := &feed{idx: idx, cancel: cancel, idle: feedIdle, wake: make(chan struct{}), leaves: map[string]fedLeaf{},
		taken: map[string]struct{}{}, pos: sh.Offset}
	go func() {
		defer r.s.wg.Done()
		defer cancel()
		defer func() {
			// The stream ended: its token goes back, its leaves wait for
			// the walk, for a while.
			f.finish()
			<-r.s.feeds
			f.drain(ctx)
		}()
		end := sh.Offset + sh.Length
		if sh.Length == 0 {
			return // internal nodes only
		}
		st, err := r.s.c.Shard(ctx, sh)
		if err != nil {
			return
		}
		defer st.Close()
		// The blocks after the shard's last leaf are internal nodes and
		// its list: the walk needs none of them from here.
		for f.position() < end {
			b, err := st.Next()
			if err != nil {
				return // io.EOF, or the walk reads the rest without the feed
			}
			data, err := dag.FileBytes(b)
			if err != nil {
				return
			}
			if len(data) == 0 {
				continue // an internal node: the walk has it already
			}
			if !f.put(ctx, b.CID.KeyString(), b.Data, uint64(len(data))) {
				return
			}
		}
	}()
	return f
}

// position is the file offset after the last leaf read.
func (f *feed) position() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pos
}

// changed wakes the feed's waiters. f.mu is held.
func (f *feed) changed() {
	close(f.wake)
	f.wake = make(chan struct{})
}

// wait waits for a change, f.mu held and released meanwhile; false once
// ctx ended.
func (f *feed) wait(ctx context.Context) bool {
	w := f.wake
	f.mu.Unlock()
	select {
	case <-w:
	case <-ctx.Done():
	}
	f.mu.Lock()
	return ctx.Err() == nil
}

// waitIdle is wait for at most f.idle; false also when no change came.
func (f *feed) waitIdle(ctx context.Context) bool {
	w := f.wake
	f.mu.Unlock()
	t := time.NewTimer(f.idle)
	defer t.Stop()
	ok := false
	select {
	case <-w:
		ok = true
	case <-ctx.Done():
	case <-t.C:
	}
	f.mu.Lock()
	return ok && ctx.Err() == nil
}

// drain waits until the walk took the leaves of an ended stream, or took
// none for f.idle, or ctx ended; then the rest go.
func (f *feed) drain(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.leaves) > 0 && f.waitIdle(ctx) {
	}
	f.clear()
}

// clear drops the leaves held. f.mu is held.
func (f *feed) clear() {
	clear(f.leaves)
	f.bytes = 0
	f.changed()
}

// finish marks the stream ended.
func (f *feed) finish() {
	f.mu.Lock()
	f.done = true
	f.changed()
	f.mu.Unlock()
}

// put adds a leaf of n file bytes, a copy of data, waiting for room; a
// leaf the walk already asked for, or already held, is dropped. It
// reports false once ctx ends.
func (f *feed) put(ctx context.Context, key string, data []byte, n uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		_, took := f.taken[key]
		if _, held := f.leaves[key]; took || held {
			f.pos += n
			return true
		}
		if f.bytes == 0 || f.bytes+len(data) <= feedBytes {
			break
		}
		f.stalled = true
		f.changed()
		if !f.waitIdle(ctx) {
			f.clear() // the walk stopped, or went on without the feed
			return false
		}
	}
	f.stalled = false
	f.leaves[key] = fedLeaf{data: append([]byte(nil), data...), off: f.pos}
	f.bytes += len(data)
	f.pos += n
	f.changed()
	return true
}

// take returns the leaf key, covering sp, once the stream brings it; false
// when it will not: the stream ended, or passed sp without it, or waits
// for room the walk will not make. Leaves before sp are behind the walk:
// a full buffer drops them.
func (f *feed) take(ctx context.Context, key string, sp span) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		if l, ok := f.leaves[key]; ok {
			delete(f.leaves, key)
			f.bytes -= len(l.data)
			f.taken[key] = struct{}{}
			f.changed()
			return l.data, true
		}
		if f.stalled {
			for k, l := range f.leaves {
				if l.off < sp.from {
					delete(f.leaves, k)
					f.bytes -= len(l.data)
					f.stalled = false
				}
			}
			if !f.stalled {
				f.changed()
				continue
			}
		}
		if f.done || f.stalled || f.pos >= sp.to {
			f.taken[key] = struct{}{} // read elsewhere: drop the stream's copy
			return nil, false
		}
		if !f.wait(ctx) {
			return nil, false
		}
	}
}
