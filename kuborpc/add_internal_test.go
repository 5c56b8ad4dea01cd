package kuborpc

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// TestPeekSize: the reader peekSize returns gives back every byte, and
// it says "more" exactly when the input is longer than the limit.
func TestPeekSize(t *testing.T) {
	const limit = 2*chunkSize + 7
	for _, n := range []int{0, 1, chunkSize, limit - 1, limit, limit + 1, 3*chunkSize + 5} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + i>>13)
		}
		// A reader that hands out one byte at a time, as a slow upload
		// can.
		r, more, err := peekSize(iotest.OneByteReader(bytes.NewReader(data)), limit)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if want := n > limit; more != want {
			t.Errorf("%d bytes, limit %d: more %v, want %v", n, limit, more, want)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: read back %d (%v), not the input", n, len(got), err)
		}
	}
	r, more, err := peekSize(bytes.NewReader([]byte("abc")), 0)
	if err != nil || !more {
		t.Fatalf("limit 0: more %v, %v; want always more", more, err)
	}
	if got, _ := io.ReadAll(r); string(got) != "abc" {
		t.Fatalf("limit 0 read %q", got)
	}
}
