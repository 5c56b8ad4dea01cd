package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"

	"github.com/shoal-project/shoal/dag"
)

// blockingReader yields n bytes, then blocks until its context ends.
type blockingReader struct {
	ctx context.Context
	n   int
}

func (r *blockingReader) Read(b []byte) (int, error) {
	if r.n > 0 {
		k := min(len(b), r.n)
		r.n -= k
		return k, nil
	}
	<-r.ctx.Done()
	return 0, r.ctx.Err()
}

// failingReader yields n bytes, then fails.
type failingReader struct{ n int }

func (r *failingReader) Read(b []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("disk on fire")
	}
	k := min(len(b), r.n)
	r.n -= k
	return k, nil
}

func newTestIngester(t *testing.T) *Ingester {
	t.Helper()
	in, err := New(Config{Params: dag.DefaultParams()})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// waitGoroutines waits until the goroutine count drops back to base.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left running, want %d", runtime.NumGoroutine(), base)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCancelStopsPromptly(t *testing.T) {
	in := newTestIngester(t)
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := in.File(ctx, &blockingReader{ctx: ctx, n: 3 << 20}, Discard)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v to stop", d)
	}
	waitGoroutines(t, base)
}

func TestReadErrorIsReported(t *testing.T) {
	in := newTestIngester(t)
	_, err := in.File(context.Background(), &failingReader{n: 1 << 20}, Discard)
	if err == nil || err.Error() != "read input: disk on fire" {
		t.Fatalf("error %v, want read input: disk on fire", err)
	}
}

// cutReader yields n bytes, then fails with err: a multipart part that
// ends without its closing boundary, or an HTTP body shorter than its
// Content-Length, fails with io.ErrUnexpectedEOF.
type cutReader struct {
	n   int
	err error
}

func (r *cutReader) Read(b []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(b), r.n)
	r.n -= k
	return k, nil
}

// TestUnexpectedEOFFromTheReaderFails: an io.ErrUnexpectedEOF of the
// reader's own is not the end of the file (a chunker's io.ReadFull says
// the same for a short last chunk): the add fails, for every chunker and
// wherever the reader stops, and reports no entry.
func TestUnexpectedEOFFromTheReaderFails(t *testing.T) {
	for _, chunker := range []string{"size-262144", "rabin", "buzhash"} {
		params, err := dag.Options{Chunker: chunker}.Params()
		if err != nil {
			t.Fatal(err)
		}
		in, err := New(Config{Params: params})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{0, 5, 262144, 1<<20 + 3} {
			for _, rerr := range []error{io.ErrUnexpectedEOF, fmt.Errorf("read body: %w", io.ErrUnexpectedEOF)} {
				entries := 0
				_, err := in.AddReader(context.Background(), &cutReader{n: n, err: rerr}, "f", AddOptions{}, Discard,
					func(Entry) { entries++ })
				want := "read input: " + rerr.Error()
				if !errors.Is(err, io.ErrUnexpectedEOF) || err.Error() != want || entries != 0 {
					t.Errorf("%s, %d bytes, then %q: error %v and %d entries, want %q and none", chunker, n, rerr, err, entries, want)
				}
			}
			// The same bytes that end with io.EOF are a complete file.
			if _, err := in.AddReader(context.Background(), &cutReader{n: n, err: io.EOF}, "f", AddOptions{}, Discard, nil); err != nil {
				t.Errorf("%s, %d bytes, then EOF: %v", chunker, n, err)
			}
		}
	}
}

type failingSink struct{ after int }

func (s *failingSink) Put(context.Context, dag.Block) error {
	if s.after == 0 {
		return errors.New("sink full")
	}
	s.after--
	return nil
}

// TestSinkErrorThenReuse: a failing sink stops the ingest with its error,
// and the ingester's buffers are all back for the next file.
func TestSinkErrorThenReuse(t *testing.T) {
	in := newTestIngester(t)
	data := goldenBytes("shoal-golden-1048577", 1048577)
	base := runtime.NumGoroutine()
	_, err := in.File(context.Background(), bytes.NewReader(data), &failingSink{after: 2})
	if err == nil || err.Error() != "sink full" {
		t.Fatalf("error %v, want sink full", err)
	}
	waitGoroutines(t, base)
	if len(in.pool) != cap(in.pool) {
		t.Fatalf("%d of %d buffers back in the pool", len(in.pool), cap(in.pool))
	}
	root, err := in.File(context.Background(), bytes.NewReader(data), Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := "QmdSaj6ufqXz4byUKYGoeZ2gohe4K7H74eeqsWjw49vkUQ"; root.CID.String() != want {
		t.Fatalf("root %s after reuse, want %s", root.CID, want)
	}
}

// patternReader yields n pseudo-random bytes cheaply, without holding them.
type patternReader struct {
	n     int64
	state uint64
}

func (r *patternReader) Read(b []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > r.n {
		b = b[:r.n]
	}
	for i := range b {
		r.state = r.state*6364136223846793005 + 1442695040888963407
		b[i] = byte(r.state >> 56)
	}
	r.n -= int64(len(b))
	return len(b), nil
}

// heapSink samples the live heap every 64 blocks.
type heapSink struct {
	n    int
	peak uint64
}

func (s *heapSink) Put(context.Context, dag.Block) error {
	s.n++
	if s.n%64 == 0 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s.peak = max(s.peak, ms.HeapAlloc)
	}
	return nil
}

// TestMemoryDoesNotGrowWithInput ingests 16 MiB and 16 times as much and
// compares the live heap: it must stay within the buffer pool's bound,
// whatever the size of the input.
func TestMemoryDoesNotGrowWithInput(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	peak := func(n int64) uint64 {
		in := newTestIngester(t)
		var s heapSink
		if _, err := in.File(context.Background(), &patternReader{n: n, state: 1}, &s); err != nil {
			t.Fatal(err)
		}
		return s.peak
	}
	small, large := peak(16<<20), peak(256<<20)
	t.Logf("live heap: %d KiB for 16 MiB, %d KiB for 256 MiB", small>>10, large>>10)
	if large > small+4<<20 {
		t.Fatalf("live heap grew from %d to %d bytes with the input", small, large)
	}
	if bound := uint64(16 << 20); large > bound {
		t.Fatalf("live heap %d bytes, above %d", large, bound)
	}
}

func TestAddErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "d", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(dir, "d", name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	in := newTestIngester(t)
	ctx := context.Background()
	tests := []struct {
		name  string
		paths []string
		opts  AddOptions
		sink  Sink
		want  string
	}{
		{"missing", []string{filepath.Join(dir, "nope")}, AddOptions{}, Discard,
			"add " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"dir without -r", []string{filepath.Join(dir, "d")}, AddOptions{}, Discard,
			filepath.Join(dir, "d") + " is a directory; add it with -r"},
		{"unreadable", []string{"/proc/self/mem"}, AddOptions{}, Discard,
			"add /proc/self/mem: read input: input/output error"},
		{"vanishes mid-walk", []string{filepath.Join(dir, "d")}, AddOptions{Recursive: true},
			sinkFunc(func() { os.Remove(filepath.Join(dir, "d", "b")) }),
			"add " + filepath.Join(dir, "d", "b") + ": no such file or directory"},
		{"device", []string{"/dev/null"}, AddOptions{}, Discard,
			"add /dev/null: not a regular file, directory or symlink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var entries []Entry
			_, err := in.Add(ctx, tt.paths, tt.opts, tt.sink, func(e Entry) { entries = append(entries, e) })
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

type sinkFunc func()

func (f sinkFunc) Put(context.Context, dag.Block) error { f(); return nil }

// TestSymlinkLoopIsStored: links are stored, never followed, so a loop is
// just two symlink nodes.
func TestSymlinkLoopIsStored(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "loop")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("b", filepath.Join(d, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a", filepath.Join(d, "b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(".", filepath.Join(d, "self")); err != nil {
		t.Fatal(err)
	}
	in := newTestIngester(t)
	var names []string
	root, err := in.Add(context.Background(), []string{d}, AddOptions{Recursive: true}, Discard,
		func(e Entry) { names = append(names, e.Name+" "+e.CID.String()) })
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(names, "\n")
	// Symlink nodes as Kubo's adder builds them with boxo: dag-pb nodes of
	// UnixFS type Symlink whose data is the target.
	link := func(target string) string {
		data, err := ft.SymlinkData(target)
		if err != nil {
			t.Fatal(err)
		}
		return mdag.NodeWithData(data).Cid().String()
	}
	want := strings.Join([]string{
		d + "/a " + link("b"),
		d + "/b " + link("a"),
		d + "/self " + link("."),
		d + " " + root.CID.String(),
	}, "\n")
	if got != want {
		t.Fatalf("entries\n%s\nwant\n%s", got, want)
	}
}
