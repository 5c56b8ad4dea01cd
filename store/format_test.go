package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/blockstore"
	"github.com/ipld/go-car/v2/index"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
)

// compatBlocks covers CID versions, codecs, hash functions, identity CIDs
// and a duplicate.
func compatBlocks(t testing.TB) []dag.Block {
	dup := blk(t, cid.Raw, mh.SHA2_256, seeded(10, 70000))
	return []dag.Block{
		blkV0(t, seeded(11, 5000)),
		dup,
		blk(t, cid.Raw, mh.BLAKE3, seeded(12, 262144)),
		blk(t, cid.DagProtobuf, mh.SHA2_512, seeded(13, 999)),
		blk(t, cid.Raw, mh.IDENTITY, []byte("inline block")),
		dup,
		blk(t, cid.Raw, mh.SHA2_256, nil),
	}
}

// TestGoCarReads checks that go-car/v2, which Kubo's `ipfs dag import`
// uses, reads our shard files: header, roots, every block through our
// index, and an index byte-identical to the one go-car generates.
func TestGoCarReads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir)
	s.bufSize = 16384
	blocks := compatBlocks(t)
	putShard(t, s, "compat", blocks)
	p := shardPath(dir, "compat")

	t.Run("blockstore", func(t *testing.T) {
		for _, storeID := range []bool{false, true} {
			bs, err := blockstore.OpenReadOnly(p, car.StoreIdentityCIDs(storeID))
			if err != nil {
				t.Fatal(err)
			}
			roots, err := bs.Roots()
			if err != nil || len(roots) != 1 || !roots[0].Equals(blocks[0].CID) {
				t.Errorf("Roots() = %v, %v", roots, err)
			}
			for _, b := range blocks {
				got, err := bs.Get(ctx, b.CID)
				if err != nil {
					t.Errorf("StoreIdentityCIDs(%v): Get(%s): %v", storeID, b.CID, err)
					continue
				}
				if !bytes.Equal(got.RawData(), b.Data) {
					t.Errorf("Get(%s): data differs", b.CID)
				}
			}
			keys, err := bs.AllKeysChan(ctx)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for range keys {
				n++
			}
			if n != len(blocks) {
				t.Errorf("AllKeysChan gave %d keys, want %d", n, len(blocks))
			}
			bs.Close()
		}
	})

	t.Run("reader", func(t *testing.T) {
		r, err := car.OpenReader(p)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if r.Version != 2 || !r.Header.Characteristics.IsFullyIndexed() || r.Header.DataOffset+r.Header.DataSize != headerPage+uint64(blocksLen(blocks)) {
			t.Errorf("header %+v", r.Header)
		}
		stats, err := r.Inspect(true)
		if err != nil {
			t.Fatal(err)
		}
		if stats.BlockCount != uint64(len(blocks)) || !stats.RootsPresent || stats.IndexCodec != codecMhSorted {
			t.Errorf("Inspect: %d blocks, roots present %v, index codec %v", stats.BlockCount, stats.RootsPresent, stats.IndexCodec)
		}

		dr, err := r.DataReader()
		if err != nil {
			t.Fatal(err)
		}
		idx, err := car.GenerateIndex(dr, car.StoreIdentityCIDs(true), car.UseIndexCodec(codecMhSorted))
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if _, err := index.WriteTo(idx, &want); err != nil {
			t.Fatal(err)
		}
		ir, err := r.IndexReader()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(ir)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("index: %d bytes, go-car regenerates %d different ones", len(got), want.Len())
		}
	})
}

func blocksLen(blocks []dag.Block) int {
	n := 0
	for _, b := range blocks {
		l := b.CID.ByteLen() + len(b.Data)
		n += varintLen(uint64(l)) + l
	}
	return n
}

// TestGolden pins the exact bytes of a small shard, so that the format
// cannot drift silently. If this fails after an intended change, bump
// FormatVersion, describe the change in doc.go and update the digest.
func TestGolden(t *testing.T) {
	const (
		wantSize   = 4484
		wantSHA256 = "f78779988267d8b4ce32246b54692a0b8a26135b1021e650e597c218a78ca857"
	)
	dir := t.TempDir()
	s := openT(t, dir)
	blocks := []dag.Block{
		blkV0(t, []byte("shoal golden root")),
		blk(t, cid.Raw, mh.SHA2_256, []byte("shoal golden raw leaf")),
		blk(t, cid.Raw, mh.BLAKE3, []byte("shoal golden blake3 leaf")),
		blk(t, cid.Raw, mh.IDENTITY, []byte("id")),
	}
	info := putShard(t, s, "golden", blocks)
	b, err := os.ReadFile(shardPath(dir, "golden"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != wantSHA256 || len(b) != wantSize || info.Size != wantSize {
		t.Errorf("golden shard: %d bytes, sha256 %s; want %d bytes, %s", len(b), got, wantSize, wantSHA256)
	}
	// The header page as documented in doc.go.
	if !bytes.Equal(b[:car.PragmaSize], car.Pragma) || int(b[headerPage]) != blocks[0].CID.ByteLen()+len(blocks[0].Data) {
		t.Errorf("pragma %x, first section varint %x", b[:car.PragmaSize], b[headerPage])
	}
}

// TestCrashedWriter kills a process in the middle of writing a shard, while
// it holds the store: the kernel drops its lock, and the next Open removes
// its temporary file and sees only the shard it had committed.
func TestCrashedWriter(t *testing.T) {
	if dir := os.Getenv("SHOAL_STORE_CRASH_DIR"); dir != "" {
		crashChild(t, dir)
		return
	}
	if testing.Short() {
		t.Skip("starts a process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashedWriter$")
	cmd.Env = append(os.Environ(), "SHOAL_STORE_CRASH_DIR="+dir)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q, %v", line, err)
	}

	if _, err := Open(dir); !errors.Is(err, ErrLocked) {
		t.Errorf("Open while another process holds the store: %v, want ErrLocked", err)
	}
	tmp := tmpEntries(t, dir)
	if len(tmp) != 1 {
		t.Errorf("tmp holds %v, want the writer's file", tmp)
	}
	cmd.Process.Kill()
	cmd.Wait()

	s := openT(t, dir)
	if got := tmpEntries(t, dir); len(got) != 0 {
		t.Errorf("tmp holds %v after reopen", got)
	}
	if got := s.Shards(); len(got) != 1 || got[0].Key != "done" {
		t.Errorf("Shards() = %+v, want the committed one only", got)
	}
	done, abandoned := crashBlocks(t)
	checkBlocks(t, s, done)
	for _, b := range abandoned {
		if s.Has(b.CID) {
			t.Errorf("block %s of the abandoned writer is present", b.CID)
		}
	}
}

func crashBlocks(t testing.TB) (done, abandoned []dag.Block) {
	done = []dag.Block{blk(t, cid.Raw, mh.SHA2_256, []byte("committed"))}
	for i := range 3 {
		abandoned = append(abandoned, blk(t, cid.Raw, mh.SHA2_256, seeded(uint64(i), 1<<20)))
	}
	return done, abandoned
}

func crashChild(t *testing.T, dir string) {
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.bufSize = 1 << 20 // so that whole buffers reach the disk
	done, abandoned := crashBlocks(t)
	putShard(t, s, "done", done)
	w, err := s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range abandoned {
		if err := w.Put(b); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("ready")
	io.ReadAll(os.Stdin) // until killed
	os.Exit(0)
}

// TestDirectFallback makes an O_DIRECT write fail with EINVAL, as some
// filesystems do, and checks the writer carries on with plain writes.
func TestDirectFallback(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir())
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if !w.direct {
		t.Skip("the filesystem of TempDir refuses O_DIRECT already")
	}
	misaligned := make([]byte, headerPage+1)[1:]
	if err := w.writeAt(misaligned, headerPage); err != nil {
		t.Fatalf("writeAt: %v", err)
	}
	if w.direct {
		t.Fatal("still in O_DIRECT mode after EINVAL")
	}
	blocks := []dag.Block{blk(t, cid.Raw, mh.SHA2_256, seeded(1, 10000))}
	w.Put(blocks[0])
	if _, err := w.Commit(ctx, "k", blocks[0].CID); err != nil {
		t.Fatal(err)
	}
	checkBlocks(t, s, blocks)
}

// TestTmpfs runs a round trip on tmpfs, which refuses O_DIRECT on older
// kernels.
func TestTmpfs(t *testing.T) {
	base := "/dev/shm"
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		t.Skip("no /dev/shm")
	}
	dir, err := os.MkdirTemp(base, "shoal-store-test-")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := openT(t, filepath.Join(dir, "s"))
	s.bufSize = 8192
	blocks := compatBlocks(t)
	putShard(t, s, "k", blocks)
	checkBlocks(t, s, blocks)
}

// TestWriterMemoryBounded writes 40 MiB through a Writer and checks that
// Put allocates nothing in proportion: the data goes through the two
// buffers made by Create.
func TestWriterMemoryBounded(t *testing.T) {
	s := openT(t, t.TempDir())
	w, err := s.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	const nblocks = 160
	data := seeded(1, 256<<10)
	cids := make([]cid.Cid, nblocks)
	for i := range cids {
		cids[i] = blk(t, cid.Raw, mh.SHA2_256, []byte(fmt.Sprint(i))).CID // Put does not re-hash
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for _, c := range cids {
		if err := w.Put(dag.Block{CID: c, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&m1)
	if got := m1.TotalAlloc - m0.TotalAlloc; got > 256<<10 {
		t.Errorf("Put of %d MiB allocated %d bytes", nblocks/4, got)
	}
}

// TestIndexMemory measures the in-memory index cost per block quoted in
// doc.go.
func TestIndexMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	s := openT(t, t.TempDir())
	const n = 100000
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	recs := make([]rec, n)
	for i := range recs {
		h, _ := mh.Sum([]byte(fmt.Sprint(i)), mh.SHA2_256, -1)
		recs[i] = rec{mh: string(h), off: int64(i), n: 1}
	}
	sh := &shard{info: ShardInfo{Key: "m"}}
	s.mu.Lock()
	s.add(sh, recs)
	s.mu.Unlock()
	recs = nil
	runtime.GC()
	runtime.ReadMemStats(&m1)
	per := float64(m1.HeapAlloc-m0.HeapAlloc) / n
	t.Logf("in-memory index: %.0f bytes per block (sha2-256)", per)
	if per > 160 {
		t.Errorf("%.0f bytes per block, doc.go promises at most ~150", per)
	}
}
