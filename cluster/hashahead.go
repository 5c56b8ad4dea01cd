package cluster

import (
	"context"
	"errors"
	"runtime"
	"sync"

	"github.com/shoal-project/shoal/dag"
)

// Hashing a shard copy's blocks on several cores.
//
// Every block read from a copy of a shard (openLocalShard, openRemoteShard)
// is hashed against its CID before it is used. SHA-256 runs at ~1.7 GB/s
// on one core of our machines, so a read that one goroutine both reads and
// hashes is bound by that core. A copy's blocks are therefore read ahead by
// a goroutine of their own into batches, each batch is hashed by one of
// hashWorkers goroutines, and the copy's user takes the blocks in order:
//
//	source --> reader goroutine --batch--> work  --> hash workers (hashWorkers)
//	                             \-batch--> order --> next(), on the user's
//	                                                  goroutine: waits for the
//	                                                  batch's hashes, then hands
//	                                                  out its blocks in order
//
// Who owns what: the reader goroutine alone calls the source (a store
// reader, or a stream's bufio.Reader) until the source fails or ends,
// or stop is called. A batch is the reader's while it fills it; then
// read-only, shared by a worker (until it closes the batch's done) and the
// user (until it takes the next batch, when it returns the batch to the
// reader through free). hashBatches batches exist per copy, so a copy holds
// about hashBatches x hashBatchSize bytes (2 MiB) whatever the size of its
// shard. A batch ends when the largest block so far would not fit in what
// is left of its arena. Blocks larger than half an arena (1 MiB chunks,
// the largest Kubo makes) grow the batches' arenas to two of them, up to
// maxArena (8 MiB per copy); a block that still does not fit (none that a
// chunker makes) is read into memory of its own and ends its batch.
//
// A block that fails its hash is reported by next in its place in the
// order, after the blocks before it, as a sequential read would report
// it; so is the source's error (io.EOF at the end).
const (
	// hashBatches is how many batches a copy has: one filled by the
	// reader, one waiting or being hashed per worker, one being used.
	hashBatches = 4
	// hashBatchSize is a batch's arena: two 256 KiB blocks (the default
	// chunk) with their CIDs and framing. Hashing a batch takes ~0.3 ms,
	// far more than handing it over.
	hashBatchSize = 512<<10 + 4<<10
	// hashBatchBlocks bounds the blocks of one batch (tiny blocks).
	hashBatchBlocks = 1024
	// maxArena bounds a grown arena: two 1 MiB chunks (Kubo's largest)
	// with their framing.
	maxArena = 2 * (1<<20 + 4<<10)
)

// hashWorkers is how many goroutines hash one copy's batches: two on our
// 2-core machines, at most four.
var hashWorkers = min(runtime.GOMAXPROCS(0), 4)

// arenaPool holds batch arenas, reused from one copy to the next: fresh
// allocations are slow on our VMs (../shared/PERF.md).
var arenaPool = sync.Pool{New: func() any {
	b := make([]byte, hashBatchSize)
	return &b
}}

// rawSource reads a copy's next block without hashing it, into buf's
// capacity when it fits (it returns how many bytes of buf it took) or into
// new memory (0). It returns io.EOF after the last block.
type rawSource func(buf []byte) (dag.Block, int, error)

// hashBatch is a run of consecutive blocks of a copy.
type hashBatch struct {
	arena  *[]byte
	blocks []dag.Block
	err    error         // the source's error after blocks, if any
	bad    int           // index of the first block that failed its hash, or -1
	badErr error         // its error
	done   chan struct{} // closed once the blocks are hashed
}

// hashAhead is the verified block stream of one copy; its next and stop
// belong to the copy's user.
type hashAhead struct {
	order  chan *hashBatch // filled batches, in the source's order
	free   chan *hashBatch // batches the user is done with
	cancel context.CancelFunc
	wg     sync.WaitGroup
	cur    *hashBatch // the batch next hands blocks from
	i      int        // the index in cur of the next block
	err    error      // once set, every next returns it
}

// errHashAheadStopped is next's error after stop, or when the reader ended
// early because stop was called.
var errHashAheadStopped = errors.New("the read was stopped")

// newHashAhead starts reading src ahead and hashing its blocks.
func newHashAhead(src rawSource) *hashAhead {
	ctx, cancel := context.WithCancel(context.Background())
	h := &hashAhead{
		order:  make(chan *hashBatch, hashBatches),
		free:   make(chan *hashBatch, hashBatches),
		cancel: cancel,
	}
	for range hashBatches {
		h.free <- &hashBatch{}
	}
	work := make(chan *hashBatch)
	for range hashWorkers {
		h.wg.Go(func() {
			for b := range work {
				hashBlocks(b)
			}
		})
	}
	h.wg.Go(func() {
		defer close(work)
		defer close(h.order)
		h.read(ctx, src, work)
	})
	return h
}

// read fills batches from src and passes each to a worker, then to the
// user, until src fails or ends or ctx is done.
func (h *hashAhead) read(ctx context.Context, src rawSource, work chan<- *hashBatch) {
	largest := 0 // the largest block section so far: a batch ends when it would not fit
	for {
		var b *hashBatch
		select {
		case b = <-h.free:
		case <-ctx.Done():
			return
		}
		if b.arena == nil {
			b.arena = arenaPool.Get().(*[]byte)
		}
		if grown := 2 * largest; grown <= maxArena && len(*b.arena) < grown {
			putArena(b)
			a := make([]byte, grown)
			b.arena = &a
		}
		b.blocks, b.err, b.bad, b.badErr = b.blocks[:0], nil, -1, nil
		b.done = make(chan struct{})
		arena, used := *b.arena, 0
		for len(b.blocks) < hashBatchBlocks && ctx.Err() == nil {
			blk, n, err := src(arena[used:used:len(arena)])
			if err != nil {
				b.err = err
				break
			}
			used += n
			own := n == 0 && len(blk.Data) > 0 // read into memory of its own
			if own {
				largest = max(largest, len(blk.Data)+maxCIDLen)
			} else {
				largest = max(largest, n)
			}
			b.blocks = append(b.blocks, blk)
			if own || len(arena)-used < largest {
				break // at most one block in memory of its own per batch
			}
		}
		// To a worker first: a batch the user can take is always hashed.
		select {
		case work <- b:
		case <-ctx.Done():
			return
		}
		select {
		case h.order <- b:
		case <-ctx.Done():
			return
		}
		if b.err != nil {
			return
		}
	}
}

// hashBlocks checks b's blocks against their CIDs, up to the first that
// fails.
func hashBlocks(b *hashBatch) {
	defer close(b.done)
	for i, blk := range b.blocks {
		if err := checkBlock(blk.CID, blk.Data); err != nil {
			b.bad, b.badErr = i, err
			return
		}
	}
}

// next returns the copy's next block, checked against its CID, or the
// source's error in its place (io.EOF after the last block). The block's
// Data is valid until the next call, which may return its batch's memory
// to the reader.
func (h *hashAhead) next() (dag.Block, error) {
	for h.err == nil {
		if b := h.cur; b != nil {
			switch {
			case h.i == b.bad:
				h.err = b.badErr
			case h.i < len(b.blocks):
				h.i++
				return b.blocks[h.i-1], nil
			case b.err != nil:
				h.err = b.err
			default:
				h.free <- b // never blocks: free holds every batch
				h.cur = nil
			}
			continue
		}
		b, ok := <-h.order
		if !ok {
			h.err = errHashAheadStopped
			break
		}
		<-b.done
		h.cur, h.i = b, 0
	}
	return dag.Block{}, h.err
}

// stop ends the reader and the workers and waits for them; the caller
// makes the source return first if it could block (a stream is reset).
// The copy's blocks are invalid after it.
func (h *hashAhead) stop() {
	h.cancel()
	h.wg.Wait()
	if h.err == nil {
		h.err = errHashAheadStopped
	}
	for _, ch := range []chan *hashBatch{h.order, h.free} {
	drain:
		for {
			select {
			case b, ok := <-ch:
				if !ok {
					break drain
				}
				putArena(b)
			default:
				break drain
			}
		}
	}
	if h.cur != nil {
		putArena(h.cur)
		h.cur = nil
	}
}

// putArena takes b's arena back to arenaPool, unless it was grown.
func putArena(b *hashBatch) {
	if b.arena != nil && len(*b.arena) == hashBatchSize {
		arenaPool.Put(b.arena)
	}
	b.arena = nil
	b.blocks = nil
}
