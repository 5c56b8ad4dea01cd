package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
)

// fakeParts are the parts of a read-ahead test: each fetch writes its
// part in writes of pseudo-random sizes, counting what it produced and how
// many fetches run at once.
type fakeParts struct {
	parts [][]byte
	// failAt[i]: part i fails with err once it has written that many bytes.
	failAt map[int]int
	err    error
	// delay[i] is slept before each write of part i.
	delay map[int]time.Duration

	produced, sunk       atomic.Int64 // bytes accepted by the queues, bytes passed to the sink
	running, maxRunning  atomic.Int64
	maxInFlight, started atomic.Int64
}

func newFakeParts(sizes ...int) *fakeParts {
	f := &fakeParts{}
	for i, n := range sizes {
		f.parts = append(f.parts, seeded(fmt.Sprint("part", i), n))
	}
	return f
}

func (f *fakeParts) all() []byte { return bytes.Join(f.parts, nil) }

func (f *fakeParts) fetch(ctx context.Context, i int, w io.Writer) error {
	f.started.Add(1)
	n := f.running.Add(1)
	defer f.running.Add(-1)
	for m := f.maxRunning.Load(); n > m && !f.maxRunning.CompareAndSwap(m, n); m = f.maxRunning.Load() {
	}
	r := rand.New(rand.NewPCG(uint64(i), 1))
	p := f.parts[i]
	end, fails := f.failAt[i]
	if !fails {
		end = len(p)
	}
	for done := 0; done < end; {
		time.Sleep(f.delay[i])
		k := min(end-done, 1+r.IntN(23))
		n, err := w.Write(p[done : done+k])
		done += n
		in := f.produced.Add(int64(n)) - f.sunk.Load()
		for m := f.maxInFlight.Load(); in > m && !f.maxInFlight.CompareAndSwap(m, in); m = f.maxInFlight.Load() {
		}
		if err != nil {
			return err
		}
	}
	if fails {
		return f.err
	}
	return nil
}

// slowSink collects what it is given, sleeping before each write, and
// fails with err from the failAt-th write on (0: never).
type slowSink struct {
	f      *fakeParts
	delay  time.Duration
	failAt int
	err    error
	hook   func(writes int) // called before each write
	writes int
	buf    bytes.Buffer
}

func (s *slowSink) Write(p []byte) (int, error) {
	s.writes++
	if s.hook != nil {
		s.hook(s.writes)
	}
	if s.failAt > 0 && s.writes >= s.failAt {
		return 0, s.err
	}
	s.f.sunk.Add(int64(len(p)))
	time.Sleep(s.delay)
	return s.buf.Write(p)
}

// runReadAhead runs ra over f into sink, failing the test if it does not
// return within 20 s or leaves a fetch running.
func runReadAhead(t *testing.T, ctx context.Context, ra readAhead, f *fakeParts, sink io.Writer) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- ra.run(ctx, len(f.parts), f.fetch, sink) }()
	select {
	case err := <-done:
		if n := f.running.Load(); n != 0 {
			t.Fatalf("%d fetches still running after run returned", n)
		}
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return within 20 s")
		return nil
	}
}

// TestReadAheadInOrder: whatever the read-ahead's shape and the parts'
// sizes, the sink gets every part's bytes, in order.
func TestReadAheadInOrder(t *testing.T) {
	shapes := []readAhead{{1, 1, 1}, {2, 7, 1}, {2, 10, 3}, {3, 64, 2}, {2, readChunkSize, readQueueChunks}}
	sizes := [][]int{nil, {0}, {1}, {100, 0, 1, 333, 64, 65}, {1000, 1000, 1000, 1000, 1000, 1000, 1000}}
	for _, ra := range shapes {
		for _, sz := range sizes {
			t.Run(fmt.Sprintf("%d shards, chunk %d, queue %d, parts %v", ra.shards, ra.chunk, ra.queue, sz), func(t *testing.T) {
				f := newFakeParts(sz...)
				sink := &slowSink{f: f}
				if err := runReadAhead(t, context.Background(), ra, f, sink); err != nil {
					t.Fatal(err)
				}
				if want := f.all(); !bytes.Equal(sink.buf.Bytes(), want) {
					t.Fatalf("the sink got %d bytes, not the %d of the parts in order", sink.buf.Len(), len(want))
				}
				if m := f.maxRunning.Load(); m > int64(ra.shards) {
					t.Fatalf("%d fetches ran at once, more than %d", m, ra.shards)
				}
			})
		}
	}
}

// TestReadAheadBounded: with a slow sink, the next part is fetched while
// the current one is written, and the bytes produced but not yet written
// never exceed shards x (queue + 1) chunks and the one being written.
func TestReadAheadBounded(t *testing.T) {
	ra := readAhead{shards: 2, chunk: 10, queue: 3}
	f := newFakeParts(1000, 1000, 1000, 1000, 1000, 1000)
	sink := &slowSink{f: f, delay: 200 * time.Microsecond}
	if err := runReadAhead(t, context.Background(), ra, f, sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.buf.Bytes(), f.all()) {
		t.Fatal("wrong bytes")
	}
	bound := int64((ra.shards*(ra.queue+1) + 1) * ra.chunk)
	got := f.maxInFlight.Load()
	t.Logf("at most %d bytes in flight (bound %d); at most %d fetches at once", got, bound, f.maxRunning.Load())
	if got > bound {
		t.Fatalf("%d bytes in flight, more than the bound %d", got, bound)
	}
	// One part alone holds at most (queue+1) chunks: more in flight means
	// the next part was being fetched ahead.
	if got <= int64((ra.queue+1)*ra.chunk) || f.maxRunning.Load() != 2 {
		t.Fatalf("at most %d bytes in flight and %d fetches at once: no read-ahead", got, f.maxRunning.Load())
	}
}

// TestReadAheadErrors: a fetch's error comes after the bytes before it,
// in order, even when a later part fails first; a failing sink or a
// cancelled context ends the read at once; every fetch has ended when run
// returns, and no goroutine is left.
func TestReadAheadErrors(t *testing.T) {
	ra := readAhead{shards: 2, chunk: 10, queue: 2}
	errLost := errors.New("shard 2 is lost")
	errGone := errors.New("client went away")
	tests := []struct {
		name    string
		sizes   []int
		failAt  map[int]int
		delay   map[int]time.Duration
		sink    func(s *slowSink, cancel context.CancelFunc)
		want    error
		wantLen int // bytes the sink gets (-1: any), all of them a prefix of the parts
	}{
		{
			name:   "a fetch fails midway",
			sizes:  []int{100, 100, 100, 100},
			failAt: map[int]int{2: 25},
			want:   errLost, wantLen: 200 + 25,
		},
		{
			name:   "a later part fails first",
			sizes:  []int{300, 100, 100},
			failAt: map[int]int{1: 0},
			delay:  map[int]time.Duration{0: time.Millisecond},
			want:   errLost, wantLen: 300,
		},
		{
			name:  "the sink fails",
			sizes: []int{1000, 1000, 1000},
			sink:  func(s *slowSink, _ context.CancelFunc) { s.failAt, s.err = 4, errGone },
			want:  errGone, wantLen: 30,
		},
		{
			name:  "the context is cancelled",
			sizes: []int{1000, 1000, 1000},
			sink: func(s *slowSink, cancel context.CancelFunc) {
				s.hook = func(n int) {
					if n == 3 {
						cancel()
					}
				}
			},
			want: context.Canceled, wantLen: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f := newFakeParts(tt.sizes...)
			f.failAt, f.delay, f.err = tt.failAt, tt.delay, errLost
			sink := &slowSink{f: f, delay: 100 * time.Microsecond}
			if tt.sink != nil {
				tt.sink(sink, cancel)
			}
			err := runReadAhead(t, ctx, ra, f, sink)
			if err != tt.want {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			got := sink.buf.Bytes()
			if tt.wantLen >= 0 && len(got) != tt.wantLen {
				t.Fatalf("the sink got %d bytes, want %d", len(got), tt.wantLen)
			}
			if !bytes.HasPrefix(f.all(), got) {
				t.Fatalf("the sink got %d bytes that are not a prefix of the parts", len(got))
			}
			waitFor(t, 5*time.Second, func() error {
				if n := runtime.NumGoroutine(); n > base {
					return fmt.Errorf("%d goroutines, %d before the read", n, base)
				}
				return nil
			})
		})
	}
}

// goroutinesIn counts the goroutines whose stack holds fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// failingCat is an api.CatWriter that takes limit bytes, then fails with
// err or, with cancel set, cancels the read's context instead.
type failingCat struct {
	buf    bytes.Buffer
	limit  int
	err    error
	cancel context.CancelFunc
}

func (*failingCat) SetLength(int64) {}

func (w *failingCat) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.limit {
		if w.cancel != nil {
			w.cancel()
			return len(p), nil // dropped: the read is over
		}
		return 0, w.err
	}
	return w.buf.Write(p)
}

// TestCatReadAhead: a file of many shards, two copies each, read while
// its shards are fetched ahead: with the first holder of several shards
// damaged midway (each fetch fails over while the next shard is being
// fetched), every peer reads exactly the file, whole and in ranges; a
// client that stops reading, fails or cancels leaves no fetch goroutine
// and no stream being served.
func TestCatReadAhead(t *testing.T) {
	peers := newTestPeers(t, 3)
	ctx := context.Background()
	data := seeded("read-ahead", 7<<20+1234)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "ahead", Chunker: "size-65536",
		Shard: true, ShardSize: 1 << 20, RMin: 2, RMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Shards) < 7 {
		t.Fatalf("%d shards; the test wants at least 7", len(res.Shards))
	}
	root, _ := cid.Decode(res.CID)
	waitFor(t, 10*time.Second, func() error {
		for _, p := range peers {
			if _, ok := p.cons.State().Get(root); !ok {
				return fmt.Errorf("%s has not applied %s", p.cfg.PeerName, root)
			}
		}
		return nil
	})
	byID := map[string]*Peer{}
	for _, p := range peers {
		byID[p.ID().String()] = p
	}
	for _, i := range []int{1, 2, 4, 6} {
		sh := res.Shards[i]
		flipByte(t, byID[sh.Allocations[0]], sh.CID, 4096+int64(100_000*i))
	}
	size := int64(len(data))
	b3 := int64(res.Shards[3].Offset)

	t.Run("damaged first holders", func(t *testing.T) {
		for _, p := range peers {
			for _, r := range [][2]int64{{0, -1}, {b3 - 100_000, 2<<20 + 3}, {size - 5, -1}, {b3, 1}} {
				got, err := cat(p, res.CID, r[0], r[1])
				end := size
				if r[1] >= 0 {
					end = r[0] + r[1]
				}
				if err != nil || !bytes.Equal(got, data[r[0]:end]) {
					t.Fatalf("%s: offset %d length %d: %d bytes, equal %v: %v", p.cfg.PeerName, r[0], r[1], len(got),
						bytes.Equal(got, data[r[0]:end]), err)
				}
			}
		}
	})

	// idle waits until no read-ahead fetch runs and no shard is served.
	idle := func(t *testing.T) {
		t.Helper()
		waitFor(t, 10*time.Second, func() error {
			if n := goroutinesIn("shoal/cluster.readAhead."); n > 0 {
				return fmt.Errorf("%d read-ahead goroutines left", n)
			}
			if n := goroutinesIn("shoal/cluster.(*readServer).serveShard"); n > 0 {
				return fmt.Errorf("%d shard streams still served", n)
			}
			return nil
		})
	}
	idle(t)

	t.Run("the client's writes fail", func(t *testing.T) {
		for _, p := range peers {
			w := &failingCat{limit: 1_500_000, err: errors.New("client went away")}
			err := backend{p}.Cat(ctx, res.CID, 0, -1, w)
			if want := "write " + res.CID + ": client went away"; err == nil || err.Error() != want {
				t.Fatalf("%s: error %v, want %q", p.cfg.PeerName, err, want)
			}
			if n := goroutinesIn("shoal/cluster.readAhead."); n > 0 {
				t.Fatalf("%s: %d read-ahead goroutines left when Cat returned", p.cfg.PeerName, n)
			}
			if got := w.buf.Bytes(); len(got) == 0 || !bytes.Equal(got, data[:len(got)]) {
				t.Fatalf("%s: wrote %d bytes, not a prefix of the file", p.cfg.PeerName, len(got))
			}
			idle(t)
		}
	})

	t.Run("the request is cancelled", func(t *testing.T) {
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w := &failingCat{limit: 2_500_000, cancel: cancel}
		if err := (backend{peers[1]}).Cat(rctx, res.CID, 0, -1, w); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		if n := goroutinesIn("shoal/cluster.readAhead."); n > 0 {
			t.Fatalf("%d read-ahead goroutines left when Cat returned", n)
		}
		idle(t)
	})

	t.Run("the HTTP client stops reading", func(t *testing.T) {
		c, err := client.New(peers[2].APIAddr())
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.Cat(ctx, res.CID, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 1<<20)
		if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, data[:1<<20]) {
			t.Fatalf("the first MiB: %v", err)
		}
		r.Close()
		idle(t)
	})
}

// TestCatMemory: reading a file of shards far larger than the read-ahead's
// queues holds the queues, not the shards: the live heap grows by about
// the bound that read.go states (~20 MiB with 256 KiB blocks), not by a
// shard (32 MiB). A queue without a bound grew it by ~60 MiB.
func TestCatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	peers := newTestPeers(t, 2)
	ctx := context.Background()
	data := seeded("cat-memory", 64<<20)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "big", Shard: true,
		ShardSize: 32 << 20, RMin: 1, RMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	data = nil
	root, _ := cid.Decode(res.CID)
	waitFor(t, 5*time.Second, func() error {
		if _, ok := peers[1].cons.State().Get(root); !ok {
			return errors.New("not pinned on peer 1 yet")
		}
		return nil
	})
	for _, p := range peers {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		w := &heapCat{countingHeapWriter{base: ms.HeapAlloc}}
		if err := (backend{p}).Cat(ctx, res.CID, 0, -1, w); err != nil {
			t.Fatal(err)
		}
		if w.n != 64<<20 {
			t.Fatalf("%s: read %d bytes of a 64 MiB file", p.cfg.PeerName, w.n)
		}
		growth := int64(w.peak) - int64(w.base)
		t.Logf("%s: live heap grew by %.1f MiB while reading %d MiB in 32 MiB shards", p.cfg.PeerName, float64(growth)/(1<<20), w.n>>20)
		if growth > 32<<20 {
			t.Fatalf("%s: live heap grew by %d bytes while reading a 64 MiB file of 32 MiB shards; the read-ahead is not bounded",
				p.cfg.PeerName, growth)
		}
	}
}

// heapCat is a countingHeapWriter that takes a length.
type heapCat struct{ countingHeapWriter }

func (*heapCat) SetLength(int64) {}
