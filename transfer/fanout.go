package transfer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/p2p"
	"github.com/shoal-project/shoal/shard"
	"github.com/shoal-project/shoal/store"
)

const (
	// queueDepth is how many frames each remote target may have waiting.
	// Eight 256 KiB frames (2 MiB) absorb the jitter of one stream while
	// keeping the sender's memory at (queueDepth+2) frames; the stream's
	// yamux window (4 MiB from the start, p2p's streamWindow, growing to
	// 16 MiB) keeps the link busy.
	queueDepth = 8
	// openTimeout bounds dialling a receiver and reading its room check.
	openTimeout = 15 * time.Second
	// idleTimeout bounds each write to a receiver: one that reads nothing
	// for this long is dropped, so one stuck peer cannot stall the shard.
	idleTimeout = DefaultIdleTimeout
	// commitTimeout bounds the wait for a receiver's confirmation after the
	// end frame: checking the list, writing the index and fdatasync of a
	// shard (a 1 GiB shard at PERF.md's slowest 260 MB/s takes 4 s).
	commitTimeout = 2 * time.Minute
	// writeBufSize batches small frames into larger stream writes; frames
	// larger than it go to the stream directly.
	writeBufSize = 64 << 10
)

// Result says, for each target of a shard, whether it holds the shard.
type Result struct {
	// Targets are the remote peers in the order given to NewFanout, then
	// the local store (Local set, Peer the host's ID) if there is one.
	Targets []TargetResult
}

// TargetResult is the outcome of one target.
type TargetResult struct {
	Peer  peer.ID
	Local bool
	// Confirmed: the target stored and synced the shard.
	Confirmed bool
	// Err says why the target failed; nil while it is still in progress
	// or once it confirmed.
	Err error
}

// Confirmed returns the peers that hold the shard, the host's own ID
// included when the local store confirmed.
func (r Result) Confirmed() []peer.ID {
	var out []peer.ID
	for _, t := range r.Targets {
		if t.Confirmed {
			out = append(out, t.Peer)
		}
	}
	return out
}

// Failed returns the targets that failed.
func (r Result) Failed() []TargetResult {
	var out []TargetResult
	for _, t := range r.Targets {
		if t.Err != nil {
			out = append(out, t)
		}
	}
	return out
}

// Error reports targets of a shard that failed. NewFanout returns it when
// no target accepted the shard, Put when every target has failed, and
// Commit when any target failed; Result tells which, and which confirmed.
// It unwraps to every target's error, so errors.Is(err, ErrRefused) asks
// whether some receiver refused.
type Error struct {
	Result Result
	// none is set when no target is left (ErrNoTarget).
	none bool
}

func (e *Error) Error() string {
	var b strings.Builder
	failed := e.Result.Failed()
	fmt.Fprintf(&b, "%d of %d targets failed", len(failed), len(e.Result.Targets))
	for i, t := range failed {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(t.Err.Error())
	}
	return b.String()
}

// Unwrap returns the targets' errors, and ErrNoTarget if none is left.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.none {
		errs = append(errs, ErrNoTarget)
	}
	for _, t := range e.Result.Failed() {
		errs = append(errs, t.Err)
	}
	return errs
}

// Fanout writes one shard to several targets at once: a stream per remote
// peer and, optionally, the local store. It implements shard.Writer. One
// goroutine (the cutter's) calls Put, Commit, Abort and Result; the Fanout
// runs two goroutines per remote target (a writer and an answer reader),
// which end before Commit or Abort returns.
//
// A target that fails (refuses, breaks, stalls for a minute) is dropped
// and the others go on: Put fails only when no target is left, on its
// context, or past the announced size, and after a Put error the Fanout
// can only be aborted. Commit returns an *Error if any target failed; a
// caller with a replication policy (enough copies?) wraps Commit and reads
// Result, since shard.Cutter treats any Commit error as fatal.
type Fanout struct {
	maxSize int64
	targets []*target
	liveBuf []*target     // reused by live
	local   *store.Writer // nil once the local target failed or ended

	mu      sync.Mutex // guards results
	results []TargetResult

	size  int64 // section bytes put so far
	err   error // sticky Put error
	ended bool  // Commit or Abort ran
	wg    sync.WaitGroup
}

var _ shard.Writer = (*Fanout)(nil)

// target is one remote peer's stream and its two goroutines.
type target struct {
	i    int // index in Fanout.results
	id   peer.ID
	s    network.Stream
	br   *bufio.Reader
	q    chan *frame   // to the writer goroutine; closed by Commit or Abort
	dead chan struct{} // closed when the writer takes no more frames
	ans  chan received // the answer reader's one result
}

type received struct {
	a   answer
	err error
}

// NewFanout opens a transfer of one shard of at most maxSize bytes (as
// shard.Info.Size counts them) to each of peers, in parallel, and starts a
// shard in local when local is not nil (the ingesting peer is itself
// allocated). It returns once every peer accepted or refused, bounded by
// ctx; peers that refused or could not be reached are failed targets in
// Result. It returns an *Error (ErrNoTarget) when no target is left, and
// an error when the arguments are wrong. peers must not hold the host's
// own ID: pass local instead.
func NewFanout(ctx context.Context, h *p2p.Host, peers []peer.ID, local *store.Store, maxSize int64) (*Fanout, error) {
	self := h.ID()
	switch {
	case maxSize <= 0:
		return nil, fmt.Errorf("open shard transfer: maximum size %d is not positive", maxSize)
	case len(peers) == 0 && local == nil:
		return nil, errors.New("open shard transfer: no peers and no local store")
	}
	for i, p := range peers {
		if p == self {
			return nil, fmt.Errorf("open shard transfer: peer %s is this host; pass the local store instead", p)
		}
		if slices.Contains(peers[:i], p) {
			return nil, fmt.Errorf("open shard transfer: peer %s given twice", p)
		}
	}
	f := &Fanout{maxSize: maxSize, results: make([]TargetResult, len(peers), len(peers)+1)}
	opened := make([]*target, len(peers))
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opened[i], errs[i] = open(ctx, h, p, maxSize)
		}()
	}
	if local != nil {
		r := TargetResult{Peer: self, Local: true}
		if w, err := local.Create(ctx); err != nil {
			r.Err = fmt.Errorf("local store: %w", err)
		} else {
			f.local = w
		}
		f.results = append(f.results, r)
	}
	wg.Wait()
	for i, p := range peers {
		f.results[i] = TargetResult{Peer: p, Err: errs[i]}
	}
	for i, t := range opened {
		if t == nil {
			continue
		}
		t.i = i
		f.targets = append(f.targets, t)
		f.wg.Add(2)
		go t.write(f)
		go t.read(&f.wg)
	}
	if len(f.targets) == 0 && f.local == nil {
		f.Abort()
		return nil, fmt.Errorf("open shard transfer: %w", &Error{Result: f.Result(), none: true})
	}
	return f, nil
}

// open dials p, sends the header and reads the room check.
func open(ctx context.Context, h *p2p.Host, p peer.ID, maxSize int64) (*target, error) {
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, p, Protocol)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", p, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	dl, _ := ctx.Deadline()
	_ = s.SetDeadline(dl)
	if _, err := s.Write(appendHeader(nil, maxSize)); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("peer %s: send shard header: %w", p, err)
	}
	br := bufio.NewReaderSize(s, 2*maxMessage)
	a, err := readAnswer(br)
	if err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("peer %s: read answer to shard header: %w", p, err)
	}
	if a.status != statusOK {
		_ = s.Reset()
		return nil, fmt.Errorf("peer %s %w: %s", p, ErrRefused, a.reason)
	}
	if !stop() {
		_ = s.Reset()
		return nil, fmt.Errorf("peer %s: %w", p, ctx.Err())
	}
	_ = s.SetDeadline(time.Time{})
	return &target{
		id:   p,
		s:    s,
		br:   br,
		q:    make(chan *frame, queueDepth),
		dead: make(chan struct{}),
		ans:  make(chan received, 1),
	}, nil
}

// Put sends b to every live target. It copies b.Data once, into a pooled
// frame that all queues share, and blocks while the slowest live target's
// queue is full. A failed target is dropped; Put fails only on ctx, on a
// shard above the announced maximum, or when no target is left.
func (f *Fanout) Put(ctx context.Context, b dag.Block) error {
	if f.ended {
		return fmt.Errorf("put block %s: shard transfer already ended", b.CID)
	}
	if f.err != nil {
		return f.err
	}
	if cl := b.CID.ByteLen(); cl > maxCIDLen || cl+len(b.Data) > maxBlockLen {
		return fmt.Errorf("put block %s: %d bytes with its CID exceed the %d-byte block limit", b.CID, cl+len(b.Data), maxBlockLen)
	}
	f.size += sectionCost(b.CID.ByteLen(), len(b.Data))
	if f.size > f.maxSize {
		f.err = fmt.Errorf("put block %s: the shard exceeds the %d bytes announced to its peers", b.CID, f.maxSize)
		return f.err
	}
	live := f.live()
	if len(live) > 0 {
		fr := getFrame(frameLen(b))
		fr.data = appendFrame(fr.data[:0], b.CID, b.Data)
		fr.refs.Store(int32(len(live)))
		for i, t := range live {
			select {
			case t.q <- fr:
			case <-t.dead:
				fr.release()
			case <-ctx.Done():
				for range live[i:] {
					fr.release()
				}
				f.err = fmt.Errorf("put block %s: %w", b.CID, ctx.Err())
				return f.err
			}
		}
	}
	if f.local != nil {
		if err := f.local.Put(b); err != nil {
			f.failLocal(err)
		}
	}
	if len(live) == 0 && f.local == nil {
		f.err = &Error{Result: f.Result(), none: true}
		return f.err
	}
	return nil
}

// live returns the remote targets still taking frames.
func (f *Fanout) live() []*target {
	out := f.liveBuf[:0]
	for _, t := range f.targets {
		select {
		case <-t.dead:
		default:
			out = append(out, t)
		}
	}
	f.liveBuf = out
	return out
}

func (f *Fanout) failLocal(err error) {
	_ = f.local.Abort()
	f.local = nil
	f.setResult(len(f.results)-1, fmt.Errorf("local store: %w", err))
}

func (f *Fanout) setResult(i int, err error) {
	f.mu.Lock()
	if err != nil {
		f.results[i].Err = err
	} else {
		f.results[i].Confirmed = true
	}
	f.mu.Unlock()
}

// Commit sends the end frame (info and the list nodes, root last) to every
// live target, commits the local shard, and waits for every receiver's
// answer. It returns nil when every target confirmed, else an *Error; in
// both cases Result tells which targets hold the shard, and the caller
// decides whether that is enough. When ctx ends, every stream is reset.
func (f *Fanout) Commit(ctx context.Context, info shard.Info, nodes []dag.Block) error {
	if f.ended {
		return fmt.Errorf("commit shard %s: shard transfer already ended", info.CID)
	}
	if f.err != nil {
		return f.err
	}
	if len(nodes) == 0 || !nodes[len(nodes)-1].CID.Equals(info.CID) {
		return fmt.Errorf("commit shard %s: the list nodes must end with the root", info.CID)
	}
	f.ended = true
	for _, n := range nodes {
		f.size += sectionCost(n.CID.ByteLen(), len(n.Data))
	}
	if f.size > f.maxSize {
		f.abort()
		return fmt.Errorf("commit shard %s: the shard takes %d bytes, above the %d announced to its peers", info.CID, f.size, f.maxSize)
	}
	stop := context.AfterFunc(ctx, f.resetAll)
	defer stop()
	live := f.live()
	end := &frame{data: appendEnd(nil, info, nodes)}
	end.refs.Store(int32(len(live)))
	for _, t := range live {
		select {
		case t.q <- end:
		case <-t.dead:
		}
	}
	for _, t := range f.targets {
		close(t.q)
	}
	if f.local != nil {
		err := f.commitLocal(ctx, info, nodes)
		if err != nil {
			f.failLocal(err)
		} else {
			f.setResult(len(f.results)-1, nil)
			f.local = nil
		}
	}
	f.wg.Wait()
	res := f.Result()
	if len(res.Failed()) == 0 {
		return nil
	}
	e := &Error{Result: res, none: len(res.Confirmed()) == 0}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit shard %s: %w: %w", info.CID, err, e)
	}
	return fmt.Errorf("commit shard %s: %w", info.CID, e)
}

func (f *Fanout) commitLocal(ctx context.Context, info shard.Info, nodes []dag.Block) error {
	for _, n := range nodes {
		if err := f.local.Put(n); err != nil {
			return err
		}
	}
	_, err := f.local.Commit(ctx, info.CID.String(), info.CID)
	return err
}

// Abort drops the shard: every stream is reset (receivers discard what
// they wrote) and the local shard is aborted. It returns once the
// Fanout's goroutines have ended. Safe after Commit, where it does nothing.
func (f *Fanout) Abort() {
	if f.ended {
		return
	}
	f.ended = true
	f.abort()
}

func (f *Fanout) abort() {
	f.resetAll()
	for _, t := range f.targets {
		close(t.q)
	}
	if f.local != nil {
		_ = f.local.Abort()
		f.local = nil
		f.setResult(len(f.results)-1, errors.New("local store: shard aborted"))
	}
	f.wg.Wait()
}

func (f *Fanout) resetAll() {
	for _, t := range f.targets {
		_ = t.s.Reset()
	}
}

// Result returns each target's outcome so far: complete after Commit or
// Abort; before, it names the targets that already failed (those that
// refused the shard in NewFanout among them).
func (f *Fanout) Result() Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Result{Targets: slices.Clone(f.results)}
}

// write is a target's writer goroutine: it writes the queued frames to the
// stream until the end frame, then waits for the receiver's answer. Once it
// knows the outcome it drops whatever is still queued, until Commit or
// Abort closes the queue.
func (t *target) write(f *Fanout) {
	defer f.wg.Done()
	f.setResult(t.i, t.send())
	for fr := range t.q {
		fr.release()
	}
}

func (t *target) send() error {
	fail := func(err error) error {
		close(t.dead)
		_ = t.s.Reset()
		// The receiver's reason, if it gave one, says more than a reset.
		if r := <-t.ans; r.err == nil && r.a.status != statusOK {
			return fmt.Errorf("peer %s %w: %s", t.id, ErrRefused, r.a.reason)
		}
		return fmt.Errorf("peer %s: %w", t.id, err)
	}
	bw := bufio.NewWriterSize(t.s, writeBufSize)
	for fr := range t.q {
		end := fr.end()
		_ = t.s.SetWriteDeadline(time.Now().Add(idleTimeout))
		_, err := bw.Write(fr.data)
		fr.release()
		if err == nil && (end || len(t.q) == 0) {
			err = bw.Flush()
		}
		if err == nil && end {
			err = t.s.CloseWrite()
		}
		if err != nil {
			return fail(fmt.Errorf("send shard: %w", err))
		}
		if !end {
			continue
		}
		close(t.dead)
		_ = t.s.SetReadDeadline(time.Now().Add(commitTimeout))
		r := <-t.ans
		switch {
		case r.err != nil:
			_ = t.s.Reset()
			return fmt.Errorf("peer %s: read confirmation: %w", t.id, r.err)
		case r.a.status != statusOK:
			_ = t.s.Reset()
			return fmt.Errorf("peer %s %w: %s", t.id, ErrRefused, r.a.reason)
		}
		_ = t.s.Close()
		return nil
	}
	return fail(errors.New("shard transfer aborted"))
}

// read is a target's answer reader: it waits for the receiver's one
// answer, which comes after the end frame or, on a refusal, at any time;
// a refusal or a broken stream resets the stream, which stops the writer.
func (t *target) read(wg *sync.WaitGroup) {
	defer wg.Done()
	a, err := readAnswer(t.br)
	if err != nil || a.status != statusOK {
		_ = t.s.Reset()
	}
	t.ans <- received{a: a, err: err}
}

// frame is one encoded block frame, shared by every target's queue and
// returned to the pool when the last target has written it. The end frame
// is not pooled.
type frame struct {
	data   []byte
	refs   atomic.Int32
	pooled bool
}

func (fr *frame) end() bool { return !fr.pooled }

func (fr *frame) release() {
	if fr.refs.Add(-1) == 0 && fr.pooled {
		fr.data = fr.data[:0]
		frameClasses[classOf(cap(fr.data))].Put(fr)
	}
}

// Frames are recycled in size classes of 64 KiB << k plus 4 KiB, so that
// the frame of a 2^n-byte block with its CID and varints fits the class of
// its block (freshly allocated memory is slow to touch on these VMs:
// PERF.md). The classes are shared by every Fanout of the process; how
// many frames are live is bounded by the queues (doc.go).
const (
	minClassShift = 16      // 64 KiB
	classSlack    = 4 << 10 // room for the CID and varints
	numClasses    = 9       // up to 16 MiB + slack, above maxBlockLen + framing
)

var frameClasses [numClasses]sync.Pool

func classOf(n int) int {
	if n <= 1<<minClassShift+classSlack {
		return 0
	}
	return bits.Len(uint(n-classSlack-1)) - minClassShift
}

// getFrame returns an empty pooled frame with room for n bytes.
func getFrame(n int) *frame {
	k := classOf(n)
	if fr, ok := frameClasses[k].Get().(*frame); ok {
		return fr
	}
	return &frame{data: make([]byte, 0, 1<<(minClassShift+k)+classSlack), pooled: true}
}
