package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/shard"
	"github.com/shoal-project/shoal/store"
)

// fanoutOpener is the shard.Opener of a sharded add: each shard fans out to
// the same peers and the local store, and its Result is kept.
type fanoutOpener struct {
	t       testing.TB
	from    *node
	peers   []peer.ID
	local   *store.Store
	limit   int64
	results []Result
}

func (o *fanoutOpener) Open(ctx context.Context, _ int) (shard.Writer, int64, error) {
	f, err := NewFanout(ctx, o.from.h, o.peers, o.local, o.limit)
	if err != nil {
		return nil, 0, err
	}
	return &recording{Fanout: f, o: o}, o.limit, nil
}

// recording keeps each shard's Result, as the caller that records
// allocations does.
type recording struct {
	*Fanout
	o *fanoutOpener
}

func (r *recording) Commit(ctx context.Context, info shard.Info, nodes []dag.Block) error {
	err := r.Fanout.Commit(ctx, info, nodes)
	r.o.results = append(r.o.results, r.Fanout.Result())
	return err
}

// TestFanoutStoresShardEverywhere cuts a few MiB of blocks of every CID
// kind into shards with deep list trees and fans each out to two peers and
// the local store: every store holds every shard, verified, with the same
// blocks in the same order.
func TestFanoutStoresShardEverywhere(t *testing.T) {
	nodes := newCluster(t, 3)
	ingester, a, b := nodes[0], nodes[1], nodes[2]
	rng := mrand.New(mrand.NewPCG(1, 2))
	blocks := testBlocks(t, rng, 60, 64<<10)

	o := &fanoutOpener{t: t, from: ingester, peers: ids(a, b), local: ingester.st, limit: 1 << 20}
	const maxLinks = 3 // deep list trees: the receiver walks several levels
	c := shard.NewCutter(o, maxLinks)
	ctx := context.Background()
	for _, blk := range blocks {
		if err := c.Put(ctx, blk); err != nil {
			t.Fatal(err)
		}
	}
	infos, err := c.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) < 3 {
		t.Fatalf("%d shards, want several", len(infos))
	}
	want := []peer.ID{a.h.ID(), b.h.ID(), ingester.h.ID()}
	next := 0
	for i, info := range infos {
		if got := o.results[i].Confirmed(); !slicesEqual(got, want) {
			t.Fatalf("shard %d confirmed by %v, want %v (%+v)", i, got, want, o.results[i])
		}
		shardBlocks := blocks[next : next+info.Blocks]
		next += info.Blocks
		_, listNodes := shardOf(t, shardBlocks, maxLinks)
		wantBlocks := append(append([]dag.Block(nil), shardBlocks...), listNodes...)
		key := info.CID.String()
		for _, n := range nodes {
			if err := n.st.Verify(ctx, key); err != nil {
				t.Fatalf("shard %d on %s: %v", i, n.h.ID(), err)
			}
			got := readShard(t, n.st, key)
			if len(got) != len(wantBlocks) {
				t.Fatalf("shard %d on %s: %d blocks, want %d", i, n.h.ID(), len(got), len(wantBlocks))
			}
			for j := range got {
				if !got[j].CID.Equals(wantBlocks[j].CID) || !bytes.Equal(got[j].Data, wantBlocks[j].Data) {
					t.Fatalf("shard %d on %s: block %d is %s, want %s", i, n.h.ID(), j, got[j].CID, wantBlocks[j].CID)
				}
			}
		}
	}
	if next != len(blocks) {
		t.Fatalf("shards hold %d blocks, want %d", next, len(blocks))
	}
	for _, n := range nodes {
		if tmp := tmpFiles(t, n); len(tmp) != 0 {
			t.Fatalf("%s left temporary files %v", n.h.ID(), tmp)
		}
	}
	if g := senderGoroutines(); g != 0 {
		t.Fatalf("%d sender goroutines outlive Commit", g)
	}
}

func slicesEqual(a, b []peer.ID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sendShard fans blocks out as one shard and returns Commit's error and
// the Result.
func sendShard(t testing.TB, f *Fanout, blocks []dag.Block) (error, Result) {
	t.Helper()
	ctx := context.Background()
	for _, b := range blocks {
		if err := f.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	info, nodes := shardOf(t, blocks, shard.MaxLinks)
	err := f.Commit(ctx, info, nodes)
	return err, f.Result()
}

// TestFanoutSameShardTwice: a peer that already holds a shard confirms it
// again (an identical commit is not an error).
func TestFanoutSameShardTwice(t *testing.T) {
	nodes := newCluster(t, 2)
	blocks := testBlocks(t, mrand.New(mrand.NewPCG(3, 4)), 10, 32<<10)
	for range 2 {
		f, err := NewFanout(context.Background(), nodes[0].h, ids(nodes[1]), nil, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if err, res := sendShard(t, f, blocks); err != nil || len(res.Confirmed()) != 1 {
			t.Fatalf("Commit = %v, result %+v", err, res)
		}
	}
	if n := len(nodes[1].st.Shards()); n != 1 {
		t.Fatalf("%d shards stored, want 1", n)
	}
}

// TestFanoutRefusedForRoom: a peer without room for the announced size
// refuses in NewFanout, before any block; the shard goes to the others,
// and Commit reports the refusal.
func TestFanoutRefusedForRoom(t *testing.T) {
	nodes := newCluster(t, 3)
	full, roomy := nodes[1], nodes[2]
	full.srv.Free = func() int64 { return 12 << 20 }
	roomy.srv.Free = func() int64 { return 1 << 30 }
	ctx := context.Background()

	f, err := NewFanout(ctx, nodes[0].h, ids(full, roomy), nil, 100<<20)
	if err != nil {
		t.Fatal(err)
	}
	res := f.Result()
	if res.Targets[0].Err == nil || !errors.Is(res.Targets[0].Err, ErrRefused) ||
		!strings.Contains(res.Targets[0].Err.Error(), "no room: 12.0 MiB free, the shard needs up to 100.0 MiB") {
		t.Fatalf("after NewFanout the full peer's result is %v, want a refusal for room", res.Targets[0].Err)
	}
	err, res = sendShard(t, f, testBlocks(t, mrand.New(mrand.NewPCG(5, 6)), 8, 16<<10))
	var fe *Error
	if !errors.As(err, &fe) || !errors.Is(err, ErrRefused) || errors.Is(err, ErrNoTarget) {
		t.Fatalf("Commit = %v, want an *Error with a refusal", err)
	}
	t.Logf("Commit: %v", err)
	if got := res.Confirmed(); len(got) != 1 || got[0] != roomy.h.ID() {
		t.Fatalf("confirmed by %v, want only %s", got, roomy.h.ID())
	}
	assertEmpty(t, full)

	// With nobody left, NewFanout fails and says why.
	_, err = NewFanout(ctx, nodes[0].h, ids(full), nil, 100<<20)
	if !errors.Is(err, ErrNoTarget) || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "no room") {
		t.Fatalf("NewFanout to a full peer = %v, want ErrNoTarget and the refusal", err)
	}
}

// TestFanoutReceiverKilled: one of two receivers dies mid-shard; Commit
// reports it failed and the other confirmed, and nothing of the shard stays
// on the dead one.
func TestFanoutReceiverKilled(t *testing.T) {
	nodes := newCluster(t, 3)
	alive, killed := nodes[1], nodes[2]
	blocks := testBlocks(t, mrand.New(mrand.NewPCG(7, 8)), 32, 128<<10)
	ctx := context.Background()
	f, err := NewFanout(ctx, nodes[0].h, ids(alive, killed), nil, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range blocks {
		if i == len(blocks)/2 {
			if err := killed.h.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Put(ctx, b); err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	// The failure shows in Result before Commit, so that a caller can
	// look for another peer early.
	for deadline := time.Now().Add(5 * time.Second); f.Result().Targets[1].Err == nil; {
		if time.Now().After(deadline) {
			t.Fatal("the dead peer's failure does not show in Result before Commit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	info, listNodes := shardOf(t, blocks, shard.MaxLinks)
	err = f.Commit(ctx, info, listNodes)
	var fe *Error
	if !errors.As(err, &fe) || errors.Is(err, ErrNoTarget) {
		t.Fatalf("Commit = %v, want an *Error naming the dead peer", err)
	}
	t.Logf("Commit: %v", err)
	res := f.Result()
	if got := res.Confirmed(); len(got) != 1 || got[0] != alive.h.ID() {
		t.Fatalf("confirmed by %v, want %s", got, alive.h.ID())
	}
	if failed := res.Failed(); len(failed) != 1 || failed[0].Peer != killed.h.ID() {
		t.Fatalf("failed: %+v, want %s", failed, killed.h.ID())
	}
	if err := alive.st.Verify(ctx, info.CID.String()); err != nil {
		t.Fatal(err)
	}
	assertEmpty(t, killed)
	if g := senderGoroutines(); g != 0 {
		t.Fatalf("%d sender goroutines outlive Commit", g)
	}
}

// TestFanoutNoTargetLeft: when its only receiver dies, Put fails with
// ErrNoTarget instead of sending the rest of the shard nowhere.
func TestFanoutNoTargetLeft(t *testing.T) {
	nodes := newCluster(t, 2)
	ctx := context.Background()
	f, err := NewFanout(ctx, nodes[0].h, ids(nodes[1]), nil, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	blocks := testBlocks(t, mrand.New(mrand.NewPCG(15, 16)), 40, 128<<10)
	var putErr error
	for i, b := range blocks {
		if i == 2 {
			if err := nodes[1].h.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if putErr = f.Put(ctx, b); putErr != nil {
			break
		}
	}
	if !errors.Is(putErr, ErrNoTarget) {
		t.Fatalf("Put after the only receiver died = %v, want ErrNoTarget", putErr)
	}
	f.Abort()
	if g := senderGoroutines(); g != 0 {
		t.Fatalf("%d sender goroutines outlive Abort", g)
	}
}

// TestFanoutAbort: an aborted shard leaves nothing on any target and no
// goroutine behind.
func TestFanoutAbort(t *testing.T) {
	nodes := newCluster(t, 3)
	ctx := context.Background()
	f, err := NewFanout(ctx, nodes[0].h, ids(nodes[1], nodes[2]), nodes[0].st, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range testBlocks(t, mrand.New(mrand.NewPCG(9, 10)), 16, 64<<10) {
		if err := f.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	f.Abort()
	if g := senderGoroutines(); g != 0 {
		t.Fatalf("%d sender goroutines outlive Abort", g)
	}
	f.Abort() // idempotent
	if err := f.Put(ctx, dag.Block{CID: testCID(t), Data: []byte("x")}); err == nil {
		t.Fatal("Put after Abort succeeded")
	}
	for _, n := range nodes {
		assertEmpty(t, n)
	}
}

func testCID(t testing.TB) cid.Cid { return sum(t, cid.Raw, []byte("x"), mh.SHA2_256, -1) }

// TestFanoutOverAnnouncedSize: the sender refuses to send more than it
// announced, rather than have every receiver refuse.
func TestFanoutOverAnnouncedSize(t *testing.T) {
	nodes := newCluster(t, 2)
	f, err := NewFanout(context.Background(), nodes[0].h, ids(nodes[1]), nil, 100<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	var putErr error
	for _, b := range testBlocks(t, mrand.New(mrand.NewPCG(11, 12)), 8, 32<<10) {
		if putErr = f.Put(context.Background(), b); putErr != nil {
			break
		}
	}
	if putErr == nil || !strings.Contains(putErr.Error(), "exceeds the 102400 bytes announced") {
		t.Fatalf("Put = %v, want the announced size exceeded", putErr)
	}
}

// TestReceiverDiskFull: a receiver whose store cannot write (here: the
// file size limit, which makes writes fail with EFBIG as a full disk
// fails them with ENOSPC) answers the error and keeps nothing.
func TestReceiverDiskFull(t *testing.T) {
	nodes := newCluster(t, 2)
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	signal.Ignore(syscall.SIGXFSZ)
	defer signal.Reset(syscall.SIGXFSZ)
	lim := old
	lim.Cur = 1 << 20
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Fatal(err)
		}
	}()
	f, err := NewFanout(context.Background(), nodes[0].h, ids(nodes[1]), nil, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	ctx := context.Background()
	blocks := testBlocks(t, mrand.New(mrand.NewPCG(13, 14)), 40, 256<<10)
	var putErr error
	for _, b := range blocks {
		if putErr = f.Put(ctx, b); putErr != nil {
			break
		}
	}
	if putErr == nil {
		info, listNodes := shardOf(t, blocks, shard.MaxLinks)
		putErr = f.Commit(ctx, info, listNodes)
	}
	if !errors.Is(putErr, ErrRefused) || !strings.Contains(putErr.Error(), "file too large") {
		t.Fatalf("sending to a receiver that cannot write = %v, want its refusal naming the write error", putErr)
	}
	t.Logf("sending to a receiver that cannot write: %v", putErr)
	assertEmpty(t, nodes[1])
}

// TestMemoryBoundedBySlowReceiver: putting 16 MiB or 64 MiB to a receiver
// that reads at 100 MB/s keeps the sender's live heap at the queue bound:
// Put waits for the slow receiver instead of buffering.
func TestMemoryBoundedBySlowReceiver(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 80 MiB")
	}
	nodes := newCluster(t, 2)
	recv := nodes[1]
	recv.h.Handle(Protocol, func(s network.Stream) { recv.srv.Handle(slowStream{Stream: s, rate: 100e6}) })
	peak := func(total int) uint64 {
		const size = 256 << 10
		f, err := NewFanout(context.Background(), nodes[0].h, ids(recv), nil, int64(total)+1<<20)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Abort()
		data := make([]byte, size)
		var maxHeap uint64
		var cids []cid.Cid
		for i := range total / size {
			data[0], data[1], data[2] = byte(i), byte(i>>8), byte(total>>20)
			c := sum(t, cid.Raw, data, mh.SHA2_256, -1)
			cids = append(cids, c)
			if err := f.Put(context.Background(), dag.Block{CID: c, Data: data}); err != nil {
				t.Fatal(err)
			}
			if i%16 == 15 {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				maxHeap = max(maxHeap, ms.HeapAlloc)
			}
		}
		root, listNodes, err := shard.BuildList(shard.KindShard, cids, shard.MaxLinks)
		if err != nil {
			t.Fatal(err)
		}
		info := shard.Info{CID: root, Blocks: len(cids)}
		for range cids {
			info.Size += sectionCost(cids[0].ByteLen(), size)
		}
		for _, n := range listNodes {
			info.Size += sectionCost(n.CID.ByteLen(), len(n.Data))
		}
		if err := f.Commit(context.Background(), info, listNodes); err != nil {
			t.Fatal(err)
		}
		return maxHeap
	}
	small, large := peak(16<<20), peak(64<<20)
	t.Logf("live heap: %d KiB sending 16 MiB, %d KiB sending 64 MiB", small>>10, large>>10)
	if large > small+4<<20 {
		t.Fatalf("live heap grew from %d to %d bytes with the shard", small, large)
	}
	// Both ends live in this process: the sender's frames, the receiver's
	// yamux window and its store.Writer buffers.
	if bound := uint64(48 << 20); large > bound {
		t.Fatalf("live heap %d bytes, above %d", large, bound)
	}
}

// TestClusterDAGOfManyShards: the cluster-DAG of a file of thousands of
// shards (a shard with no blocks whose list names their roots) is stored.
// Its list was bounded as a shard's of 0 blocks (4,800 bytes), which
// refused any file of more than ~100 shards (16 GiB at 100 MiB shards).
func TestClusterDAGOfManyShards(t *testing.T) {
	nodes := newCluster(t, 2)
	for _, n := range []int{1, 200, 20000} {
		var roots []cid.Cid
		for i := range n {
			roots = append(roots, sum(t, cid.DagCBOR, []byte(fmt.Sprintf("shard %d of %d", i, n)), mh.SHA2_256, -1))
		}
		root, list, err := shard.BuildList(shard.KindCluster, roots, shard.MaxLinks)
		if err != nil {
			t.Fatal(err)
		}
		info := shard.Info{CID: root}
		for _, l := range list {
			info.Size += sectionCost(l.CID.ByteLen(), len(l.Data))
		}
		f, err := NewFanout(context.Background(), nodes[0].h, ids(nodes[1]), nil, info.Size+1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Commit(context.Background(), info, list); err != nil {
			t.Fatalf("%d shards: %v", n, err)
		}
		f.Abort()
		if !nodes[1].st.HasShard(root.String()) {
			t.Errorf("%d shards: the receiver does not hold the cluster-DAG %s", n, root)
		}
	}
}
