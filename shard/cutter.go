package shard

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/dag"
)

// Info describes one closed shard: what the sharded pin records of it.
type Info struct {
	Index int
	// CID is the root of the shard's list tree (KindShard).
	CID cid.Cid
	// Size is the bytes the shard takes in a store: its blocks and list
	// nodes framed as CAR sections.
	Size int64
	// Blocks is the number of DAG blocks in the shard (list nodes not
	// counted).
	Blocks int
	// Offset and Length are the range of file bytes its leaves cover.
	Offset, Length uint64
}

// Writer receives one shard's blocks. The cutter calls it from its own
// goroutine, never concurrently.
type Writer interface {
	// Put sends one block; b is only valid during the call.
	Put(ctx context.Context, b dag.Block) error
	// Commit ends the shard: nodes are its list node blocks, root last.
	// It returns once the shard is safe where it went.
	Commit(ctx context.Context, info Info, nodes []dag.Block) error
	// Abort drops a shard that will not be committed. Safe after Commit.
	Abort()
}

// BlockLimiter is implemented by a Writer whose shard must end after a
// given number of blocks whatever its size: a resumed add replays the
// shards it recorded, which must end where they ended the first time.
type BlockLimiter interface {
	MaxBlocks() int
}

// Opener begins shards. The sharded add implements it: it picks the peers
// for the shard and opens a stream to each.
type Opener interface {
	// Open begins shard index and returns where its blocks go and the most
	// bytes (as Info.Size counts them) the shard may take: the requested
	// shard size, or less when an allocated peer has less room.
	Open(ctx context.Context, index int) (Writer, int64, error)
}

// ErrBlockTooBig is wrapped when a block cannot fit even in an empty shard.
var ErrBlockTooBig = errors.New("block does not fit in a shard")

// Cutter cuts the ingest pipeline's block stream into consecutive shards.
// It implements ingest.Sink and lives on the pipeline's builder goroutine.
//
// Memory: the CIDs of the open shard's blocks (to build its list node) and
// one Info per closed shard; never block data.
//
// By default a shard's Commit runs on the cutter's goroutine, so the
// stream waits while the shard is made safe (receivers fsync, consensus
// records it). After Overlap, each Commit runs on a goroutine of its own
// while the next shard fills, at most one at a time and in order:
//
//	builder:   [fill 0][fill 1 .........][fill 2 ........]
//	committer:         [commit 0]        [commit 1]
//
// A failed commit fails the next Put, Close, or the next commit's start;
// Close and Abort return only once no commit is running.
type Cutter struct {
	open     Opener
	maxLinks int

	// commitCtx, when set (Overlap), is the context of background commits;
	// committing is closed with the last one's error, nil when none runs.
	commitCtx  context.Context
	committing chan error

	shards []Info
	w      Writer
	limit  int64
	// maxBlocks, when above 0, ends the open shard after that many
	// blocks (BlockLimiter).
	maxBlocks int
	cur       Info
	// est bounds from above what the open shard will take once its list
	// nodes are added; cur.Size counts its block sections exactly.
	est    int64
	cids   []cid.Cid
	offset uint64
}

// NewCutter returns a cutter that begins shards through open. maxLinks is
// the list node width (MaxLinks unless a test wants deep trees).
func NewCutter(open Opener, maxLinks int) *Cutter {
	return &Cutter{open: open, maxLinks: maxLinks}
}

// Overlap makes the cutter commit each shard in the background, under
// ctx, while the next one fills (see Cutter). ctx must outlive the
// stream: the pipeline's own context ends before the last commit does.
// Call it before the first Put.
func (s *Cutter) Overlap(ctx context.Context) { s.commitCtx = ctx }

// wait waits for the running background commit, if any, and returns its
// error.
func (s *Cutter) wait() error {
	if s.committing == nil {
		return nil
	}
	err := <-s.committing
	s.committing = nil
	return err
}

// failed returns the error of a background commit that already failed,
// without waiting for one still running.
func (s *Cutter) failed() error {
	select {
	case err := <-s.committing: // a nil channel is never ready
		s.committing = nil
		return err
	default:
		return nil
	}
}

// sectionCost is what a block costs in a CAR file: its section.
func sectionCost(c cid.Cid, data int) int64 {
	l := uint64(c.ByteLen() + data)
	return int64(uvarintLen(l)) + int64(l)
}

// linkCost bounds what one more link adds to the shard's list nodes: the
// link itself (tag, length, prefix, CID: c.ByteLen()+5) and a share of
// the next node's header, CAR framing and link from the level above
// (under 160 bytes), spread over the maxLinks links that fill a node.
func linkCost(c cid.Cid, maxLinks int) int64 {
	return int64(c.ByteLen()+5) + int64(320/maxLinks+1)
}

// listOverhead bounds the fixed part of a shard's list tree: the root's
// header and CAR framing.
const listOverhead = 256

// Put adds b to the open shard, closing it first when b would overflow it.
func (s *Cutter) Put(ctx context.Context, b dag.Block) error {
	if err := s.failed(); err != nil {
		return err
	}
	section := sectionCost(b.CID, len(b.Data))
	cost := section + linkCost(b.CID, s.maxLinks)
	if s.w != nil && (s.est+cost > s.limit || s.maxBlocks > 0 && s.cur.Blocks >= s.maxBlocks) {
		if err := s.closeShard(ctx); err != nil {
			return err
		}
	}
	if s.w == nil {
		if err := s.openShard(ctx); err != nil {
			return err
		}
		if cost+listOverhead > s.limit {
			return fmt.Errorf("%w: block %s takes %d bytes, shard %d may take at most %d",
				ErrBlockTooBig, b.CID, cost+listOverhead, s.cur.Index, s.limit)
		}
	}
	if err := s.w.Put(ctx, b); err != nil {
		return err
	}
	s.est += cost
	s.cur.Size += section
	s.cur.Blocks++
	s.cur.Length += b.FileBytes
	s.cids = append(s.cids, b.CID)
	return nil
}

func (s *Cutter) openShard(ctx context.Context) error {
	idx := len(s.shards)
	w, limit, err := s.open.Open(ctx, idx)
	if err != nil {
		return fmt.Errorf("open shard %d: %w", idx, err)
	}
	s.w, s.limit, s.maxBlocks = w, limit, 0
	if bl, ok := w.(BlockLimiter); ok {
		s.maxBlocks = bl.MaxBlocks()
	}
	s.cur = Info{Index: idx, Offset: s.offset}
	s.est = listOverhead
	s.cids = s.cids[:0]
	return nil
}

// closeShard builds the open shard's list tree and commits it.
func (s *Cutter) closeShard(ctx context.Context) error {
	root, nodes, err := BuildList(KindShard, s.cids, s.maxLinks)
	if err != nil {
		return err
	}
	s.cur.CID = root
	for _, n := range nodes {
		s.cur.Size += sectionCost(n.CID, len(n.Data))
	}
	w, info := s.w, s.cur
	s.w = nil
	commit := func(ctx context.Context) error {
		if err := w.Commit(ctx, info, nodes); err != nil {
			w.Abort()
			return fmt.Errorf("commit shard %d: %w", info.Index, err)
		}
		return nil
	}
	// The previous shard first: commits end in order, one at a time.
	if err := s.wait(); err != nil {
		w.Abort()
		return err
	}
	if s.commitCtx == nil {
		if err := commit(ctx); err != nil {
			return err
		}
	} else {
		done := make(chan error, 1)
		s.committing = done
		go func() { done <- commit(s.commitCtx) }()
	}
	s.shards = append(s.shards, info)
	s.offset += info.Length
	return nil
}

// Close commits the last shard and returns every shard in order. A stream
// with no blocks has no shards.
func (s *Cutter) Close(ctx context.Context) ([]Info, error) {
	if s.w != nil {
		if err := s.closeShard(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.wait(); err != nil {
		return nil, err
	}
	return s.shards, nil
}

// Abort drops the open shard, if any, and waits for a background commit
// to end (the caller cancels Overlap's context to hurry it).
func (s *Cutter) Abort() {
	if s.w != nil {
		s.w.Abort()
		s.w = nil
	}
	_ = s.wait()
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
