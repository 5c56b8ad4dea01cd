package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"

	chunk "github.com/ipfs/boxo/chunker"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-project/shoal/dag"
)

// Sink receives the DAG's blocks in pipeline order (see doc.go). It is the
// plug-in point between ingest and whatever keeps the blocks: nothing
// (--only-hash), the peer's local store, or a shard writer.
type Sink interface {
	// Put is called from the ingest's builder goroutine, one block at a
	// time, never concurrently. b.Data is only valid during the call: the
	// pipeline reuses its buffer afterwards. An error stops the ingest and
	// is returned by it.
	Put(ctx context.Context, b dag.Block) error
}

// Discard is the sink of --only-hash: it keeps nothing.
var Discard Sink = discard{}

type discard struct{}

func (discard) Put(context.Context, dag.Block) error { return nil }

// Config configures an Ingester.
type Config struct {
	Params dag.Params
	// Workers is the number of goroutines that frame and hash leaves.
	// 0 means GOMAXPROCS: hashing is the ingest's main CPU cost and scales
	// with cores (PERF.md: SHA-256 runs at 1.78 GB/s on one core, 3.5 on two).
	Workers int
	// Buffers is the number of leaf buffers in flight; it bounds memory to
	// Buffers x (largest chunk + framing). 0 means 2 x Workers + 4, enough
	// to keep every worker busy while the builder drains the sink.
	Buffers int
	// Progress, if not nil, is called with the size of every chunk read,
	// from the chunker goroutine. It must be cheap and safe to call from
	// any goroutine.
	Progress func(n int)
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if err := c.Params.Validate(); err != nil {
		return err
	}
	if c.Workers < 0 || c.Buffers < 0 {
		return errors.New("ingest: workers and buffers must not be negative")
	}
	if c.Buffers != 0 && c.Buffers < 2 {
		return errors.New("ingest: at least 2 buffers are needed")
	}
	return nil
}

// Ingester turns byte streams and directory trees into UnixFS DAGs. Its
// buffers are reused from one file to the next. An Ingester runs one ingest
// at a time; it is not safe for concurrent use.
type Ingester struct {
	enc      dag.Encoder
	workers  int
	pool     chan []byte
	bufSize  int
	progress func(int)
}

// New returns an Ingester for cfg. It does not modify cfg.
func New(cfg Config) (*Ingester, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	workers := cfg.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	buffers := cfg.Buffers
	if buffers == 0 {
		buffers = 2*workers + 4
	}
	in := &Ingester{
		enc:      dag.NewEncoder(cfg.Params),
		workers:  workers,
		pool:     make(chan []byte, buffers),
		bufSize:  dag.LeafHeadroom + cfg.Params.Chunker.MaxChunk() + dag.LeafTailroom,
		progress: cfg.Progress,
	}
	if in.progress == nil {
		in.progress = func(int) {}
	}
	for range buffers {
		in.pool <- nil // allocated on first use: small files stay small
	}
	return in, nil
}

// Params returns the DAG parameters in use.
func (in *Ingester) Params() dag.Params { return in.enc.Params() }

// leafJob is one chunk on its way through the pipeline. The chunker
// goroutine fills buf and n, a worker sets the results and closes done, and
// the builder goroutine consumes it in file order and returns buf.
type leafJob struct {
	buf  []byte
	n    int
	blk  dag.Block
	link dag.Link
	err  error
	done chan struct{}
}

// File ingests r as one UnixFS file and returns its root. Blocks reach sink
// leaves first, each internal node after its children, the root last.
//
// Goroutines: one chunker reads r, Workers goroutines frame and hash
// leaves, and the calling goroutine builds the tree and calls sink. All are
// gone when File returns.
func (in *Ingester) File(parent context.Context, r io.Reader, sink Sink) (dag.Link, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan *leafJob, cap(in.pool))
	order := make(chan *leafJob, cap(in.pool))

	g.Go(func() error {
		defer close(work)
		defer close(order)
		return in.chunk(gctx, r, work, order)
	})
	for range in.workers {
		g.Go(func() error {
			for j := range work {
				j.blk, j.link, j.err = in.enc.Leaf(j.buf, j.n)
				close(j.done)
			}
			return nil
		})
	}

	src := &leafSource{ctx: gctx, order: order, sink: sink, in: in}
	root, err := dag.BuildFile(in.enc, src, func(b dag.Block) error { return sink.Put(gctx, b) })
	if err != nil {
		// Stop the chunker, return every buffer, and prefer the cause
		// (a read error, say) over the cancellation it caused here.
		cancel()
		src.drain()
		werr := g.Wait()
		switch {
		case parent.Err() != nil:
			// The caller cancelled: whatever failed next is a symptom
			// (a reader interrupted by a deadline, say).
			return dag.Link{}, parent.Err()
		case werr != nil && !errors.Is(werr, context.Canceled):
			return dag.Link{}, werr
		}
		return dag.Link{}, err
	}
	if err := g.Wait(); err != nil {
		if parent.Err() != nil {
			return dag.Link{}, parent.Err()
		}
		return dag.Link{}, err
	}
	return root, nil
}

// sourceReader keeps the first error its reader returns other than io.EOF
// and hands the chunker errSource instead, then and on every later call.
// A chunker reads with io.ReadFull, which reports a short last chunk as
// io.ErrUnexpectedEOF, and takes that for the end of the input (boxo's
// buzhash and rabin splitters do too): it would take an
// io.ErrUnexpectedEOF of the reader's own, from a multipart part without
// its closing boundary or an HTTP body shorter than its Content-Length,
// for the end of a complete file, and the rabin splitter, given one with
// no bytes, asks again forever. chunk reports err. It is used on the
// chunker goroutine only.
type sourceReader struct {
	r   io.Reader
	err error
}

// errSource stands for the reader's error inside a chunker.
var errSource = errors.New("the input reader failed")

func (s *sourceReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, errSource
	}
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF { // io.Reader returns io.EOF itself, never wrapped
		s.err, err = err, errSource
	}
	return n, err
}

// chunk reads r into leaf buffers and queues them both for the workers and,
// in file order, for the builder.
func (in *Ingester) chunk(ctx context.Context, r io.Reader, work, order chan<- *leafJob) error {
	spec := in.enc.Params().Chunker
	src := &sourceReader{r: r}
	var spl chunk.Splitter
	switch spec.Kind {
	case dag.ChunkRabin:
		spl = chunk.NewRabinMinMax(src, uint64(spec.Min), uint64(spec.Avg), uint64(spec.Max))
	case dag.ChunkBuzhash:
		spl = chunk.NewBuzhash(src)
	}
	for {
		var buf []byte
		select {
		case buf = <-in.pool:
		case <-ctx.Done():
			return ctx.Err()
		}
		if buf == nil {
			buf = make([]byte, in.bufSize)
		}
		var n int
		var err error
		if spl == nil {
			n, err = io.ReadFull(src, buf[dag.LeafHeadroom:dag.LeafHeadroom+spec.Size])
			if err == io.ErrUnexpectedEOF { // a short last chunk (src reports its own errors as errSource)
				err = io.EOF
			}
		} else {
			var b []byte
			b, err = spl.NextBytes()
			n = copy(buf[dag.LeafHeadroom:], b)
			if n < len(b) {
				err = fmt.Errorf("chunker returned %d bytes, above its maximum %d", len(b), spec.MaxChunk())
			}
		}
		if src.err != nil {
			// The reader failed, whatever the chunker made of it: the
			// chunk may be a piece of a file that did not end.
			err = src.err
		}
		if n == 0 || (err != nil && err != io.EOF) {
			in.pool <- buf
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("read input: %w", unwrapPathError(err))
		}
		in.progress(n)
		j := &leafJob{buf: buf, n: n, done: make(chan struct{})}
		select {
		case work <- j:
		case <-ctx.Done():
			in.pool <- buf
			return ctx.Err()
		}
		// order has the same capacity as the pool, so this never blocks
		// for long: at most every buffer is queued.
		select {
		case order <- j:
		case <-ctx.Done():
			<-j.done
			in.pool <- buf
			return ctx.Err()
		}
		if err == io.EOF {
			return nil
		}
	}
}

// leafSource feeds the layout from the ordered job queue. It lives on the
// builder goroutine.
type leafSource struct {
	ctx   context.Context
	order <-chan *leafJob
	sink  Sink
	in    *Ingester
	next  *leafJob
	eof   bool
}

func (s *leafSource) More() (bool, error) {
	if s.next != nil {
		return true, nil
	}
	if s.eof {
		return false, nil
	}
	select {
	case j, ok := <-s.order:
		if !ok {
			s.eof = true
			// The chunker may have stopped on an error: report it rather
			// than a short file.
			if err := s.ctx.Err(); err != nil {
				return false, err
			}
			return false, nil
		}
		s.next = j
		return true, nil
	case <-s.ctx.Done():
		return false, s.ctx.Err()
	}
}

func (s *leafSource) Next() (dag.Link, error) {
	j := s.next
	s.next = nil
	select {
	case <-j.done:
	case <-s.ctx.Done():
		<-j.done
		s.in.pool <- j.buf
		return dag.Link{}, s.ctx.Err()
	}
	defer func() { s.in.pool <- j.buf }()
	if j.err != nil {
		return dag.Link{}, j.err
	}
	if err := s.sink.Put(s.ctx, j.blk); err != nil {
		return dag.Link{}, err
	}
	return j.link, nil
}

// drain returns the buffers of jobs the builder will no longer consume, so
// the pool is whole for the next file.
func (s *leafSource) drain() {
	if s.next != nil {
		<-s.next.done
		s.in.pool <- s.next.buf
		s.next = nil
	}
	for j := range s.order {
		<-j.done
		s.in.pool <- j.buf
	}
}
