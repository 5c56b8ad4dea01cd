package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ingest"
	"github.com/shoal-project/shoal/shard"
)

// memShards is a shard.Opener that keeps each shard's blocks in memory, in
// stream order, as a holder stores them.
type memShards struct {
	limit  int64
	shards []memShard
}

type memShard struct {
	info   shard.Info
	blocks []dag.Block
	nodes  []dag.Block
}

type memWriter struct {
	o      *memShards
	blocks []dag.Block
}

func (o *memShards) Open(context.Context, int) (shard.Writer, int64, error) {
	return &memWriter{o: o}, o.limit, nil
}

func (w *memWriter) Put(_ context.Context, b dag.Block) error {
	w.blocks = append(w.blocks, dag.Block{CID: b.CID, Data: slices.Clone(b.Data), FileBytes: b.FileBytes})
	return nil
}

func (w *memWriter) Commit(_ context.Context, info shard.Info, nodes []dag.Block) error {
	w.o.shards = append(w.o.shards, memShard{info: info, blocks: w.blocks, nodes: nodes})
	return nil
}

func (w *memWriter) Abort() {}

// record is what consensus records of the shard.
func (m memShard) record() consensus.Shard {
	return consensus.Shard{CID: m.info.CID, Size: uint64(m.info.Size), Blocks: uint64(m.info.Blocks),
		Offset: m.info.Offset, Length: m.info.Length}
}

// open reads the shard as a holder's copy: its list from its nodes, its
// blocks in stored order, each checked against its CID.
func (m memShard) open(t *testing.T) *shardCopy {
	t.Helper()
	nodes := map[string][]byte{}
	for _, n := range m.nodes {
		nodes[n.CID.KeyString()] = n.Data
	}
	items, err := shard.ReadList(m.info.CID, shard.KindShard, func(c cid.Cid) ([]byte, error) {
		if d, ok := nodes[c.KeyString()]; ok {
			return d, nil
		}
		return nil, errors.New("no such node")
	})
	if err != nil {
		t.Fatal(err)
	}
	h := newHashAhead(sliceSource(m.blocks, nil))
	t.Cleanup(h.stop)
	return &shardCopy{items: items, next: h.next, close: func() {}}
}

// TestCopyShardLayouts: whatever the layout, leaf kind and tree depth,
// reading any range of a file shard by shard from its block streams gives
// exactly those bytes of the file; repeated chunks (one block listed many
// times) included.
func TestCopyShardLayouts(t *testing.T) {
	zeros := make([]byte, 150_000)
	random := seeded("layouts", 150_000)
	tests := []struct {
		name     string
		opts     dag.Options
		maxLinks int
		data     []byte
		limit    int64
	}{
		{"balanced", dag.Options{Chunker: "size-4096"}, 0, random, 40 << 10},
		{"balanced deep", dag.Options{Chunker: "size-4096"}, 3, random, 40 << 10},
		{"trickle", dag.Options{Chunker: "size-4096", Trickle: true}, 3, random, 40 << 10},
		{"raw leaves cidv1", dag.Options{Chunker: "size-4096", CIDVersion: 1, CIDVersionSet: true}, 4, random, 40 << 10},
		{"repeated chunks", dag.Options{Chunker: "size-4096"}, 4, zeros, 40 << 10},
		{"inline leaves", dag.Options{Chunker: "size-32", RawLeaves: true, RawLeavesSet: true, Inline: true}, 0, random[:5000], 8 << 10},
		{"one leaf", dag.Options{Chunker: "size-262144"}, 0, random[:1000], 40 << 10},
		{"empty", dag.Options{}, 0, nil, 40 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.opts.Params()
			if err != nil {
				t.Fatal(err)
			}
			if tt.maxLinks > 0 {
				p.MaxLinks = tt.maxLinks
			}
			in, err := ingest.New(ingest.Config{Params: p})
			if err != nil {
				t.Fatal(err)
			}
			mem := &memShards{limit: tt.limit}
			cut := shard.NewCutter(mem, 16)
			if _, err := in.File(context.Background(), bytes.NewReader(tt.data), cut); err != nil {
				t.Fatal(err)
			}
			if _, err := cut.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(tt.data) > 20000 && len(mem.shards) < 3 {
				t.Fatalf("%d shards; the test wants several", len(mem.shards))
			}
			read := func(from, to uint64) []byte {
				var out bytes.Buffer
				for _, m := range mem.shards {
					sh := m.record()
					lo, hi := max(from, sh.Offset), min(to, sh.Offset+sh.Length)
					if lo >= hi {
						continue
					}
					n, err := copyShard(m.open(t), sh, lo, hi, &out)
					if err != nil || n != hi-lo {
						t.Fatalf("[%d,%d) shard %d: wrote %d of %d: %v", from, to, m.info.Index, n, hi-lo, err)
					}
				}
				return out.Bytes()
			}
			size := uint64(len(tt.data))
			for _, r := range [][2]uint64{{0, size}, {0, 0}, {size, size}, {size / 3, size / 3 * 2}, {size / 2, size/2 + 1}, {1, size - 1}} {
				if r[1] < r[0] || r[1] > size {
					continue
				}
				if got := read(r[0], r[1]); !bytes.Equal(got, tt.data[r[0]:r[1]]) {
					t.Fatalf("[%d,%d): %d bytes differ from the file's", r[0], r[1], len(got))
				}
			}
			// Every shard boundary, a few bytes either side.
			for _, m := range mem.shards {
				b := m.info.Offset
				from, to := max(b, 3)-3, min(b+3, size)
				if got := read(from, to); !bytes.Equal(got, tt.data[from:to]) {
					t.Fatalf("[%d,%d) around shard %d: wrong bytes", from, to, m.info.Index)
				}
			}
		})
	}
}

// TestCopyShardRefusesSubstitutes: a holder's copy whose blocks differ from
// the shard's list (swapped, or another file's), or whose leaves do not add
// up to the recorded length, fails instead of giving wrong bytes.
func TestCopyShardRefusesSubstitutes(t *testing.T) {
	p, _ := dag.Options{Chunker: "size-4096"}.Params()
	in, _ := ingest.New(ingest.Config{Params: p})
	mem := &memShards{limit: 1 << 20}
	cut := shard.NewCutter(mem, 16)
	data := seeded("substitutes", 50_000)
	if _, err := in.File(context.Background(), bytes.NewReader(data), cut); err != nil {
		t.Fatal(err)
	}
	if _, err := cut.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	m := mem.shards[0]
	tests := []struct {
		name   string
		change func(m *memShard, sh *consensus.Shard)
		want   string
	}{
		{"swapped blocks", func(m *memShard, _ *consensus.Shard) {
			m.blocks = slices.Clone(m.blocks)
			m.blocks[1], m.blocks[2] = m.blocks[2], m.blocks[1]
		}, "but the shard's list names"},
		{"corrupt block", func(m *memShard, _ *consensus.Shard) {
			m.blocks = slices.Clone(m.blocks)
			m.blocks[3].Data = slices.Clone(m.blocks[3].Data)
			m.blocks[3].Data[40] ^= 1
		}, "is corrupt"},
		{"missing blocks", func(m *memShard, _ *consensus.Shard) { m.blocks = m.blocks[:5] }, "the shard ended after 5 of"},
		{"wrong length", func(_ *memShard, sh *consensus.Shard) { sh.Length++ }, "its leaves hold 50000 bytes, the pin records 50001"},
		{"wrong count", func(_ *memShard, sh *consensus.Shard) { sh.Blocks++ }, "its list names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := m
			sh := m.record()
			tt.change(&m, &sh)
			var out bytes.Buffer
			_, err := copyShard(m.open(t), sh, 0, sh.Length, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if !bytes.HasPrefix(data, out.Bytes()) {
				t.Fatal("wrote bytes that are not the file's")
			}
		})
	}
}

// catBuf is an api.CatWriter into memory.
type catBuf struct {
	bytes.Buffer
	length int64
	set    int
}

func (c *catBuf) SetLength(n int64) {
	if c.Len() > 0 {
		panic("SetLength after Write")
	}
	c.length = n
	c.set++
}

func cat(p *Peer, root string, offset, length int64) ([]byte, error) {
	var buf catBuf
	err := backend{p}.Cat(context.Background(), root, offset, length, &buf)
	if err == nil && (buf.set != 1 || buf.length != int64(buf.Len())) {
		return nil, fmt.Errorf("announced %d bytes (%d times), wrote %d", buf.length, buf.set, buf.Len())
	}
	return buf.Bytes(), err
}

// flipByte damages the shard key on p's disk at offset off of its file.
func flipByte(t *testing.T, p *Peer, key string, off int64) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(p.dir, config.StoreDir, "shards", key+".car"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x55
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestCat: a sharded file and a plain one read back from every peer, whole
// and in ranges, through the backend and over HTTP; with a corrupt copy and
// with a holder of every shard down; and failing clearly, never with wrong
// bytes, when no good copy of a shard is left.
func TestCat(t *testing.T) {
	logs := &logCapture{t: t}
	peers := newTestPeersOpts(t, 3, nil, func(i int, o *Options) { o.Logger = logs.logger(i) })
	ctx := context.Background()
	data := seeded("cat", 3<<20+4321)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "big", Chunker: "size-65536",
		Shard: true, ShardSize: 1 << 20, RMin: 2, RMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	small := seeded("cat-plain", 300_000)
	plain, err := backend{peers[0]}.Add(ctx, bytes.NewReader(small), api.AddParams{Name: "small", Chunker: "size-65536", RMin: 1, RMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	if plain.Pin.Allocations[0] != peers[0].ID().String() {
		t.Fatalf("plain pin on %v, want the adding peer", plain.Pin.Allocations)
	}
	for _, root := range []string{res.CID, plain.CID} {
		c, _ := cid.Decode(root)
		waitFor(t, 10*time.Second, func() error {
			for _, p := range peers {
				if _, ok := p.cons.State().Get(c); !ok {
					return fmt.Errorf("%s has not applied %s", p.cfg.PeerName, c)
				}
			}
			return nil
		})
	}
	size := int64(len(data))
	b1 := int64(res.Shards[1].Offset)
	b2 := int64(res.Shards[2].Offset)

	t.Run("whole file from every peer", func(t *testing.T) {
		for _, p := range peers {
			got, err := cat(p, res.CID, 0, -1)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: %d bytes, equal %v: %v", p.cfg.PeerName, len(got), bytes.Equal(got, data), err)
			}
		}
	})

	t.Run("ranges", func(t *testing.T) {
		tests := []struct{ offset, length int64 }{
			{0, 0}, {0, 1}, {0, 100}, {b1 - 5, 10}, {b1, 1}, {b1 - 1, b2 - b1 + 2}, {12345, 2 << 20},
			{size - 7, -1}, {size - 7, 100}, {size - 1, 1}, {size, -1}, {size, 0}, {b2, 0},
		}
		for _, tt := range tests {
			end := size
			if tt.length >= 0 {
				end = min(size, tt.offset+tt.length)
			}
			for _, p := range []*Peer{peers[1], peers[2]} {
				got, err := cat(p, res.CID, tt.offset, tt.length)
				if err != nil || !bytes.Equal(got, data[tt.offset:end]) {
					t.Fatalf("%s: offset %d length %d: %d bytes: %v", p.cfg.PeerName, tt.offset, tt.length, len(got), err)
				}
			}
		}
	})

	t.Run("plain pin from its holder and from the others", func(t *testing.T) {
		for _, p := range peers {
			got, err := cat(p, plain.CID, 0, -1)
			if err != nil || !bytes.Equal(got, small) {
				t.Fatalf("%s: %d bytes: %v", p.cfg.PeerName, len(got), err)
			}
			got, err = cat(p, plain.CID, 65530, 70000)
			if err != nil || !bytes.Equal(got, small[65530:65530+70000]) {
				t.Fatalf("%s: range: %d bytes: %v", p.cfg.PeerName, len(got), err)
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		unknown := "QmdSaj6ufqXz4byUKYGoeZ2gohe4K7H74eeqsWjw49vkUQ"
		tests := []struct {
			root           string
			offset, length int64
			want           error
			msg            string
		}{
			{unknown, 0, -1, api.ErrNotFound, "is not pinned"},
			{res.Shards[0].CID, 0, -1, api.ErrBadRequest, "is a shard of " + res.CID},
			{res.CID, size + 1, -1, api.ErrBadRequest, fmt.Sprintf("offset %d is beyond the end of %s (%d bytes)", size+1, res.CID, size)},
			{plain.CID, int64(len(small)) + 1, 0, api.ErrBadRequest, "is beyond the end"},
			{res.CID, -1, -1, api.ErrBadRequest, "the offset must be >= 0"},
			{res.CID, 0, -2, api.ErrBadRequest, "the offset must be >= 0"},
			{"not-a-cid", 0, -1, api.ErrBadRequest, "is not a CID"},
		}
		for _, tt := range tests {
			got, err := cat(peers[1], tt.root, tt.offset, tt.length)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) || len(got) > 0 {
				t.Errorf("%s offset %d length %d: error %v, want %v %q", tt.root, tt.offset, tt.length, err, tt.want, tt.msg)
			}
		}
	})

	t.Run("over HTTP", func(t *testing.T) {
		c, err := client.New(peers[2].APIAddr())
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.Cat(ctx, res.CID, 100, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || r.Length() != 1<<20 || !bytes.Equal(got, data[100:100+1<<20]) {
			t.Fatalf("%d bytes, announced %d: %v", len(got), r.Length(), err)
		}
		if _, err := c.Cat(ctx, "QmdSaj6ufqXz4byUKYGoeZ2gohe4K7H74eeqsWjw49vkUQ", 0, -1); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("unknown root: %v", err)
		}
		for _, q := range []string{"offset=-1", "length=-2", "offset=x", "length=1.5", "offset=" + fmt.Sprint(size+1), "bogus=1"} {
			resp, err := http.Get("http://" + peers[2].APIAddr() + "/cat/" + res.CID + "?" + q)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: status %d, want 400", q, resp.StatusCode)
			}
		}
		resp, err := http.Head("http://" + peers[2].APIAddr() + "/cat/" + url.PathEscape(res.CID))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get(api.HeaderLength) != fmt.Sprint(size) {
			t.Fatalf("HEAD: %s, length %q", resp.Status, resp.Header.Get(api.HeaderLength))
		}
	})

	// Shard 0 damaged on its first holder, midway through the shard: that
	// holder's own read and the others' go on from the other holder.
	sh0 := res.Shards[0]
	bad, _ := peer.Decode(sh0.Allocations[0])
	var badPeer *Peer
	for _, p := range peers {
		if p.ID() == bad {
			badPeer = p
		}
	}
	flipByte(t, badPeer, sh0.CID, 4096+500_000)
	t.Run("corrupt copy", func(t *testing.T) {
		for _, p := range peers {
			got, err := cat(p, res.CID, 0, -1)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: %d bytes, equal %v: %v", p.cfg.PeerName, len(got), bytes.Equal(got, data), err)
			}
		}
		// The damaged holder sent the block as it lies on its disk (the
		// read server does not hash); the peer that holds no copy of
		// shard 0 asked it first, found the damage and went on to the
		// other holder.
		re := regexp.MustCompile(fmt.Sprintf(`^peer\d: cat %s: shard 0 \(%s\) from %s: block \S+ is corrupt: its bytes do not hash to its CID$`,
			res.CID, sh0.CID, bad))
		if got := logs.matching(re); len(got) != 1 {
			t.Fatalf("%d log lines match %s, want 1: %q", len(got), re, got)
		}
	})

	// The damaged peer goes down: every shard keeps one live holder.
	if err := badPeer.Close(); err != nil {
		t.Fatal(err)
	}
	var live []*Peer
	for _, p := range peers {
		if p != badPeer {
			live = append(live, p)
		}
	}
	t.Run("a holder of every shard down", func(t *testing.T) {
		for _, p := range live {
			got, err := cat(p, res.CID, 0, -1)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: %d bytes, equal %v: %v", p.cfg.PeerName, len(got), bytes.Equal(got, data), err)
			}
		}
	})

	t.Run("no good copy left", func(t *testing.T) {
		sh := res.Shards[1]
		for _, p := range live {
			if slices.Contains(sh.Allocations, p.ID().String()) {
				flipByte(t, p, sh.CID, 4096+300_000)
			}
		}
		for _, p := range live {
			got, err := cat(p, res.CID, 0, -1)
			if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "no peer could serve shard 1") {
				t.Fatalf("%s: error %v", p.cfg.PeerName, err)
			}
			if len(got) >= len(data) || !bytes.Equal(got, data[:len(got)]) {
				t.Fatalf("%s: wrote %d bytes that are not a prefix of the file", p.cfg.PeerName, len(got))
			}
		}
		// Over HTTP the failure comes after the first bytes: the client's
		// reader fails instead of ending cleanly.
		c, _ := client.New(live[0].APIAddr())
		r, err := c.Cat(ctx, res.CID, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		got, err := io.ReadAll(r)
		if err == nil || !strings.Contains(err.Error(), "no peer could serve shard 1") || !bytes.Equal(got, data[:len(got)]) {
			t.Fatalf("read %d bytes, error %v", len(got), err)
		}
	})
}

// logCapture keeps the log lines of test peers and passes them on to
// t.Log.
type logCapture struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

// logger is the Options.Logger of peer i.
func (c *logCapture) logger(i int) *log.Logger {
	return log.New(c, fmt.Sprintf("peer%d: ", i), 0)
}

func (c *logCapture) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\n"))
	c.mu.Lock()
	c.lines = append(c.lines, line)
	c.mu.Unlock()
	c.t.Log(line)
	return len(p), nil
}

// matching returns the lines kept so far that re matches.
func (c *logCapture) matching(re *regexp.Regexp) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.lines {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// catBackend is an api.Backend whose Cat writes half of what it announces
// and then fails or, with abort, drops the connection as a dying daemon
// would.
type catBackend struct {
	api.Backend
	abort bool
}

func (b catBackend) Cat(_ context.Context, _ string, _, _ int64, w api.CatWriter) error {
	w.SetLength(200_000)
	// More than the server's buffer, so that some bytes leave before the
	// connection drops.
	if _, err := w.Write(make([]byte, 100_000)); err != nil {
		return err
	}
	if b.abort {
		panic(http.ErrAbortHandler)
	}
	return errors.New("shard 3 is lost")
}

// TestCatTruncated: a stream that ends early, with an error or because the
// daemon died, makes the client's reader fail with one sentence.
func TestCatTruncated(t *testing.T) {
	root := "QmdSaj6ufqXz4byUKYGoeZ2gohe4K7H74eeqsWjw49vkUQ"
	for _, tt := range []struct {
		abort bool
		want  string
	}{
		{false, "failed after 100000 bytes: shard 3 is lost"},
		{true, "bytes: the stream broke off"},
	} {
		srv, err := api.NewServer(api.ServerConfig{Listen: "127.0.0.1:0"}, catBackend{abort: tt.abort}, "test")
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		c, _ := client.New(srv.Addr())
		r, err := c.Cat(context.Background(), root, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, io.EOF) || len(got) == 0 || len(got) > 100_000 {
			t.Errorf("abort %v: %d bytes, error %v, want %q", tt.abort, len(got), err, tt.want)
		}
	}
}
