package bench

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Seed is the ChaCha8 seed of every data set, fixed so that every machine
// benchmarks the same bytes and gets the same root CIDs.
var Seed = sha256.Sum256([]byte("shoal bench data v1"))

// NewData returns a reader of size seeded random bytes: the bytes of
// DataFile(dir, size), and for every size a prefix of the longer sizes'
// bytes.
func NewData(size int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8(Seed), size)
}

// Data returns the first size seeded bytes in memory (see NewData).
func Data(size int) []byte {
	b := make([]byte, size)
	// ChaCha8.Read never fails.
	_, _ = io.ReadFull(NewData(int64(size)), b)
	return b
}

// DataFile returns the path of the seeded data file of the given size in
// dir, writing it first unless a file of that size is already there.
// It is written under a temporary name and renamed once complete and
// fsynced, so a file of the right size is always a whole one.
func DataFile(dir string, size int64) (path string, created bool, err error) {
	path = filepath.Join(dir, "data-"+FormatSize(size)+".bin")
	if fi, err := os.Stat(path); err == nil && fi.Size() == size {
		return path, false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, fmt.Errorf("create data directory %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".data-*.tmp")
	if err != nil {
		return "", false, fmt.Errorf("create data file in %s: %w", dir, err)
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	buf := make([]byte, 4<<20)
	if _, err := io.CopyBuffer(onlyWriter{f}, NewData(size), buf); err != nil {
		f.Close()
		return "", false, fmt.Errorf("write data file %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", false, fmt.Errorf("sync data file %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return "", false, fmt.Errorf("close data file %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return "", false, fmt.Errorf("rename data file to %s: %w", path, err)
	}
	return path, true, nil
}

// Warm reads the file once so that the timed runs read it from the page
// cache, and returns how many bytes it read.
func Warm(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.CopyBuffer(io.Discard, onlyReader{f}, make([]byte, 1<<20))
	if err != nil {
		return n, fmt.Errorf("warm %s: %w", path, err)
	}
	return n, nil
}

// Stretch returns a reader of total bytes made of the file read over and
// over, each pass after the first XORed with its own 64-bit mask so that no
// 256 KiB leaf repeats: the -big run streams 16 GiB from a 2 GiB file at
// memory speed, where generating ChaCha8 would cost the measured process
// a core (it runs at ~1.3 GB/s here). The file's size must be a multiple
// of 8.
func Stretch(f *os.File, size, total int64) io.Reader {
	return &stretch{f: f, size: size, left: total}
}

type stretch struct {
	f    *os.File
	size int64
	off  int64 // offset in the file
	pass uint64
	left int64
}

func (s *stretch) Read(p []byte) (int, error) {
	if s.left <= 0 {
		return 0, io.EOF
	}
	if s.off == s.size {
		s.off = 0
		s.pass++
	}
	n := int64(len(p)) &^ 7
	if n == 0 {
		return 0, errors.New("stretch: read buffer below 8 bytes")
	}
	n = min(n, s.size-s.off, s.left)
	m, err := s.f.ReadAt(p[:n], s.off)
	if int64(m) != n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("stretch %s at %d: %w", s.f.Name(), s.off, err)
	}
	if s.pass > 0 {
		mask := mix(s.pass)
		for i := 0; i+8 <= m; i += 8 {
			binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^mask)
		}
	}
	s.off += n
	s.left -= n
	return m, nil
}

// mix is SplitMix64's finaliser: distinct, well-spread masks per pass.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// ParseSize parses a byte count with an optional binary suffix: 2GiB,
// 64MiB, 512KiB, 4096. The suffix is case-insensitive; KB/MB/GB are read
// as binary too, as people mean them on the command line.
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"tib", 1 << 40}, {"gib", 1 << 30}, {"mib", 1 << 20}, {"kib", 1 << 10},
		{"tb", 1 << 40}, {"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10},
		{"t", 1 << 40}, {"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}, {"b", 1},
	} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q: want a positive byte count like 2GiB, 64MiB or 4096", s)
	}
	return n * mult, nil
}

// FormatSize prints n in the largest binary unit that divides it.
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// onlyReader and onlyWriter hide ReaderFrom/WriterTo so that io.Copy moves
// bytes with plain read and write calls of the given buffer, as cat does,
// rather than sendfile or splice, which no user's pipeline gets.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }
