package transfer

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/p2p"
	"github.com/shoal-project/shoal/shard"
	"github.com/shoal-project/shoal/store"
)

// members is a static Membership: every test host is a member.
type members struct {
	mu  sync.Mutex
	ids map[peer.ID]bool
}

func (m *members) IsMember(id peer.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ids[id]
}

// node is one test peer: a host on loopback, its store and its Server.
type node struct {
	h   *p2p.Host
	st  *store.Store
	dir string
	srv *Server
}

// newCluster starts n hosts that are members of each other and know each
// other's addresses; each has a store and serves Protocol.
func newCluster(t testing.TB, n int) []*node {
	t.Helper()
	secret := make([]byte, p2p.SecretSize)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	m := &members{ids: map[peer.ID]bool{}}
	nodes := make([]*node, n)
	for i := range nodes {
		sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		cfg := p2p.DefaultConfig()
		cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
		cfg.PrivKey = sk
		cfg.Secret = secret
		h, err := p2p.New(cfg, m)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		dir := t.TempDir()
		st, err := store.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		srv := &Server{Store: st, Logf: t.Logf}
		h.Handle(Protocol, srv.Handle)
		nodes[i] = &node{h: h, st: st, dir: dir, srv: srv}
		m.mu.Lock()
		m.ids[h.ID()] = true
		m.mu.Unlock()
	}
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				addrs, err := peer.AddrInfosFromP2pAddrs(b.h.Addrs()...)
				if err != nil {
					t.Fatal(err)
				}
				a.h.AddAddrs(b.h.ID(), addrs[0].Addrs)
			}
		}
	}
	return nodes
}

func ids(nodes ...*node) []peer.ID {
	out := make([]peer.ID, len(nodes))
	for i, n := range nodes {
		out[i] = n.h.ID()
	}
	return out
}

// tmpFiles lists the store's unfinished shard files.
func tmpFiles(t testing.TB, n *node) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(n.dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// assertEmpty fails unless n stores no shard and no temporary file, waiting
// a little for handlers that abort after a reset.
func assertEmpty(t testing.TB, n *node) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		shards, tmp := n.st.Shards(), tmpFiles(t, n)
		if len(shards) == 0 && len(tmp) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds shards %v and temporary files %v, want none", n.h.ID(), shards, tmp)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testBlocks returns n blocks of about size bytes each (some smaller),
// under a mix of CID kinds: CIDv0, raw sha2-256, blake3, sha2-512 and
// identity.
func testBlocks(t testing.TB, rng *mrand.Rand, n, size int) []dag.Block {
	t.Helper()
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rng.Uint32())
	}
	fill := mrand.NewChaCha8(seed)
	out := make([]dag.Block, n)
	for i := range out {
		l := size
		if i%5 == 4 {
			l = 1 + rng.IntN(size/8+1)
		}
		data := make([]byte, l)
		_, _ = fill.Read(data)
		var c cid.Cid
		switch i % 7 {
		case 3:
			c = sum(t, cid.Raw, data, mh.BLAKE3, 32)
		case 5:
			c = sum(t, cid.DagProtobuf, data, mh.SHA2_512, -1)
		case 6:
			data = data[:min(len(data), 24)]
			c = sum(t, cid.Raw, data, mh.IDENTITY, -1)
		default:
			h, err := mh.Sum(data, mh.SHA2_256, -1)
			if err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				c = cid.NewCidV0(h)
			} else {
				c = cid.NewCidV1(cid.Raw, h)
			}
		}
		out[i] = dag.Block{CID: c, Data: data, FileBytes: uint64(len(data))}
	}
	return out
}

func sum(t testing.TB, codec uint64, data []byte, code uint64, length int) cid.Cid {
	t.Helper()
	h, err := mh.Sum(data, code, length)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(codec, h)
}

// shardOf builds the list tree of blocks and the Info a cutter would give.
func shardOf(t testing.TB, blocks []dag.Block, maxLinks int) (shard.Info, []dag.Block) {
	t.Helper()
	cids := make([]cid.Cid, len(blocks))
	info := shard.Info{Blocks: len(blocks)}
	for i, b := range blocks {
		cids[i] = b.CID
		info.Size += sectionCost(b.CID.ByteLen(), len(b.Data))
		info.Length += b.FileBytes
	}
	root, nodes, err := shard.BuildList(shard.KindShard, cids, maxLinks)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		info.Size += sectionCost(n.CID.ByteLen(), len(n.Data))
	}
	info.CID = root
	return info, nodes
}

// Raw wire encoding, written out here rather than with the package's own
// helpers, so that the tests check the format doc.go documents.

func rawHeader(v byte, maxSize uint64) []byte {
	return binary.AppendUvarint([]byte{v}, maxSize)
}

func rawFrame(dst []byte, c cid.Cid, data []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(c.Bytes())))
	dst = append(dst, c.Bytes()...)
	dst = binary.AppendUvarint(dst, uint64(len(data)))
	return append(dst, data...)
}

func rawEnd(dst []byte, info shard.Info, nodes []dag.Block) []byte {
	dst = append(dst, 0)
	dst = binary.AppendUvarint(dst, uint64(info.Index))
	dst = binary.AppendUvarint(dst, uint64(len(info.CID.Bytes())))
	dst = append(dst, info.CID.Bytes()...)
	for _, v := range []uint64{uint64(info.Size), uint64(info.Blocks), info.Offset, info.Length, uint64(len(nodes))} {
		dst = binary.AppendUvarint(dst, v)
	}
	for _, n := range nodes {
		dst = rawFrame(dst, n.CID, n.Data)
	}
	return dst
}

// rawSend opens Protocol from one host to another, writes header, and body
// if the receiver accepts, then returns the receiver's answers: the first
// (to the header) and, if that was OK, the second.
func rawSend(t testing.TB, from *p2p.Host, to peer.ID, header, body []byte) (first, second answer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := from.NewStream(ctx, to, Protocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(header); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(s)
	first, err = readAnswer(br)
	if err != nil {
		t.Fatalf("read answer to the header: %v", err)
	}
	if first.status != statusOK {
		return first, answer{}
	}
	// The receiver may refuse before reading everything: write on the side.
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := s.Write(body); err == nil {
			_ = s.CloseWrite()
		}
	}()
	second, err = readAnswer(br)
	_ = s.Reset()
	<-done
	if err != nil {
		t.Fatalf("read final answer: %v", err)
	}
	return first, second
}

// slowStream reads at most rate bytes per second.
type slowStream struct {
	network.Stream
	rate float64
}

func (s slowStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	time.Sleep(time.Duration(float64(n) / s.rate * float64(time.Second)))
	return n, err
}

// senderGoroutines counts the goroutines of Fanouts.
func senderGoroutines() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "transfer.(*target).") {
			n++
		}
	}
	return n
}

// readShard returns the blocks of a stored shard, in stored order.
func readShard(t testing.TB, st *store.Store, key string) []dag.Block {
	t.Helper()
	r, err := st.OpenShard(key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []dag.Block
	for {
		b, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, dag.Block{CID: b.CID, Data: append([]byte(nil), b.Data...)})
	}
}
