package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
)

// rawBlock is a raw-leaf block of data.
func rawBlock(t *testing.T, data []byte) dag.Block {
	t.Helper()
	h, err := mh.Sum(data, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return dag.Block{CID: cid.NewCidV1(cid.Raw, h), Data: data}
}

// sliceSource is a rawSource over blocks, as a store reader or a stream
// gives them: each read into buf when it fits, else into new memory; then
// end (io.EOF when nil).
func sliceSource(blocks []dag.Block, end error) rawSource {
	i := 0
	return func(buf []byte) (dag.Block, int, error) {
		if i == len(blocks) {
			if end == nil {
				end = io.EOF
			}
			return dag.Block{}, 0, end
		}
		b := blocks[i]
		i++
		n := len(b.Data)
		if n > cap(buf) {
			buf, n = make([]byte, len(b.Data)), 0
		}
		buf = buf[:len(b.Data)]
		copy(buf, b.Data)
		return dag.Block{CID: b.CID, Data: buf}, n, nil
	}
}

// testBlocks are blocks of assorted sizes: 256 KiB ones that fill a batch,
// tiny ones (more than a batch may hold), ones larger than a batch's arena
// (1 MiB ones that grow it, one larger than a grown arena).
func testBlocks(t *testing.T) []dag.Block {
	var out []dag.Block
	add := func(n int) {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(len(out)*7 + i*13)
		}
		out = append(out, rawBlock(t, data))
	}
	for range 9 {
		add(256 << 10)
	}
	for i := range hashBatchBlocks + 10 {
		add(1 + i%3)
	}
	add(hashBatchSize + 1)
	for range 5 { // 1 MiB: Kubo's largest chunks, two a grown arena
		add(1 << 20)
	}
	add(3 << 20)
	add(100 << 10)
	add(0)
	return out
}

// TestHashAheadOrder: every block comes back, in order, with its bytes,
// then io.EOF, again on every later call.
func TestHashAheadOrder(t *testing.T) {
	blocks := testBlocks(t)
	h := newHashAhead(sliceSource(blocks, nil))
	defer h.stop()
	for i, want := range blocks {
		b, err := h.next()
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if !b.CID.Equals(want.CID) || !bytes.Equal(b.Data, want.Data) {
			t.Fatalf("block %d is %s (%d bytes), want %s (%d bytes)", i, b.CID, len(b.Data), want.CID, len(want.Data))
		}
	}
	for range 2 {
		if _, err := h.next(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the last block: %v, want io.EOF", err)
		}
	}
}

// TestHashAheadErrorsInPlace: a corrupt block, and a failing source, are
// reported after the blocks before them and never skipped.
func TestHashAheadErrorsInPlace(t *testing.T) {
	blocks := testBlocks(t)
	for _, at := range []int{0, 3, 9, 500, len(blocks) - 6, len(blocks) - 1} {
		t.Run(fmt.Sprintf("corrupt %d", at), func(t *testing.T) {
			bad := append([]dag.Block(nil), blocks...)
			bad[at].Data = append(bytes.Clone(bad[at].Data), 'x')
			checkErrorAt(t, newHashAhead(sliceSource(bad, nil)), blocks, at,
				fmt.Sprintf("block %s is corrupt: its bytes do not hash to its CID", blocks[at].CID))
		})
		t.Run(fmt.Sprintf("source fails at %d", at), func(t *testing.T) {
			checkErrorAt(t, newHashAhead(sliceSource(blocks[:at], errors.New("stream reset"))), blocks, at, "stream reset")
		})
	}
}

func checkErrorAt(t *testing.T, h *hashAhead, blocks []dag.Block, at int, want string) {
	t.Helper()
	defer h.stop()
	for i := range at {
		b, err := h.next()
		if err != nil || !b.CID.Equals(blocks[i].CID) {
			t.Fatalf("block %d: %v, %v", i, b.CID, err)
		}
	}
	for range 2 {
		if _, err := h.next(); err == nil || err.Error() != want {
			t.Fatalf("at block %d: %v, want %q", at, err, want)
		}
	}
}

// TestHashAheadStop: stop ends the reader and the workers whether the
// reader is waiting for the user (an endless source nobody reads) or the
// user stopped midway; next then fails.
func TestHashAheadStop(t *testing.T) {
	block := rawBlock(t, bytes.Repeat([]byte("s"), 256<<10))
	endless := func(buf []byte) (dag.Block, int, error) {
		buf = buf[:len(block.Data)]
		copy(buf, block.Data)
		return dag.Block{CID: block.CID, Data: buf}, len(buf), nil
	}
	before := runtime.NumGoroutine()
	for _, taken := range []int{0, 1, 100} {
		h := newHashAhead(endless)
		for range taken {
			if _, err := h.next(); err != nil {
				t.Fatal(err)
			}
		}
		done := make(chan struct{})
		go func() { h.stop(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("stop after %d blocks did not return", taken)
		}
		if _, err := h.next(); !errors.Is(err, errHashAheadStopped) {
			t.Fatalf("next after stop: %v", err)
		}
	}
	// stop waited for the reader and the workers to return; the runtime
	// counts a goroutine until it has exited, a moment later.
	waitFor(t, 5*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("%d goroutines after stop, %d before", n, before)
		}
		return nil
	})
}

// TestHashAheadBounded: when nobody takes the blocks, the reader stops
// after filling every batch: two 256 KiB blocks a batch; with 1 MiB blocks
// one in memory of its own, then two a batch in grown arenas; with larger
// blocks one a batch. Without the last bound a batch took up to
// hashBatchBlocks blocks of up to 8 MiB.
func TestHashAheadBounded(t *testing.T) {
	for _, tt := range []struct {
		size, want int
	}{
		{256 << 10, 2 * hashBatches},
		{1 << 20, 1 + 2*(hashBatches-1)},
		{3 << 20, hashBatches},
	} {
		block := rawBlock(t, bytes.Repeat([]byte("b"), tt.size))
		var reads atomic.Int64
		h := newHashAhead(func(buf []byte) (dag.Block, int, error) {
			reads.Add(1)
			return sliceSource([]dag.Block{block}, nil)(buf)
		})
		// The reader is done once every batch is filled and waits in
		// order for the user (on a loaded machine, hashing a batch may
		// pause it for long: no quiet period says it is done). With no
		// batch left to fill, it cannot read again until the user takes
		// one.
		waitFor(t, 20*time.Second, func() error {
			if n := len(h.order); n != hashBatches {
				return fmt.Errorf("blocks of %d bytes: %d batches of %d filled, %d blocks read", tt.size, n, hashBatches, reads.Load())
			}
			return nil
		})
		n := reads.Load()
		h.stop()
		if n != int64(tt.want) {
			t.Errorf("blocks of %d bytes: %d read ahead, want %d", tt.size, n, tt.want)
		}
	}
}
