package store

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// TestDirectReader reads ranges of a file through directReader, without
// O_DIRECT (the buffered fallback reads the same way), with a buffer of
// two pages so that every range crosses refills.
func TestDirectReader(t *testing.T) {
	data := seeded(42, 5*align+123)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ start, end int64 }{
		{0, int64(len(data))},
		{1, int64(len(data))},
		{align - 1, 3*align + 7},
		{2 * align, 2*align + 1},
		{4133, int64(len(data)) - 5},
		{7, 7},
	}
	for _, tt := range tests {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		d := newDirectReader(f, alignedBuf(2*align), alignedBuf(2*align), tt.start, tt.end)
		var got bytes.Buffer
		// One byte, then reads of an odd size, as Next mixes them.
		if tt.end > tt.start {
			b, err := d.ReadByte()
			if err != nil {
				t.Fatalf("[%d, %d): ReadByte: %v", tt.start, tt.end, err)
			}
			got.WriteByte(b)
		}
		buf := make([]byte, 3001)
		for {
			n, err := d.Read(buf)
			got.Write(buf[:n])
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("[%d, %d): %v", tt.start, tt.end, err)
			}
		}
		d.close()
		f.Close()
		if want := data[tt.start:tt.end]; !bytes.Equal(got.Bytes(), want) {
			t.Errorf("[%d, %d): read %d bytes, want %d (equal prefix: %v)", tt.start, tt.end, got.Len(), len(want),
				bytes.HasPrefix(want, got.Bytes()))
		}
	}
}

// TestDirectReaderShortFile: a file that ends before end is an error, not
// a silent short read.
func TestDirectReaderShortFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, seeded(1, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := newDirectReader(f, alignedBuf(align), alignedBuf(align), 10, 2000)
	if _, err := io.ReadAll(d); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading past the end of the file: %v, want io.ErrUnexpectedEOF", err)
	}
	d.close()
}

// TestDirectReaderCloseEarly: closing mid-file, with the read-ahead
// blocked or not, leaves what was read so far intact; once close returns
// the read-ahead goroutine has returned, and close hands back the very two
// buffers it was given, free to reuse: a new reader reads another file
// through them byte for byte, after the old one's descriptor was closed.
func TestDirectReaderCloseEarly(t *testing.T) {
	dir := t.TempDir()
	data, other := seeded(2, 10*align), seeded(3, 3*align+17)
	path, otherPath := filepath.Join(dir, "f"), filepath.Join(dir, "other")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(otherPath, other, 0o600); err != nil {
		t.Fatal(err)
	}
	// A close that did not wait would leave the read-ahead running for
	// only a moment: many tries catch that.
	for try := range 100 {
		consume := []int{0, 1, align + 1, 3*align - 1}[try%4]
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		running := readAheads()
		a, b := alignedBuf(align), alignedBuf(align)
		d := newDirectReader(f, a, b, 0, 10*align)
		got := make([]byte, consume)
		if _, err := io.ReadFull(d, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[:consume]) {
			t.Fatalf("consume %d: read bytes that differ from the file's", consume)
		}
		if n := readAheads(); consume > 0 && n != running+1 {
			t.Fatalf("consume %d: %d read-aheads run, want %d: readAheads does not see them", consume, n, running+1)
		}
		closed := make(chan [2][]byte, 1)
		go func() { closed <- d.close() }()
		var bufs [2][]byte
		select {
		case bufs = <-closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("consume %d: close did not return", consume)
		}
		if n := readAheads(); n != running {
			t.Fatalf("consume %d: %d read-aheads run after close, want %d", consume, n, running)
		}
		f.Close()
		for i, want := range [2][]byte{a, b} {
			if len(bufs[i]) != len(want) || cap(bufs[i]) != cap(want) || unsafe.SliceData(bufs[i]) != unsafe.SliceData(want) {
				t.Fatalf("consume %d: close returned buffer %d of %d bytes at %p, want the one given, %d bytes at %p",
					consume, i, len(bufs[i]), unsafe.SliceData(bufs[i]), len(want), unsafe.SliceData(want))
			}
			for j := range bufs[i] {
				bufs[i][j] = 0xa5 // reused from here on
			}
		}
		g, err := os.Open(otherPath)
		if err != nil {
			t.Fatal(err)
		}
		r := newDirectReader(g, bufs[0], bufs[1], 5, int64(len(other)))
		again, err := io.ReadAll(r)
		r.close()
		g.Close()
		if err != nil || !bytes.Equal(again, other[5:]) {
			t.Fatalf("consume %d: a reader on the returned buffers read %d bytes (%v), want the other file's %d",
				consume, len(again), err, len(other)-5)
		}
	}
}

// readAheads counts the goroutines that run a directReader's read-ahead.
func readAheads() int {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("store.(*directReader).readLoop("))
		}
		buf = make([]byte, 2*len(buf))
	}
}
