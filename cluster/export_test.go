package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/dag"
)

// carFile is a CAR file read back: its roots and its blocks by CID, each
// checked against its CID.
type carFile struct {
	roots  []cid.Cid
	blocks map[cid.Cid][]byte
	n      int // sections, duplicates counted
}

func readCAR(t *testing.T, r io.Reader) carFile {
	t.Helper()
	br, err := car.NewBlockReader(r)
	if err != nil {
		t.Fatalf("read the CAR header: %v", err)
	}
	if br.Version != 1 {
		t.Fatalf("CAR version %d, want 1", br.Version)
	}
	cf := carFile{roots: br.Roots, blocks: map[cid.Cid][]byte{}}
	for {
		b, err := br.Next()
		if errors.Is(err, io.EOF) {
			return cf
		}
		if err != nil {
			t.Fatalf("read CAR section %d: %v", cf.n, err)
		}
		if err := dag.Verify(b.Cid(), b.RawData()); err != nil {
			t.Fatalf("CAR block %s: %v", b.Cid(), err)
		}
		cf.blocks[b.Cid()] = b.RawData()
		cf.n++
	}
}

// fileOf rebuilds the bytes of the UnixFS file root from the CAR's blocks
// by walking its links, and checks that the CAR holds exactly the blocks
// the walk reaches.
func (cf carFile) fileOf(t *testing.T, root cid.Cid) []byte {
	t.Helper()
	var out []byte
	reached := map[cid.Cid]bool{}
	var walk func(c cid.Cid)
	walk = func(c cid.Cid) {
		reached[c] = true
		data, ok := cf.blocks[c]
		if !ok {
			t.Fatalf("the CAR lacks block %s", c)
		}
		if c.Type() == cid.Raw {
			out = append(out, data...)
			return
		}
		nd, err := mdag.DecodeProtobuf(data)
		if err != nil {
			t.Fatalf("block %s: %v", c, err)
		}
		fsn, err := unixfs.FSNodeFromBytes(nd.Data())
		if err != nil {
			t.Fatalf("block %s: %v", c, err)
		}
		out = append(out, fsn.Data()...)
		for _, l := range nd.Links() {
			walk(l.Cid)
		}
	}
	walk(root)
	for c := range cf.blocks {
		if !reached[c] {
			t.Fatalf("the CAR holds block %s, which the DAG of %s does not link", c, root)
		}
	}
	return out
}

// TestExport: a sharded pin and a plain pin, exported through a peer that
// holds only part of them, are CARv1 files rooted at the pin whose blocks
// are exactly the DAG's and give back the file's bytes. A root that is
// not pinned is ErrNotFound, a shard's CID is refused naming its root.
func TestExport(t *testing.T) {
	peers := newTestPeers(t, 3)
	ctx := context.Background()
	data := seeded("export", 5<<20+777)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "big", Chunker: "size-65536",
		Shard: true, ShardSize: 1 << 20, RMin: 1, RMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	small := seeded("export-small", 300_000)
	plain, err := backend{peers[0]}.Add(ctx, bytes.NewReader(small), api.AddParams{Name: "small", Chunker: "size-65536", RMin: 1, RMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		root string
		data []byte
	}{{"sharded", res.CID, data}, {"plain", plain.CID, small}} {
		t.Run(tt.name, func(t *testing.T) {
			for i, p := range peers {
				var w bytes.Buffer
				waitFor(t, 5*time.Second, func() error { // a follower applies the pin a heartbeat later
					w.Reset()
					return (backend{p}).Export(ctx, tt.root, &w)
				})
				cf := readCAR(t, &w)
				root, _ := cid.Decode(tt.root)
				if len(cf.roots) != 1 || !cf.roots[0].Equals(root) {
					t.Fatalf("peer %d: CAR roots %v, want [%s]", i, cf.roots, root)
				}
				if got := cf.fileOf(t, root); !bytes.Equal(got, tt.data) {
					t.Fatalf("peer %d: the CAR's DAG holds %d bytes that differ from the %d added", i, len(got), len(tt.data))
				}
			}
		})
	}

	b := backend{peers[1]}
	if err := b.Export(ctx, helloCIDString, io.Discard); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("export of an unpinned root: %v", err)
	}
	if err := b.Export(ctx, res.Shards[0].CID, io.Discard); !errors.Is(err, api.ErrBadRequest) ||
		err.Error() != fmt.Sprintf("bad request: %s is a shard of %s; export %s instead", res.Shards[0].CID, res.CID, res.CID) {
		t.Fatalf("export of a shard: %v", err)
	}
}

const helloCIDString = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"

// TestExportMemory: exporting a sharded file holds a buffer, a block and
// what the stream's yamux window (4 MiB, p2p's streamWindow) buffers while
// this slow writer lags, not the file: the live heap grows by far less
// than the file's size.
func TestExportMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	peers := newTestPeers(t, 2)
	ctx := context.Background()
	data := seeded("export-memory", 32<<20)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "big", Shard: true,
		ShardSize: 4 << 20, RMin: 1, RMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	data = nil
	root, _ := cid.Decode(res.CID)
	waitFor(t, 5*time.Second, func() error { // the follower applies the pin a heartbeat later
		if _, ok := peers[1].cons.State().Get(root); !ok {
			return errors.New("not pinned on peer 1 yet")
		}
		return nil
	})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w := &countingHeapWriter{base: ms.HeapAlloc}
	if err := (backend{peers[1]}).Export(ctx, res.CID, w); err != nil {
		t.Fatal(err)
	}
	if w.n < 32<<20 {
		t.Fatalf("exported %d bytes of a 32 MiB file", w.n)
	}
	growth := int64(w.peak) - int64(w.base)
	t.Logf("live heap grew by %.1f MiB while exporting %d MiB", float64(growth)/(1<<20), w.n>>20)
	if growth > 12<<20 {
		t.Fatalf("live heap grew by %d bytes while exporting a 32 MiB file; the export is not streamed", growth)
	}
}

// countingHeapWriter discards what it is given, counting it, and samples
// the live heap at every write.
type countingHeapWriter struct {
	n          int64
	base, peak uint64
}

func (w *countingHeapWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.peak = max(w.peak, ms.HeapAlloc)
	return len(p), nil
}
