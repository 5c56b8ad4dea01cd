package cluster

import (
	"context"
	"io"
	"sync"
)

// Read-ahead of a sharded cat (read.go): the shards covering the range are
// fetched by goroutines of their own, at most readAheadShards at once, and
// written to the API client strictly in order by the request's goroutine.
//
//	fetch goroutine, shard k    --chunks-->  [queue k:   <= 4 x 1 MiB]  --+
//	  (fromHolders: blocks hashed                                         |  request goroutine:
//	   by hashahead.go; copy the                                          +- queue k, then k+1,
//	   leaves' bytes)                                                     |
//	fetch goroutine, shard k+1  --chunks-->  [queue k+1: <= 4 x 1 MiB]  --+  ... -> API client
//
// Who owns what: a fetch goroutine owns its shard's source (a store reader
// or a /shoal/read/1 stream, and its holder fail-over) and the chunk it is
// filling; a filled chunk passes, through the shard's queue, to the request
// goroutine, which alone writes to the client and returns chunks to
// chunkPool. When shard k is written, the goroutine of shard k+readAheadShards
// starts.
//
// A fetch's error reaches the client in order, after the bytes the fetch
// produced before it, as a sequential read would give it. When the read
// ends early (a failed fetch, a failed write to the client, ctx done) the
// request goroutine cancels the fetches' context, which resets their
// streams (openRemoteShard) and ends their queue writes, and waits for
// every fetch goroutine before it returns.
//
// Memory: see "Read-ahead" at the top of read.go.

const (
	// readAheadShards is how many shards a cat fetches at once: the one
	// being written and the next. The current shard's fetch (reading,
	// hashing on two workers, copying) runs beside the writes to the
	// client, and the next one opens its stream, checks its
	// list and fills its queue meanwhile, so moving to the next shard costs
	// no round trip. Fetches further ahead would only wait on their full
	// queues, and our machines have 2 cores (bench/RESULTS.md), shared with
	// the serving peer and the client.
	readAheadShards = 2
	// readChunkSize is the size of the chunks a fetch hands over: the size
	// of the store's O_DIRECT reads, large enough that the writes to the
	// API client are few.
	readChunkSize = 1 << 20
	// readQueueChunks is how many filled chunks wait per shard (4 MiB): a
	// fetch runs ahead of the client by that much, which absorbs the
	// jitter of a holder's stream and of the client without memory that
	// grows with a shard's size.
	readQueueChunks = 4
)

// chunkPool holds the readChunkSize buffers of cats, reused from one read
// to the next: fresh allocations, zeroed, are slow on our VMs.
var chunkPool = sync.Pool{New: func() any {
	b := make([]byte, 0, readChunkSize)
	return &b
}}

// readAhead is the shape of a read-ahead: catSharded uses the constants
// above; tests use small values.
type readAhead struct {
	shards int // fetched at once, >= 1
	chunk  int // bytes per chunk, 1 to readChunkSize
	queue  int // filled chunks waiting per shard, >= 1
}

// fetchFunc writes the bytes of the i-th part of a read to w. It runs on a
// goroutine of its own; w fails, with ctx's error, once ctx is done.
type fetchFunc func(ctx context.Context, i int, w io.Writer) error

// shardQueue carries one part's bytes from its fetch goroutine to the
// request goroutine.
type shardQueue struct {
	chunks chan *[]byte // closed by the fetch goroutine when it ends
	err    error        // the fetch's error; read only once chunks is closed
}

// run writes the bytes that fetch produces for parts 0 to n-1 to sink, in
// order. It returns the first error in that order: a fetch's (after the
// bytes the fetch produced before failing), sink's, or ctx's. Every fetch
// goroutine has ended when it returns.
func (ra readAhead) run(parent context.Context, n int, fetch fetchFunc, sink io.Writer) error {
	ctx, cancel := context.WithCancel(parent)
	var wg sync.WaitGroup
	var pending []*shardQueue // started, not yet written; at most ra.shards
	defer func() {
		cancel()
		wg.Wait()
		for _, q := range pending {
			for c := range q.chunks {
				chunkPool.Put(c)
			}
		}
	}()
	next := 0
	for ; next < min(n, ra.shards); next++ {
		pending = append(pending, ra.start(ctx, &wg, next, fetch))
	}
	for len(pending) > 0 {
		if err := drain(ctx, pending[0], sink); err != nil {
			if cerr := parent.Err(); cerr != nil {
				return cerr // the fetches' errors are the cancellation's
			}
			return err
		}
		pending = pending[1:]
		if next < n {
			pending = append(pending, ra.start(ctx, &wg, next, fetch))
			next++
		}
	}
	return nil
}

// drain writes q's chunks to sink until the fetch ends, and returns its
// error, sink's, or ctx's.
func drain(ctx context.Context, q *shardQueue, sink io.Writer) error {
	for {
		select {
		case c, ok := <-q.chunks:
			if !ok {
				return q.err
			}
			_, err := sink.Write(*c)
			chunkPool.Put(c)
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// start runs fetch for part i on a goroutine counted in wg, its bytes
// copied into chunks queued on the returned queue.
func (ra readAhead) start(ctx context.Context, wg *sync.WaitGroup, i int, fetch fetchFunc) *shardQueue {
	q := &shardQueue{chunks: make(chan *[]byte, ra.queue)}
	wg.Go(func() {
		var cur *[]byte // the chunk being filled
		send := func() error {
			select {
			case q.chunks <- cur:
				cur = nil
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		w := writerFunc(func(p []byte) (int, error) {
			n := 0
			for len(p) > 0 {
				if cur == nil {
					cur = chunkPool.Get().(*[]byte)
					*cur = (*cur)[:0]
				}
				k := copy((*cur)[len(*cur):ra.chunk], p)
				*cur = (*cur)[:len(*cur)+k]
				p, n = p[k:], n+k
				if len(*cur) == ra.chunk {
					if err := send(); err != nil {
						return n, err
					}
				}
			}
			return n, nil
		})
		err := fetch(ctx, i, w)
		// The bytes of a failed fetch are the part's first bytes: they go
		// out before its error.
		if cur != nil && len(*cur) > 0 {
			if serr := send(); err == nil {
				err = serr
			}
		}
		if cur != nil {
			chunkPool.Put(cur)
		}
		q.err = err
		close(q.chunks)
	})
	return q
}

// writerFunc is an io.Writer made of a function.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
