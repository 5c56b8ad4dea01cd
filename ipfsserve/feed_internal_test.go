package ipfsserve

import (
	"bytes"
	"context"
	"testing"
	"time"
)

func newTestFeed(pos uint64) *feed {
	return &feed{idle: feedIdle, wake: make(chan struct{}), leaves: map[string]fedLeaf{}, taken: map[string]struct{}{}, pos: pos}
}

// takeSoon is f.take with a deadline, so that a take that waits when it
// should not fails the test instead of hanging it.
func takeSoon(t *testing.T, f *feed, key string, sp span) ([]byte, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	data, ok := f.take(ctx, key, sp)
	if ctx.Err() != nil {
		t.Fatalf("take %s %v: still waiting after 5s", key, sp)
	}
	return data, ok
}

// TestFeedTake: a feed gives each leaf once, in any order the walk asks
// within its buffer, waits for a leaf the stream has not reached, and
// gives up on a leaf the stream passed, on an ended stream and on a
// stalled one; a copy of a leaf the walk took is dropped.
func TestFeedTake(t *testing.T) {
	ctx := context.Background()
	f := newTestFeed(1000)
	a, b := bytes.Repeat([]byte{'a'}, 10), bytes.Repeat([]byte{'b'}, 10)
	f.put(ctx, "A", a, 10)
	f.put(ctx, "B", b, 10)
	if f.pos != 1020 || f.bytes != 20 {
		t.Fatalf("after two leaves: pos %d, bytes %d; want 1020, 20", f.pos, f.bytes)
	}
	if got, ok := takeSoon(t, f, "B", span{1010, 1020}); !ok || !bytes.Equal(got, b) {
		t.Fatalf("take B = %q, %v", got, ok)
	}
	if got, ok := takeSoon(t, f, "A", span{1000, 1010}); !ok || !bytes.Equal(got, a) {
		t.Fatalf("take A = %q, %v", got, ok)
	}
	if f.bytes != 0 || len(f.leaves) != 0 {
		t.Fatalf("after both taken: %d bytes, %d leaves held", f.bytes, len(f.leaves))
	}
	// A repeated leaf the walk took is not held again, but its bytes count.
	f.put(ctx, "A", a, 10)
	if f.pos != 1030 || f.bytes != 0 {
		t.Fatalf("after a repeat of A: pos %d, bytes %d; want 1030, 0", f.pos, f.bytes)
	}
	// Passed: the stream is beyond the span's end without the leaf.
	if _, ok := takeSoon(t, f, "X", span{1020, 1030}); ok {
		t.Fatal("took X, which the stream passed")
	}
	// ... and the stream's copy, should it come, is dropped.
	f.put(ctx, "X", a, 10)
	if _, held := f.leaves["X"]; held {
		t.Fatal("the feed holds X, which the walk read elsewhere")
	}

	// Ahead: the walk waits until the stream brings it.
	got := make(chan []byte)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		data, _ := f.take(ctx, "C", span{1040, 1050})
		got <- data
	}()
	time.Sleep(20 * time.Millisecond) // let take wait; a put before it is the other case above
	c := bytes.Repeat([]byte{'c'}, 10)
	f.put(ctx, "C", c, 10)
	if data := <-got; !bytes.Equal(data, c) {
		t.Fatalf("waited take of C = %q", data)
	}

	// Ended: nothing more comes.
	f.finish()
	if _, ok := takeSoon(t, f, "D", span{1050, 1060}); ok {
		t.Fatal("took D from an ended stream")
	}
}

// TestFeedStall: a put waits for room; a take of a leaf that is not held
// while the stream waits drops the leaves behind the walk, so the stream
// goes on, and gives up when none are (the walk reads the leaf alone).
func TestFeedStall(t *testing.T) {
	ctx := context.Background()
	f := newTestFeed(0)
	leaf := bytes.Repeat([]byte{'x'}, feedBytes/4)
	for i, k := range []string{"L0", "L1", "L2", "L3"} {
		f.put(ctx, k, leaf, uint64(len(leaf)))
		if f.stalled {
			t.Fatalf("stalled after %d leaves of a full buffer", i+1)
		}
	}
	n := uint64(len(leaf))
	put := make(chan bool)
	go func() { put <- f.put(ctx, "L4", leaf, n) }()
	waitStalled := func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			f.mu.Lock()
			s := f.stalled
			f.mu.Unlock()
			if s {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the put of a fifth leaf does not wait for room")
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitStalled()
	// The walk wants L4: L0 and L1 are behind it (it read them elsewhere),
	// so they go, L4 comes in.
	data, ok := takeSoon(t, f, "L4", span{4 * n, 5 * n})
	if !ok || len(data) != len(leaf) {
		t.Fatalf("take L4 = %d bytes, %v", len(data), ok)
	}
	if !<-put {
		t.Fatal("the waiting put failed")
	}
	for _, k := range []string{"L0", "L1", "L2", "L3"} {
		if _, held := f.leaves[k]; held {
			t.Fatalf("%s, behind the walk, is still held", k)
		}
	}
	// A full buffer of leaves ahead of the walk, and a leaf that is not
	// among them: the walk gives up on the feed for it.
	f = newTestFeed(0)
	for _, k := range []string{"M0", "M1", "M2", "M3"} {
		f.put(ctx, k, leaf, n)
	}
	go func() { put <- f.put(ctx, "M4", leaf, n) }()
	waitStalled()
	if _, ok := takeSoon(t, f, "Y", span{0, 1}); ok {
		t.Fatal("took Y from a stalled feed that does not hold it")
	}
	if _, ok := takeSoon(t, f, "M0", span{0, n}); !ok {
		t.Fatal("M0, held, not taken")
	}
	if !<-put {
		t.Fatal("the waiting put failed once there was room")
	}
	// A put waiting for room ends with its context.
	cctx, cancel := context.WithCancel(ctx)
	go func() { put <- f.put(cctx, "M5", leaf, n) }()
	waitStalled()
	cancel()
	if <-put {
		t.Fatal("a put whose context ended reports success")
	}
}

// TestFeedIdle: leaves nobody takes for the idle time go: a stalled
// stream gives up, an ended one's buffer is dropped.
func TestFeedIdle(t *testing.T) {
	ctx := context.Background()
	f := newTestFeed(0)
	f.idle = 50 * time.Millisecond
	leaf := bytes.Repeat([]byte{'x'}, feedBytes/2)
	n := uint64(len(leaf))
	f.put(ctx, "A", leaf, n)
	f.put(ctx, "B", leaf, n)
	start := time.Now()
	if f.put(ctx, "C", leaf, n) {
		t.Fatal("a put into a buffer nobody empties succeeded")
	}
	if d := time.Since(start); d < f.idle {
		t.Fatalf("the stalled put gave up after %v, before the idle time %v", d, f.idle)
	}
	if len(f.leaves) != 0 || f.bytes != 0 {
		t.Fatalf("after giving up: %d leaves, %d bytes held", len(f.leaves), f.bytes)
	}

	f = newTestFeed(0)
	f.idle = 50 * time.Millisecond
	f.put(ctx, "A", leaf, n)
	f.put(ctx, "B", leaf, n)
	f.idle = time.Second
	f.finish()
	took := make(chan bool)
	go func() {
		time.Sleep(20 * time.Millisecond) // well within the idle time
		_, ok := f.take(ctx, "A", span{0, n})
		took <- ok
	}()
	f.drain(ctx)
	if !<-took {
		t.Fatal("a leaf taken within the idle time of the stream's end was gone")
	}
	if len(f.leaves) != 0 || f.bytes != 0 {
		t.Fatalf("after the drain: %d leaves, %d bytes held", len(f.leaves), f.bytes)
	}
}
