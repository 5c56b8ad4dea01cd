package store

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
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

// TestDirectReaderCloseEarly: closing mid-file stops the read-ahead.
func TestDirectReaderCloseEarly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, seeded(2, 10*align), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, consume := range []int{0, 1, align + 1} {
		d := newDirectReader(f, alignedBuf(align), alignedBuf(align), 0, 10*align)
		if _, err := io.ReadFull(d, make([]byte, consume)); err != nil {
			t.Fatal(err)
		}
		d.close() // must return, with the read-ahead blocked or not
	}
}
