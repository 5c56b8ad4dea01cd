package ipfsserve

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/store"
)

// Cluster is what a Source reads through: this peer's pinset, its store
// and the stores of the other members. Package cluster implements it over
// a running peer. Every method is called on request goroutines,
// concurrently; none may retain the slices it returns.
type Cluster interface {
	// Pin returns the pin of root in this peer's state as it is now,
	// without a read barrier: a follower's state lags the leader's by
	// one heartbeat at most while it is in contact.
	Pin(root cid.Cid) (consensus.Pin, bool)
	// Local returns block c from this peer's store, checked against c; an
	// error wrapping store.ErrNotFound when the store holds no copy.
	Local(c cid.Cid) ([]byte, error)
	// Fetch asks peer from for block c (over /shoal/read/1) and returns it
	// checked against c. It ends when ctx does.
	Fetch(ctx context.Context, from peer.ID, c cid.Cid) ([]byte, error)
	// Stored reports whether this peer's store holds block c, and its
	// size, without reading it.
	Stored(c cid.Cid) (size int, ok bool)
	// Holding returns the root of the pin whose part in this peer's store
	// holds block c: a plain pin's, or, for a dag-pb or raw block, a
	// sharded pin's shard. False when no such part holds it.
	Holding(c cid.Cid) (root cid.Cid, ok bool)
	// Members are the cluster's members other than this peer.
	Members(ctx context.Context) []peer.ID
	// Self is this peer.
	Self() peer.ID
	// Shard reads shard sh of a sharded pin from this peer's store or
	// from its holders, its blocks checked against their CIDs. The read
	// ends when ctx does.
	Shard(ctx context.Context, sh consensus.Shard) (ShardStream, error)
}

// Sentinel errors of Source and Reader; the gateway maps them to statuses.
var (
	// ErrNotPinned: the root of a read is not pinned in the cluster (or no
	// longer is).
	ErrNotPinned = errors.New("not pinned in this cluster")
	// ErrUnavailable: a block of a pinned DAG is on no peer that answered.
	ErrUnavailable = errors.New("no peer could serve the block")
	// ErrClosed: the Source was closed.
	ErrClosed = errors.New("the block source is closed")
)

// SourceConfig bounds what a Source may take of this peer and the cluster.
type SourceConfig struct {
	// CacheBytes bounds the cache of blocks fetched from other peers.
	CacheBytes int64
	// Fetches is how many blocks may be fetched from other peers at once,
	// for all requests together.
	Fetches int
}

// DefaultSourceConfig returns the defaults of a gateway's Source.
func DefaultSourceConfig() SourceConfig {
	return SourceConfig{
		// 32 MiB: 128 blocks of 256 KiB. A gateway's traversals do not
		// ask for a block twice (a CAR sends each once, a file reader
		// moves forward), so the cache serves the few repeats: the root
		// and first leaves of a HEAD followed by a GET, and repeated
		// leaves of one file.
		CacheBytes: 32 << 20,
		// A holder serves at most 32 reads at once (cluster/limits.go);
		// a gateway peer takes at most a quarter of them, so that public
		// load leaves cat, export and repairs of the cluster room.
		Fetches: 8,
	}
}

// Validate reports a config New refuses.
func (c SourceConfig) Validate() error {
	switch {
	case c.CacheBytes < 0:
		return fmt.Errorf("ipfsserve: cache bytes %d may not be negative", c.CacheBytes)
	case c.Fetches < 1:
		return fmt.Errorf("ipfsserve: fetches %d must be at least 1", c.Fetches)
	}
	return nil
}

// Source serves the blocks of the DAGs the cluster pins, and nothing else
// (see the package doc). It is safe for concurrent use.
type Source struct {
	c       Cluster
	cache   *cache
	fetches chan struct{} // one token per remote fetch in flight
	feeds   chan struct{} // one token per shard stream (feed.go)

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // Block calls in flight
}

// NewSource returns a Source reading through c.
func NewSource(c Cluster, cfg SourceConfig) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Source{c: c, cache: newCache(cfg.CacheBytes), fetches: make(chan struct{}, cfg.Fetches),
		feeds: make(chan struct{}, maxFeeds)}, nil
}

// Close makes every later Block fail with ErrClosed and waits for the
// calls in flight, which end once their contexts do.
func (s *Source) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Source) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// pinCheckEvery is how often a Reader looks again whether its root is
// still pinned: an unpin ends the reads in flight within a second. Once a
// second, not per block, because a pin's copy holds its shard list (400
// KB for 4096 shards).
const pinCheckEvery = time.Second

// maxSpans bounds the spans a Reader remembers. A depth-first traversal
// holds at most depth x fan-out of them (4 x 174 for a 1 TiB file of 256
// KiB blocks); beyond the bound, blocks are looked for on every member
// instead.
const maxSpans = 1 << 16

// Open starts a read of the DAG pinned at root. It fails with ErrNotPinned
// when root is not a pin's root: a shard, a cluster-DAG or a block inside
// a DAG is never a root.
func (s *Source) Open(root cid.Cid) (*Reader, error) {
	pin, ok := s.c.Pin(root)
	if !ok {
		return nil, fmt.Errorf("%s: %w", root, ErrNotPinned)
	}
	r := &Reader{s: s, root: root, pin: pin, checked: time.Now()}
	if pin.Kind == consensus.KindSharded {
		r.spans = map[string]span{root.KeyString(): {0, pin.Size}}
	}
	return r, nil
}

// span is the file bytes [from, to) a block of a sharded file covers.
type span struct{ from, to uint64 }

// Reader reads the blocks of one pinned DAG for one request. Its Block
// must only be asked for the root and for CIDs that blocks it returned
// link to: that is what confines it to the pinned DAG. It is safe for
// concurrent use (a file reader prefetches on goroutines of its own).
type Reader struct {
	s    *Source
	root cid.Cid

	mu      sync.Mutex
	pin     consensus.Pin
	checked time.Time
	// spans are the file bytes of blocks linked from blocks already
	// returned and not yet asked for (sharded pins only): they name the
	// shards that hold them.
	spans   map[string]span
	members []peer.ID // other members, asked for once
	good    peer.ID   // the last peer that served a block: asked first

	// Read-ahead (ReadAhead): a whole-DAG walk in depth-first order asks
	// for next's top first. The readAhead blocks on top are fetched into
	// the cache before they are asked for; started
	// holds each such fetch while it runs. Blocks of this peer's store are
	// read ahead too, so that their hashing runs beside the walk, into
	// ready rather than the cache: the page cache holds them, the cache
	// is for other peers' blocks.
	ahead   bool
	next    []child // a stack: the blocks expected next, the next on top
	started map[string]chan struct{}
	ready   map[string][]byte // local blocks read ahead, not yet asked for

	// Shard streams (StreamShards, feed.go): the leaves of a whole-file
	// walk of a sharded pin, from at most two feeds at a time.
	streaming bool
	feedCtx   context.Context
	feeds     []*feed // in shard order
}

// readAhead is how many blocks a whole-DAG read fetches ahead of the
// walk: with one stream per block, one round trip at a time, a walk that
// waits for each block goes no faster than the network's latency allows.
// Eight at once is the Source's whole fetch budget (DefaultSourceConfig).
const readAhead = 8

// maxNext bounds a Reader's next: a depth-first walk holds depth x
// fan-out of them (4 x 174 for 1 TiB).
const maxNext = 4096

// aheadSearch is how deep into next a block asked for is looked for: a
// walk that skips blocks (a duplicate it already sent) asks for one a
// little below the top.
const aheadSearch = 64

// ReadAhead tells the Reader that the walk reads the whole DAG, depth
// first, each block once: a CAR of dag-scope=all. It must be called
// before the first Block.
func (r *Reader) ReadAhead() {
	r.ahead = true
	r.started = map[string]chan struct{}{}
	r.ready = map[string][]byte{}
}

// takeReady returns and forgets c's bytes if they were read ahead.
func (r *Reader) takeReady(c cid.Cid) ([]byte, bool) {
	if !r.ahead {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	data, ok := r.ready[c.KeyString()]
	delete(r.ready, c.KeyString())
	return data, ok
}

// Root is the pinned root the Reader reads.
func (r *Reader) Root() cid.Cid { return r.root }

// Block returns the bytes of block c of the pinned DAG, checked against c:
// from the cache, this peer's store, or the peers that hold it. It fails
// with ErrNotPinned once the root was unpinned, with ErrUnavailable when
// no peer could serve c.
func (r *Reader) Block(ctx context.Context, c cid.Cid) ([]byte, error) {
	sp, hasSpan := r.takeSpan(c)
	if r.ahead {
		r.waitAhead(ctx, c)
	}
	data, err := r.block(ctx, c, sp, hasSpan)
	if err != nil {
		return nil, err
	}
	var kids []child
	switch {
	case hasSpan:
		kids = children(c, data, sp)
		r.learn(kids)
	case r.ahead:
		for _, l := range links(c, data) {
			kids = append(kids, child{c: l})
		}
	}
	if r.ahead {
		r.advance(ctx, c, kids)
	}
	return data, nil
}

// waitAhead waits for the read-ahead fetch of c, if one was started: its
// block is then in the cache.
func (r *Reader) waitAhead(ctx context.Context, c cid.Cid) {
	r.mu.Lock()
	done, ok := r.started[c.KeyString()]
	delete(r.started, c.KeyString())
	r.mu.Unlock()
	if ok {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}

// advance takes c off the top of next, puts its children there in their
// order, and starts fetching the top readAhead blocks that lie on other
// peers and are not being fetched yet. The fetches run on goroutines of
// their own, each ending when its block is in the cache or ctx ends.
func (r *Reader) advance(ctx context.Context, c cid.Cid, kids []child) {
	r.mu.Lock()
	for i := len(r.next) - 1; i >= max(0, len(r.next)-aheadSearch); i-- {
		if r.next[i].c.Equals(c) {
			r.next = r.next[:i]
			break
		}
	}
	if len(r.next)+len(kids) > maxNext {
		// Walks this model does not fit (several clients of one root):
		// the oldest expectations go.
		r.next = append(r.next[:0], r.next[len(r.next)/2:]...)
	}
	for i := len(kids) - 1; i >= 0 && len(r.next) < maxNext; i-- {
		r.next = append(r.next, kids[i])
	}
	type job struct {
		k    child
		done chan struct{}
	}
	var jobs []job
	for i := len(r.next) - 1; i >= max(0, len(r.next)-readAhead); i-- {
		k := r.next[i]
		key := k.c.KeyString()
		if _, ok := r.started[key]; ok {
			continue
		}
		if _, ok := r.s.cache.get(k.c); ok {
			continue
		}
		if !k.has {
			k.sp, k.has = r.spans[key]
		}
		if r.fedSpan(k.sp, k.has) {
			continue // its shard's stream brings it
		}
		done := make(chan struct{})
		r.started[key] = done
		jobs = append(jobs, job{k, done})
	}
	r.mu.Unlock()
	for _, j := range jobs {
		go func() {
			// Local blocks too: reading and hashing them here spreads
			// the walk's hashing over the cores. A remote block lands in
			// the cache; a failed fetch is tried again, and explained,
			// by the walk's own.
			var local []byte
			if _, ok := r.s.c.Stored(j.k.c); ok {
				local, _ = r.block(ctx, j.k.c, j.k.sp, j.k.has)
			} else {
				_, _ = r.block(ctx, j.k.c, j.k.sp, j.k.has)
			}
			key := j.k.c.KeyString()
			r.mu.Lock()
			if local != nil {
				if len(r.ready) >= 4*readAhead {
					clear(r.ready) // blocks the walk skipped
				}
				r.ready[key] = local
			}
			if r.started[key] == j.done {
				delete(r.started, key)
			}
			r.mu.Unlock()
			close(j.done)
		}()
	}
}

// block is Block for a block whose span, if hasSpan, is sp; it learns
// nothing.
func (r *Reader) block(ctx context.Context, c cid.Cid, sp span, hasSpan bool) ([]byte, error) {
	if !r.s.enter() {
		return nil, ErrClosed
	}
	defer r.s.wg.Done()
	if c.Prefix().MhType == mh.IDENTITY {
		dec, err := mh.Decode(c.Hash())
		if err != nil {
			return nil, fmt.Errorf("identity CID %s: %w", c, err)
		}
		return dec.Digest, nil
	}
	if err := r.recheck(); err != nil {
		return nil, err
	}
	if data, ok := r.takeReady(c); ok {
		return data, nil
	}
	if data, ok := r.s.cache.get(c); ok {
		return data, nil
	}
	if data, ok := r.fromFeed(ctx, c, sp, hasSpan); ok {
		return data, nil
	}
	data, err := r.s.c.Local(c)
	if err == nil {
		return data, nil
	}
	var errs []string
	if !errors.Is(err, store.ErrNotFound) {
		errs = append(errs, "this peer: "+err.Error())
	}
	select {
	case r.s.fetches <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-r.s.fetches }()
	for _, id := range r.holders(ctx, sp, hasSpan) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := r.s.c.Fetch(ctx, id, c)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", id, err))
			continue
		}
		r.mu.Lock()
		r.good = id
		r.mu.Unlock()
		r.s.cache.put(c, data)
		return data, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(errs) == 0 {
		errs = append(errs, "no other member")
	}
	return nil, fmt.Errorf("%w: block %s of %s: %s", ErrUnavailable, c, r.root, strings.Join(errs, "; "))
}

// recheck looks again, at most every pinCheckEvery, whether the root is
// still pinned, and takes its current placements.
func (r *Reader) recheck() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < pinCheckEvery {
		return nil
	}
	pin, ok := r.s.c.Pin(r.root)
	if !ok {
		return fmt.Errorf("%s: %w", r.root, ErrNotPinned)
	}
	r.pin, r.checked = pin, time.Now()
	return nil
}

// takeSpan returns and forgets the span of c, if known.
func (r *Reader) takeSpan(c cid.Cid) (span, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sp, ok := r.spans[c.KeyString()]
	if ok {
		delete(r.spans, c.KeyString())
	}
	return sp, ok
}

// learn records the spans of a returned block's children, up to maxSpans.
func (r *Reader) learn(kids []child) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range kids {
		if len(r.spans) >= maxSpans {
			return
		}
		r.spans[k.c.KeyString()] = k.sp
	}
}

// child is a link of a block, and for a sharded file's block (has) the
// bytes it covers.
type child struct {
	c   cid.Cid
	sp  span
	has bool
}

// children returns the links of c, a block of a sharded file covering sp,
// with their spans: a dag-pb node's own data comes first, then its
// children in link order, each as long as its UnixFS block size. A block
// that is not a UnixFS file node has none: its links are looked for
// everywhere.
func children(c cid.Cid, data []byte, sp span) []child {
	if c.Type() != cid.DagProtobuf {
		return nil
	}
	nd, err := mdag.DecodeProtobuf(data)
	if err != nil || len(nd.Links()) == 0 {
		return nil
	}
	fsn, err := ft.FSNodeFromBytes(nd.Data())
	if err != nil || fsn.NumChildren() != len(nd.Links()) {
		return nil
	}
	pos := sp.from + uint64(len(fsn.Data()))
	out := make([]child, len(nd.Links()))
	for i, l := range nd.Links() {
		end := pos + fsn.BlockSize(i)
		out[i] = child{l.Cid, span{pos, end}, true}
		pos = end
	}
	return out
}

// holders are the peers to ask for a block, in order, this peer left out:
// for a block of a sharded file whose span is known, the holders of the
// shards that may hold it, then every other member; for a plain pin, its
// allocations, then every other member. The last peer that served a
// block of this read goes first when nothing better is known.
func (r *Reader) holders(ctx context.Context, sp span, hasSpan bool) []peer.ID {
	r.mu.Lock()
	pin, good, members := r.pin, r.good, r.members
	r.mu.Unlock()
	if members == nil {
		members = r.s.c.Members(ctx)
		r.mu.Lock()
		r.members = members
		r.mu.Unlock()
	}
	var first []peer.ID
	switch {
	case pin.Kind != consensus.KindSharded:
		first = pin.Allocations
	case hasSpan:
		for _, k := range shardsEnding(pin.Shards, sp.to) {
			first = append(first, pin.Shards[k].Allocations...)
		}
	case good != "":
		first = []peer.ID{good}
	}
	out := make([]peer.ID, 0, len(first)+len(members))
	seen := map[peer.ID]bool{r.s.c.Self(): true}
	for _, l := range [][]peer.ID{first, members} {
		for _, id := range l {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return out
}

// shardsEnding are the indexes of the shards that may hold a block whose
// span ends at byte end, in file order. The ingest stream is in post-order
// (leaves in file order, each internal node right after its last leaf),
// so a block ending at end lies in a shard whose leaves cover
// [Offset, Offset+Length] with end inside, both ends included: at a shard
// boundary, the shard that ends there (where every leaf and most internal
// nodes lie) or the next ones (an internal node cut into the next shard,
// or shards of internal nodes only, of Length 0).
func shardsEnding(shards []consensus.Shard, end uint64) []int {
	k := sort.Search(len(shards), func(i int) bool { return shards[i].Offset+shards[i].Length >= end })
	var out []int
	for ; k < len(shards) && shards[k].Offset <= end; k++ {
		out = append(out, k)
	}
	return out
}
