package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ingest"
)

// TestMain doubles as the helper process of the runner's tests: with
// BENCH_HELPER set, the test binary does what it says and exits.
func TestMain(m *testing.M) {
	switch h := os.Getenv("BENCH_HELPER"); {
	case h == "":
		os.Exit(m.Run())
	case strings.HasPrefix(h, "touch:"): // touch N MiB, then exit
		n, _ := strconv.Atoi(strings.TrimPrefix(h, "touch:"))
		b := make([]byte, n<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		os.Exit(int(b[len(b)-4096]) - 1)
	case h == "count": // print the number of stdin bytes
		n, err := io.Copy(io.Discard, os.Stdin)
		if err != nil {
			os.Exit(2)
		}
		fmt.Println(n)
		os.Exit(0)
	case h == "fail":
		fmt.Fprintln(os.Stderr, "helper failed on purpose")
		os.Exit(3)
	}
	os.Exit(9)
}

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want Summary
	}{
		{nil, Summary{}},
		{[]float64{5}, Summary{5, 5, 5, 1}},
		{[]float64{3, 1, 2}, Summary{2, 1, 3, 3}},
		{[]float64{4, 1, 3, 2}, Summary{2.5, 1, 4, 4}},
		{[]float64{10, 10, 1}, Summary{10, 1, 10, 3}},
	} {
		t.Run(fmt.Sprint(tc.in), func(t *testing.T) {
			in := append([]float64(nil), tc.in...)
			if got := Summarize(in); got != tc.want {
				t.Errorf("Summarize(%v) = %+v, want %+v", tc.in, got, tc.want)
			}
			for i := range in {
				if in[i] != tc.in[i] {
					t.Fatalf("Summarize reordered its input: %v", in)
				}
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // 0: an error
	}{
		{"2GiB", 2 << 30}, {"64MiB", 64 << 20}, {"16gib", 16 << 30}, {"512k", 512 << 10},
		{"4096", 4096}, {"1 GB", 1 << 30}, {"7b", 7},
		{"", 0}, {"0", 0}, {"-1MiB", 0}, {"1.5GiB", 0}, {"GiB", 0}, {"99999999TiB", 0},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSize(tc.in)
			if tc.want == 0 {
				if err == nil {
					t.Fatalf("ParseSize(%q) = %d, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
			if back, err := ParseSize(FormatSize(got)); err != nil || back != got {
				t.Fatalf("FormatSize(%d) = %q does not parse back", got, FormatSize(got))
			}
		})
	}
}

func TestDataFile(t *testing.T) {
	dir := t.TempDir()
	const size = 1<<20 + 5
	path, created, err := DataFile(dir, size)
	if err != nil || !created {
		t.Fatalf("DataFile = %q, %v, %v; want a new file", path, created, err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, Data(size)) {
		t.Fatal("file differs from Data")
	}
	if !bytes.Equal(Data(1000), got[:1000]) {
		t.Fatal("a shorter data set is not a prefix of a longer one")
	}
	if bytes.Equal(got[:4096], make([]byte, 4096)) {
		t.Fatal("data is zeros")
	}

	// A file of the right size is reused as it is.
	mtime := time.Unix(1, 0)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if _, created, err := DataFile(dir, size); err != nil || created {
		t.Fatalf("second DataFile: created %v, %v; want reuse", created, err)
	}
	// A truncated one is rewritten.
	if err := os.Truncate(path, 100); err != nil {
		t.Fatal(err)
	}
	if _, created, err := DataFile(dir, size); err != nil || !created {
		t.Fatalf("DataFile over a short file: created %v, %v; want a rewrite", created, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != size {
		t.Fatalf("rewritten file: %v, %v", fi, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".data-*")); len(m) > 0 {
		t.Fatalf("temporary files left: %v", m)
	}
}

func TestStretch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	src := Data(64)
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Small reads exercise the pass boundaries.
	got, err := io.ReadAll(io.LimitReader(onlyReader{bufReader{Stretch(f, 64, 200), 24}}, 1000))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 200 {
		t.Fatalf("read %d bytes, want 200", len(got))
	}
	if !bytes.Equal(got[:64], src) {
		t.Fatal("first pass differs from the file")
	}
	for pass := 1; pass*64 < 200; pass++ {
		p := got[pass*64 : min(200, pass*64+64)]
		if bytes.Equal(p, src[:len(p)]) {
			t.Fatalf("pass %d repeats the file", pass)
		}
		for i := range p {
			if p[i]^src[i] != byte(mix(uint64(pass))>>(8*(i%8))) {
				t.Fatalf("pass %d byte %d is not the file XOR the pass mask", pass, i)
			}
		}
	}
}

// bufReader reads through at most n bytes at a time.
type bufReader struct {
	r io.Reader
	n int
}

func (b bufReader) Read(p []byte) (int, error) { return b.r.Read(p[:min(len(p), b.n)]) }

func helper(t *testing.T, mode string) Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("BENCH_HELPER", mode)
	return Cmd{Path: self}
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	t.Run("peak RSS", func(t *testing.T) {
		res, err := Run(ctx, helper(t, "touch:64"))
		if err != nil {
			t.Fatal(err)
		}
		if res.MaxRSS < 64<<20 || res.MaxRSS > 1<<30 {
			t.Errorf("MaxRSS = %d MiB after touching 64 MiB", res.MaxRSS>>20)
		}
		if res.Wall <= 0 {
			t.Errorf("Wall = %v", res.Wall)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		c := helper(t, "count")
		const n = 3<<20 + 7 // beyond any pipe buffer, not a multiple of FeedSize
		c.Stdin = bytes.NewReader(make([]byte, n))
		res, err := Run(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(res.Stdout)); got != strconv.Itoa(n) {
			t.Errorf("child read %s bytes, want %d", got, n)
		}
	})
	t.Run("failure", func(t *testing.T) {
		_, err := Run(ctx, helper(t, "fail"))
		if err == nil || !strings.Contains(err.Error(), "failed on purpose") {
			t.Errorf("Run = %v, want the child's stderr in the error", err)
		}
	})
}

func TestSHA256(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	data := Data(3*HashPiece + 17)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var want [sha256.Size]byte
	for off := 0; off < len(data); off += HashPiece {
		xor(&want, sha256.Sum256(data[off:min(len(data), off+HashPiece)]))
	}
	for _, workers := range []int{1, 2, 3, 7} {
		got, err := SHA256(context.Background(), path, workers)
		if err != nil || got != want {
			t.Errorf("SHA256 with %d workers = %x, %v; want %x", workers, got, err, want)
		}
	}
}

// TestDirectWrite: DirectWrite makes a new file of size rounded up to
// whole blocks, of exactly the seeded bytes of one block (Data) with each
// block's first 8 bytes its index, so that every block differs; it
// refuses a path that exists, leaving that file as it was, and writes
// nothing once its context is cancelled.
func TestDirectWrite(t *testing.T) {
	block := Data(DirectBlock)
	for _, size := range []int64{0, 1, DirectBlock, 2*DirectBlock + 1} {
		path := filepath.Join(t.TempDir(), "f")
		err := DirectWrite(context.Background(), path, size)
		if errors.Is(err, syscall.EINVAL) {
			t.Skipf("no O_DIRECT on this file system: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blocks := (size + DirectBlock - 1) / DirectBlock
		want := make([]byte, 0, blocks*DirectBlock)
		for i := range blocks {
			want = binary.LittleEndian.AppendUint64(want, uint64(i))
			want = append(want, block[8:]...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("size %d: wrote %d bytes, want %d blocks (%d bytes) of the seeded block stamped with its index; equal prefix %v",
				size, len(got), blocks, len(want), bytes.HasPrefix(want, got))
		}
		if err := DirectWrite(context.Background(), path, DirectBlock); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("size %d: DirectWrite over an existing file: %v, want it refused (file exists)", size, err)
		}
		if again, err := os.ReadFile(path); err != nil || !bytes.Equal(again, want) {
			t.Fatalf("size %d: a refused DirectWrite changed the file: %d bytes, %v", size, len(again), err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	path := filepath.Join(t.TempDir(), "f")
	if err := DirectWrite(ctx, path, DirectBlock); !errors.Is(err, context.Canceled) {
		t.Fatalf("DirectWrite with a cancelled context: %v, want %v", err, context.Canceled)
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() != 0 {
		t.Fatalf("DirectWrite with a cancelled context wrote %d bytes", fi.Size())
	}
}

// TestDirectRead: DirectRead reads every byte, the short last read of a
// size that is not a multiple of its block included.
func TestDirectRead(t *testing.T) {
	for _, size := range []int{0, DirectReadBlock, 3*DirectReadBlock + 1000} {
		path := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(path, Data(size), 0o644); err != nil {
			t.Fatal(err)
		}
		n, err := DirectRead(context.Background(), path)
		if errors.Is(err, syscall.EINVAL) {
			t.Skipf("no O_DIRECT on this file system: %v", err)
		}
		if err != nil || n != int64(size) {
			t.Fatalf("read %d bytes of %d: %v", n, size, err)
		}
	}
	if _, err := DirectRead(context.Background(), filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("a missing file read without an error")
	}
}

// TestReferences checks the references against each other and against
// shoal's ingest: the same root, and flatfs holds every block.
func TestReferences(t *testing.T) {
	data := Data(12*256<<10 + 1000) // 13 leaves and a root
	ctx := context.Background()
	hashOnly, err := BoxoImport(bytes.NewReader(data), Discard{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "flatfs")
	stored, err := BoxoFlatfs(ctx, bytes.NewReader(data), dir)
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ingest.Config{Params: dag.DefaultParams()})
	if err != nil {
		t.Fatal(err)
	}
	shoal, err := in.File(ctx, bytes.NewReader(data), ingest.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !hashOnly.Equals(stored) || !hashOnly.Equals(shoal.CID) || hashOnly.Version() != 0 {
		t.Fatalf("roots differ: boxo hash-only %s, boxo flatfs %s, shoal %s", hashOnly, stored, shoal.CID)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*.data"))
	if len(files) != 14 {
		t.Errorf("flatfs holds %d blocks, want 14", len(files))
	}
}
