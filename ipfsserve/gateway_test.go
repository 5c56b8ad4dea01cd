package ipfsserve_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-car/v2"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
	"github.com/shoal-project/shoal/cluster"
	"github.com/shoal-project/shoal/cluster/clustertest"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ingest"
	"github.com/shoal-project/shoal/ipfsserve"
)

// testPeer is one in-process cluster peer (real libp2p, Raft and store)
// with its gateway on loopback.
type testPeer struct {
	*cluster.Peer
	api *client.Client
}

// startPeers starts n peers of one cluster, each with a gateway; tweak
// adjusts peer i's config before it starts.
func startPeers(t *testing.T, n int, tweak func(i int, cfg *config.Config)) []testPeer {
	t.Helper()
	var peers []testPeer
	var boot []ma.Multiaddr
	for i := range n {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("peer%d", i))
		cfg := clustertest.Config(i)
		cfg.Gateway.Listen = "127.0.0.1:0"
		cfg.Pinning.ReplicationMin, cfg.Pinning.ReplicationMax = 1, 1
		if tweak != nil {
			tweak(i, &cfg)
		}
		if _, err := config.Init(dir, cfg); err != nil {
			t.Fatal(err)
		}
		p, err := cluster.Start(context.Background(), dir, cluster.Options{Bootstrap: boot, Logger: testLogger(t, i)})
		if err != nil {
			t.Fatalf("start peer%d: %v", i, err)
		}
		t.Cleanup(func() { p.Close() })
		c, err := client.New(p.APIURL())
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, testPeer{p, c})
		if i == 0 {
			id, err := c.ID(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			a, err := ma.NewMultiaddr(id.Addresses[0])
			if err != nil {
				t.Fatal(err)
			}
			boot = []ma.Multiaddr{a}
		}
	}
	waitFor(t, 10*time.Second, func() error {
		ps, err := peers[0].api.Peers(context.Background())
		if err != nil {
			return err
		}
		alive := 0
		for _, p := range ps {
			if p.Alive {
				alive++
			}
		}
		if alive != n {
			return fmt.Errorf("%d of %d peers alive", alive, n)
		}
		return nil
	})
	return peers
}

func testLogger(t *testing.T, i int) *log.Logger {
	return log.New(testWriter{t}, fmt.Sprintf("peer%d ", i), log.Lmicroseconds)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func waitFor(t *testing.T, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func seeded(seed string, n int) []byte {
	r := rand.NewChaCha8(sha256.Sum256([]byte(seed)))
	b := make([]byte, n)
	r.Read(b)
	return b
}

// refDAG is a file's DAG built here with the ingest pipeline, the
// reference the gateway's answers are compared with.
type refDAG struct {
	root   cid.Cid
	blocks map[cid.Cid][]byte
}

func buildRef(t *testing.T, data []byte, chunker string) refDAG {
	t.Helper()
	p, err := dag.Options{Chunker: chunker}.Params()
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ingest.Config{Params: p})
	if err != nil {
		t.Fatal(err)
	}
	ref := refDAG{blocks: map[cid.Cid][]byte{}}
	root, err := in.File(context.Background(), bytes.NewReader(data), sinkFunc(func(b dag.Block) error {
		ref.blocks[b.CID] = bytes.Clone(b.Data)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	ref.root = root.CID
	return ref
}

type sinkFunc func(dag.Block) error

func (f sinkFunc) Put(_ context.Context, b dag.Block) error { return f(b) }

// node decodes a dag-pb block of the reference: its links, and the file
// bytes each child covers.
func (r refDAG) node(t *testing.T, c cid.Cid) (links []cid.Cid, sizes []uint64) {
	t.Helper()
	if c.Type() != cid.DagProtobuf {
		return nil, nil
	}
	nd, err := mdag.DecodeProtobuf(r.blocks[c])
	if err != nil {
		t.Fatal(err)
	}
	fsn, err := unixfs.FSNodeFromBytes(nd.Data())
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range nd.Links() {
		links = append(links, l.Cid)
		sizes = append(sizes, fsn.BlockSize(i))
	}
	return links, sizes
}

// dfs is the DAG's blocks in depth-first pre-order, each once, as a
// trustless gateway's order=dfs CAR of dag-scope=all lists them.
func (r refDAG) dfs(t *testing.T) []cid.Cid {
	var out []cid.Cid
	seen := map[cid.Cid]bool{}
	var walk func(c cid.Cid)
	walk = func(c cid.Cid) {
		if seen[c] {
			return
		}
		seen[c] = true
		out = append(out, c)
		links, _ := r.node(t, c)
		for _, l := range links {
			walk(l)
		}
	}
	walk(r.root)
	return out
}

// covering is the blocks a CAR of entity-bytes=from:to holds, in order:
// the root, and depth-first each node whose bytes meet [from, to].
func (r refDAG) covering(t *testing.T, from, to uint64) []cid.Cid {
	var out []cid.Cid
	var walk func(c cid.Cid, start uint64)
	walk = func(c cid.Cid, start uint64) {
		out = append(out, c)
		links, sizes := r.node(t, c)
		pos := start
		for i, l := range links {
			end := pos + sizes[i]
			if pos <= to && from < end {
				walk(l, pos)
			}
			pos = end
		}
	}
	walk(r.root, 0)
	return out
}

// carBlocks reads a CARv1 stream: its roots and its blocks in order,
// each checked against its CID.
func carBlocks(t *testing.T, body []byte) (roots []cid.Cid, order []cid.Cid, blocks map[cid.Cid][]byte) {
	t.Helper()
	br, err := car.NewBlockReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("read the CAR header: %v", err)
	}
	if br.Version != 1 {
		t.Fatalf("CAR version %d, want 1", br.Version)
	}
	blocks = map[cid.Cid][]byte{}
	for {
		b, err := br.Next()
		if errors.Is(err, io.EOF) {
			return br.Roots, order, blocks
		}
		if err != nil {
			t.Fatalf("read CAR section %d: %v", len(order), err)
		}
		if err := dag.Verify(b.Cid(), b.RawData()); err != nil {
			t.Fatalf("CAR block %s: %v", b.Cid(), err)
		}
		order = append(order, b.Cid())
		blocks[b.Cid()] = b.RawData()
	}
}

// fileOf is the file bytes of root from blocks.
func fileOf(t *testing.T, root cid.Cid, blocks map[cid.Cid][]byte) []byte {
	t.Helper()
	var out []byte
	var walk func(c cid.Cid)
	walk = func(c cid.Cid) {
		data, ok := blocks[c]
		if !ok {
			t.Fatalf("block %s is missing", c)
		}
		if c.Type() == cid.Raw {
			out = append(out, data...)
			return
		}
		nd, err := mdag.DecodeProtobuf(data)
		if err != nil {
			t.Fatal(err)
		}
		fsn, err := unixfs.FSNodeFromBytes(nd.Data())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fsn.Data()...)
		for _, l := range nd.Links() {
			walk(l.Cid)
		}
	}
	walk(root)
	return out
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, url string, header ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read the body: %v", url, err)
	}
	return answer{resp.StatusCode, resp.Header, body}
}

// gatewayFixture is a three-peer cluster holding a sharded file whose
// shards lie on different peers, one copy each, and a plain pin on one
// peer only.
type gatewayFixture struct {
	peers            []testPeer
	data, small      []byte
	sharded, plain   refDAG
	shards           []api.ShardStatus
	clusterDAG       string
	shardHolders     map[string]bool
	plainAllocations []string
}

const (
	// 16 KiB leaves: 3 MiB + 4321 bytes make 193 leaves, more than one
	// node's 174 links, so the balanced DAG has two levels above them.
	testChunker = "size-16384"
	leafSize    = 16384
)

func newGatewayFixture(t *testing.T) *gatewayFixture {
	t.Helper()
	f := &gatewayFixture{
		peers: startPeers(t, 3, func(i int, cfg *config.Config) {
			cfg.Gateway.Deserialized = i == 2
			cfg.IPFS.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
		}),
		data:  seeded("gateway-sharded", 3<<20+4321),
		small: seeded("gateway-plain", 300_000),
	}
	ctx := context.Background()
	f.sharded = buildRef(t, f.data, testChunker)
	f.plain = buildRef(t, f.small, testChunker)
	res, err := f.peers[0].api.Add(ctx, bytes.NewReader(f.data), "big", api.AddParams{Name: "big", Chunker: testChunker,
		Shard: true, ShardSize: 1 << 20, RMin: 1, RMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.CID != f.sharded.root.String() {
		t.Fatalf("sharded root %s, reference %s", res.CID, f.sharded.root)
	}
	f.shards, f.clusterDAG = res.Shards, res.ClusterDAG
	f.shardHolders = map[string]bool{}
	for _, sh := range res.Shards {
		if len(sh.Allocations) != 1 {
			t.Fatalf("shard %d on %v, want one peer", sh.Index, sh.Allocations)
		}
		f.shardHolders[sh.Allocations[0]] = true
	}
	// The allocator spreads consecutive shards (allocate's Recent): no
	// peer holds the whole file, so every gateway fetches shards from
	// the others.
	if len(res.Shards) < 3 || len(f.shardHolders) < 2 {
		t.Fatalf("%d shards on %d peers; want 3 or more on 2 or more", len(res.Shards), len(f.shardHolders))
	}
	plain, err := f.peers[0].api.Add(ctx, bytes.NewReader(f.small), "small", api.AddParams{Name: "small", Chunker: testChunker, RMin: 1, RMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	if plain.CID != f.plain.root.String() {
		t.Fatalf("plain root %s, reference %s", plain.CID, f.plain.root)
	}
	f.plainAllocations = plain.Pin.Allocations
	if len(f.plainAllocations) != 1 {
		t.Fatalf("plain pin on %v, want one peer", f.plainAllocations)
	}
	for _, root := range []string{res.CID, plain.CID} {
		waitFor(t, 10*time.Second, func() error {
			for _, p := range f.peers {
				if _, err := p.api.Status(ctx, root, false); err != nil {
					return err
				}
			}
			return nil
		})
	}
	// The plain pin's one copy is fetched by its allocated peer's tracker.
	waitFor(t, 10*time.Second, func() error {
		st, err := f.peers[0].api.Status(ctx, plain.CID, false)
		if err != nil {
			return err
		}
		if st.Status != api.OverallPinned {
			return fmt.Errorf("plain pin %s", st.Status)
		}
		return nil
	})
	return f
}

// TestGateway: every peer's gateway serves the raw root block and the CAR
// of a plain pin held by one peer and of a sharded file whose shards lie
// on different peers, each the DAG's blocks in depth-first order and
// nothing else; entity-bytes CARs hold exactly the blocks covering their
// range; what the cluster does not pin is 404, a malformed CID 400.
func TestGateway(t *testing.T) {
	f := newGatewayFixture(t)
	root := f.sharded.root.String()

	t.Run("raw root block", func(t *testing.T) {
		for _, p := range f.peers {
			for _, ref := range []refDAG{f.sharded, f.plain} {
				a := get(t, p.GatewayURL()+"/ipfs/"+ref.root.String()+"?format=raw")
				if a.status != http.StatusOK || a.header.Get("Content-Type") != "application/vnd.ipld.raw" {
					t.Fatalf("%s: %d %q: %s", p.GatewayURL(), a.status, a.header.Get("Content-Type"), a.body)
				}
				if err := dag.Verify(ref.root, a.body); err != nil || !bytes.Equal(a.body, ref.blocks[ref.root]) {
					t.Fatalf("%s: raw block of %s: %v", p.GatewayURL(), ref.root, err)
				}
			}
			// The same through the Accept header.
			a := get(t, p.GatewayURL()+"/ipfs/"+root, "Accept", "application/vnd.ipld.raw")
			if a.status != http.StatusOK || !bytes.Equal(a.body, f.sharded.blocks[f.sharded.root]) {
				t.Fatalf("Accept raw: %d: %s", a.status, a.body)
			}
		}
	})

	t.Run("CAR of the whole DAG", func(t *testing.T) {
		for _, p := range f.peers {
			for _, tc := range []struct {
				ref  refDAG
				file []byte
			}{{f.sharded, f.data}, {f.plain, f.small}} {
				a := get(t, p.GatewayURL()+"/ipfs/"+tc.ref.root.String()+"?format=car")
				if a.status != http.StatusOK {
					t.Fatalf("%s: %d: %s", p.GatewayURL(), a.status, a.body)
				}
				if ct := a.header.Get("Content-Type"); ct != "application/vnd.ipld.car; version=1; order=dfs; dups=n" {
					t.Fatalf("Content-Type %q", ct)
				}
				roots, order, blocks := carBlocks(t, a.body)
				if len(roots) != 1 || !roots[0].Equals(tc.ref.root) {
					t.Fatalf("CAR roots %v, want [%s]", roots, tc.ref.root)
				}
				if want := tc.ref.dfs(t); !slices.Equal(order, want) {
					t.Fatalf("%s: CAR of %s holds %d blocks, want the DAG's %d in depth-first order", p.GatewayURL(), tc.ref.root, len(order), len(want))
				}
				if got := fileOf(t, tc.ref.root, blocks); !bytes.Equal(got, tc.file) {
					t.Fatalf("the CAR's file has %d bytes, want %d", len(got), len(tc.file))
				}
			}
		}
	})

	t.Run("entity-bytes", func(t *testing.T) {
		links, _ := f.sharded.node(t, f.sharded.root)
		if len(links) != 2 {
			t.Fatalf("the root has %d links, want 2 (174 + 19 leaves)", len(links))
		}
		child0, child1 := links[0], links[1]
		leaves0, _ := f.sharded.node(t, child0)
		leaves1, _ := f.sharded.node(t, child1)
		if len(leaves0) != 174 || len(leaves1) != 19 {
			t.Fatalf("children of %d and %d leaves, want 174 and 19", len(leaves0), len(leaves1))
		}
		size := uint64(len(f.data))
		boundary := uint64(174 * leafSize) // the first byte of child1
		tests := []struct {
			name  string
			query string
			from  uint64
			to    uint64    // inclusive
			want  []cid.Cid // the exact blocks, in order
		}{
			{"first byte", "0:0", 0, 0, []cid.Cid{f.sharded.root, child0, leaves0[0]}},
			{"across the children", fmt.Sprintf("%d:%d", boundary-100, boundary+100), boundary - 100, boundary + 100,
				[]cid.Cid{f.sharded.root, child0, leaves0[173], child1, leaves1[0]}},
			{"one leaf in child1", fmt.Sprintf("%d:%d", boundary+leafSize, boundary+2*leafSize-1), boundary + leafSize, boundary + 2*leafSize - 1,
				[]cid.Cid{f.sharded.root, child1, leaves1[1]}},
			{"last 10 bytes", "-10:*", size - 10, size - 1, []cid.Cid{f.sharded.root, child1, leaves1[18]}},
		}
		for _, tt := range tests {
			if got := f.sharded.covering(t, tt.from, tt.to); !slices.Equal(got, tt.want) {
				t.Fatalf("%s: the reference covers %v, the test expects %v", tt.name, got, tt.want)
			}
			for _, p := range f.peers {
				a := get(t, p.GatewayURL()+"/ipfs/"+root+"?format=car&dag-scope=entity&entity-bytes="+tt.query)
				if a.status != http.StatusOK {
					t.Fatalf("%s: %d: %s", tt.name, a.status, a.body)
				}
				_, order, blocks := carBlocks(t, a.body)
				if !slices.Equal(order, tt.want) {
					t.Fatalf("%s from %s: CAR blocks %v, want %v", tt.name, p.GatewayURL(), order, tt.want)
				}
				// Verifiable: the leaves' bytes, in order, are the file's
				// from the first covering leaf to the end of the last.
				var got []byte
				for _, c := range order {
					if links, _ := f.sharded.node(t, c); len(links) == 0 {
						got = append(got, fileOf(t, c, blocks)...)
					}
				}
				if lo, hi := tt.from/leafSize*leafSize, min(size, (tt.to/leafSize+1)*leafSize); !bytes.Equal(got, f.data[lo:hi]) {
					t.Fatalf("%s: the leaves hold %d bytes, not the file's [%d, %d)", tt.name, len(got), lo, hi)
				}
			}
		}
		// dag-scope=block: the root only; dag-scope=entity without a
		// range: the whole file.
		a := get(t, f.peers[1].GatewayURL()+"/ipfs/"+root+"?format=car&dag-scope=block")
		if _, order, _ := carBlocks(t, a.body); a.status != http.StatusOK || !slices.Equal(order, []cid.Cid{f.sharded.root}) {
			t.Fatalf("dag-scope=block: %d, %v", a.status, order)
		}
		a = get(t, f.peers[1].GatewayURL()+"/ipfs/"+root+"?format=car&dag-scope=entity")
		if _, order, _ := carBlocks(t, a.body); a.status != http.StatusOK || !slices.Equal(order, f.sharded.dfs(t)) {
			t.Fatalf("dag-scope=entity: %d, %d blocks", a.status, len(order))
		}
	})

	t.Run("refused", func(t *testing.T) {
		unpinned := buildRef(t, []byte("never added"), testChunker).root
		inner, _ := f.sharded.node(t, f.sharded.root)
		tests := []struct {
			name, path string
			peer       int
			status     int
			body       string
		}{
			{"unpinned CID", "/ipfs/" + unpinned.String() + "?format=raw", 1, http.StatusNotFound,
				"failed to resolve /ipfs/" + unpinned.String() + ": not pinned in this cluster\n"},
			{"unpinned CID, CAR", "/ipfs/" + unpinned.String() + "?format=car", 1, http.StatusNotFound,
				"failed to resolve /ipfs/" + unpinned.String() + ": not pinned in this cluster\n"},
			// Shoal's own list nodes are no pinned DAG's blocks.
			{"a shard", "/ipfs/" + f.shards[0].CID + "?format=raw", 1, http.StatusNotFound,
				"failed to resolve /ipfs/" + f.shards[0].CID + ": not pinned in this cluster\n"},
			{"the cluster-DAG", "/ipfs/" + f.clusterDAG + "?format=car", 1, http.StatusNotFound,
				"failed to resolve /ipfs/" + f.clusterDAG + ": not pinned in this cluster\n"},
			// A block inside a pinned DAG is reached from its root only
			// (the per-peer block index comes next: package doc).
			{"an inner block", "/ipfs/" + inner[0].String() + "?format=raw", 1, http.StatusNotFound,
				"failed to resolve /ipfs/" + inner[0].String() + ": not pinned in this cluster\n"},
			{"malformed CID", "/ipfs/not-a-cid?format=raw", 1, http.StatusBadRequest,
				"invalid path \"/ipfs/not-a-cid\": invalid cid: selected encoding not supported\n"},
			{"deserialized is off", "/ipfs/" + root, 1, http.StatusNotAcceptable,
				"only trustless requests are accepted on this gateway: https://specs.ipfs.tech/http-gateways/trustless-gateway/\n"},
			{"IPNS", "/ipns/k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8", 2, http.StatusNotImplemented,
				"failed to resolve /ipns/k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8: this gateway serves /ipfs/ paths of content its cluster pins; it resolves no IPNS names or DNSLink\n"},
		}
		for _, tt := range tests {
			a := get(t, f.peers[tt.peer].GatewayURL()+tt.path)
			if a.status != tt.status || string(a.body) != tt.body {
				t.Errorf("%s: %d %q, want %d %q", tt.name, a.status, a.body, tt.status, tt.body)
			}
		}
	})

	t.Run("deserialized with Range", func(t *testing.T) {
		gw := f.peers[2].GatewayURL() // gateway.deserialized on
		size := len(f.data)
		tests := []struct {
			rng      string
			from, to int // inclusive
		}{
			{"bytes=0-99", 0, 99},
			{"bytes=2850000-2851000", 2850000, 2851000},
			{"bytes=-10", size - 10, size - 1},
			{"bytes=3000000-", 3000000, size - 1},
		}
		for _, tt := range tests {
			a := get(t, gw+"/ipfs/"+root, "Range", tt.rng)
			if a.status != http.StatusPartialContent || !bytes.Equal(a.body, f.data[tt.from:tt.to+1]) {
				t.Fatalf("%s: %d, %d bytes: %.200s", tt.rng, a.status, len(a.body), a.body)
			}
			if cr := a.header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", tt.from, tt.to, size) {
				t.Fatalf("%s: Content-Range %q", tt.rng, cr)
			}
		}
		for _, tc := range []struct {
			ref  refDAG
			file []byte
		}{{f.sharded, f.data}, {f.plain, f.small}} {
			a := get(t, gw+"/ipfs/"+tc.ref.root.String())
			if a.status != http.StatusOK || !bytes.Equal(a.body, tc.file) {
				t.Fatalf("whole file %s: %d, %d bytes", tc.ref.root, a.status, len(a.body))
			}
		}
	})
}

// TestGatewayUnavailable: a pinned DAG whose only holder is down is 502,
// saying which block no peer could serve.
func TestGatewayUnavailable(t *testing.T) {
	f := newGatewayFixture(t)
	holder := slices.IndexFunc(f.peers, func(p testPeer) bool { return p.ID().String() == f.plainAllocations[0] })
	if holder < 0 {
		t.Fatalf("the plain pin's holder %s is no test peer", f.plainAllocations[0])
	}
	other := f.peers[(holder+1)%len(f.peers)]
	if err := f.peers[holder].Close(); err != nil {
		t.Fatal(err)
	}
	root := f.plain.root.String()
	a := get(t, other.GatewayURL()+"/ipfs/"+root+"?format=raw")
	prefix := "failed to resolve /ipfs/" + root + ": no peer could serve the block: block " + root + " of " + root + ": "
	if a.status != http.StatusBadGateway || !strings.HasPrefix(string(a.body), prefix) || !strings.Contains(string(a.body), f.plainAllocations[0]) {
		t.Fatalf("%d %q, want 502 %q... naming %s", a.status, a.body, prefix, f.plainAllocations[0])
	}
}

// TestGatewayUnpin: once a pin is removed, every gateway refuses it within
// seconds, whichever peer held it.
func TestGatewayUnpin(t *testing.T) {
	f := newGatewayFixture(t)
	ctx := context.Background()
	// A read in flight: a Reader of the sharded root, opened before the unpin.
	src, err := ipfsserve.NewSource(f.peers[2].IPFSCluster(), ipfsserve.DefaultSourceConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	inFlight, err := src.Open(f.sharded.root)
	if err != nil {
		t.Fatal(err)
	}
	links, _ := f.sharded.node(t, f.sharded.root)
	if _, err := inFlight.Block(ctx, f.sharded.root); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []refDAG{f.sharded, f.plain} {
		for _, p := range f.peers {
			if a := get(t, p.GatewayURL()+"/ipfs/"+ref.root.String()+"?format=car"); a.status != http.StatusOK {
				t.Fatalf("before the unpin: %d: %s", a.status, a.body)
			}
		}
		start := time.Now()
		if _, err := f.peers[1].api.Unpin(ctx, ref.root.String()); err != nil {
			t.Fatal(err)
		}
		want := "failed to resolve /ipfs/" + ref.root.String() + ": not pinned in this cluster\n"
		waitFor(t, 3*time.Second, func() error {
			for _, p := range f.peers {
				for _, q := range []string{"?format=raw", "?format=car"} {
					if a := get(t, p.GatewayURL()+"/ipfs/"+ref.root.String()+q); a.status != http.StatusNotFound || string(a.body) != want {
						return fmt.Errorf("%s%s after the unpin: %d %q", p.GatewayURL(), q, a.status, a.body)
					}
				}
			}
			return nil
		})
		t.Logf("%s refused everywhere %s after the unpin began", ref.root, time.Since(start).Round(time.Millisecond))
	}
	// The read in flight ends within a second of the unpin (pinCheckEvery).
	waitFor(t, 1500*time.Millisecond, func() error {
		_, err := inFlight.Block(ctx, links[1])
		if !errors.Is(err, ipfsserve.ErrNotPinned) {
			return fmt.Errorf("a read begun before the unpin: %v", err)
		}
		if want := f.sharded.root.String() + ": not pinned in this cluster"; err.Error() != want {
			return fmt.Errorf("error %q, want %q", err, want)
		}
		return nil
	})
}

// countingCluster counts the block reads a Source makes through a peer's
// cluster view.
type countingCluster struct {
	ipfsserve.Cluster

	mu         sync.Mutex
	reads      map[cid.Cid]int // blocks got, locally, from a peer or in a shard stream
	fetchFails []string
	streams    int // shard streams opened
}

func (c *countingCluster) Local(b cid.Cid) ([]byte, error) {
	data, err := c.Cluster.Local(b)
	if err == nil {
		c.mu.Lock()
		c.reads[b]++
		c.mu.Unlock()
	}
	return data, err
}

func (c *countingCluster) Fetch(ctx context.Context, from peer.ID, b cid.Cid) ([]byte, error) {
	data, err := c.Cluster.Fetch(ctx, from, b)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil && ctx.Err() != nil {
		return data, err // given up by the reader (boxo's preload), not refused
	}
	if err != nil {
		c.fetchFails = append(c.fetchFails, fmt.Sprintf("%s from %s: %v", b, from, err))
	} else {
		c.reads[b]++
	}
	return data, err
}

func (c *countingCluster) Shard(ctx context.Context, sh consensus.Shard) (ipfsserve.ShardStream, error) {
	st, err := c.Cluster.Shard(ctx, sh)
	if err != nil {
		c.mu.Lock()
		c.fetchFails = append(c.fetchFails, fmt.Sprintf("shard %s: %v", sh.CID, err))
		c.mu.Unlock()
		return nil, err
	}
	c.mu.Lock()
	c.streams++
	c.mu.Unlock()
	return countingStream{st, c}, nil
}

// countingStream counts the blocks a shard stream reads.
type countingStream struct {
	ipfsserve.ShardStream
	c *countingCluster
}

func (s countingStream) Next() (dag.Block, error) {
	b, err := s.ShardStream.Next()
	if err == nil {
		s.c.mu.Lock()
		s.c.reads[b.CID]++
		s.c.mu.Unlock()
	}
	return b, err
}

func (c *countingCluster) take() (map[cid.Cid]int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, f := c.reads, c.fetchFails
	c.reads, c.fetchFails = map[cid.Cid]int{}, nil
	return r, f
}

// TestSourceReadsOnlyWhatItServes: a gateway's Source finds each block of
// a sharded file on the peer that holds it at the first try (the shard
// whose bytes end where the block's do), reads every block of a CAR once,
// and for a byte range, deserialized or as a CAR, only the blocks that
// cover it: never the whole file.
func TestSourceReadsOnlyWhatItServes(t *testing.T) {
	f := newGatewayFixture(t)
	root := f.sharded.root
	links, _ := f.sharded.node(t, root)
	leaves0, _ := f.sharded.node(t, links[0])
	leaves1, _ := f.sharded.node(t, links[1])
	for _, p := range f.peers {
		cc := &countingCluster{Cluster: p.IPFSCluster(), reads: map[cid.Cid]int{}}
		src, err := ipfsserve.NewSource(cc, ipfsserve.DefaultSourceConfig())
		if err != nil {
			t.Fatal(err)
		}
		gw, err := ipfsserve.NewGateway(ipfsserve.GatewayConfig{Listen: "127.0.0.1:0", Deserialized: true}, src)
		if err != nil {
			t.Fatal(err)
		}
		if err := gw.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { gw.Close() })

		a := get(t, gw.URL()+"/ipfs/"+root.String()+"?format=car")
		if a.status != http.StatusOK {
			t.Fatalf("CAR: %d: %s", a.status, a.body)
		}
		reads, fails := cc.take()
		if len(fails) > 0 {
			t.Fatalf("%s asked the wrong peers %d times, first: %s", p.ID(), len(fails), fails[0])
		}
		if len(reads) != len(f.sharded.blocks) {
			for c := range reads {
				if _, ok := f.sharded.blocks[c]; !ok {
					t.Logf("not in the DAG: %s", c)
				}
			}
			t.Fatalf("%s read %d distinct blocks for a CAR of %d", p.ID(), len(reads), len(f.sharded.blocks))
		}
		// Every shard streamed once (feed.go); each leaf read once, in
		// its stream. An internal node is read alone, ahead of its leaves,
		// and its stream's copy dropped: twice. The root once more, as
		// boxo resolves the path before the walk starts (the second read
		// is the cache's when it is remote).
		cc.mu.Lock()
		streams := cc.streams
		cc.streams = 0
		cc.mu.Unlock()
		if streams != len(f.shards) {
			t.Fatalf("%s streamed %d shards for a CAR of %d", p.ID(), streams, len(f.shards))
		}
		for c, n := range reads {
			want := 1
			if links, _ := f.sharded.node(t, c); len(links) > 0 {
				want = 2
			}
			if c.Equals(root) {
				want = 3
			}
			if n > want {
				t.Fatalf("%s read block %s %d times, want at most %d", p.ID(), c, n, want)
			}
		}

		boundary := 174 * leafSize
		covering := []cid.Cid{root, links[0], leaves0[173], links[1], leaves1[0]}
		// A deserialized read may also take the first leaf (boxo may sniff
		// the content type from the file's first bytes) and, ahead of
		// where it reads, at most preloadSize (10) more leaves of the node
		// it is in (go-ipld-format's NavigableIPLDNode).
		const preloadSize = 10
		sniffed := append(slices.Clone(covering), leaves0[0])
		preloaded := slices.Concat(sniffed, leaves0[:preloadSize], leaves1[:preloadSize+1])
		for _, tc := range []struct {
			name    string
			url     string
			header  []string
			want    []cid.Cid // the blocks that must be read, unless remote (cached)
			allowed []cid.Cid // the blocks that may be read
			max     int       // distinct blocks read at most
		}{
			{"entity-bytes CAR", fmt.Sprintf("%s/ipfs/%s?format=car&dag-scope=entity&entity-bytes=%d:%d", gw.URL(), root, boundary-100, boundary+100), nil,
				covering, covering, len(covering)},
			{"Range", gw.URL() + "/ipfs/" + root.String(), []string{"Range", fmt.Sprintf("bytes=%d-%d", boundary-100, boundary+100)},
				covering, preloaded, len(sniffed) + preloadSize},
		} {
			a := get(t, tc.url, tc.header...)
			if a.status/100 != 2 {
				t.Fatalf("%s: %d: %s", tc.name, a.status, a.body)
			}
			reads, fails := cc.take()
			if len(fails) > 0 {
				t.Fatalf("%s: %s asked the wrong peers %d times, first: %s", tc.name, p.ID(), len(fails), fails[0])
			}
			if len(reads) > tc.max {
				t.Fatalf("%s: %s read %d blocks, at most %d cover the range", tc.name, p.ID(), len(reads), tc.max)
			}
			for c := range reads {
				if !slices.ContainsFunc(tc.allowed, c.Equals) {
					t.Fatalf("%s: %s read block %s, which does not cover the range", tc.name, p.ID(), c)
				}
			}
			// Blocks the cache holds from the CAR above are not read
			// again; the local ones are.
			for _, c := range tc.want {
				if _, read := reads[c]; !read {
					if _, err := p.IPFSCluster().Local(c); err == nil {
						t.Fatalf("%s: %s did not read block %s, which is local and covers the range", tc.name, p.ID(), c)
					}
				}
			}
		}
	}
}

// failingCluster is a peer's cluster whose shard streams fail: at the
// open when after is negative, else after that many blocks.
type failingCluster struct {
	ipfsserve.Cluster
	after int
}

func (c failingCluster) Shard(ctx context.Context, sh consensus.Shard) (ipfsserve.ShardStream, error) {
	if c.after < 0 {
		return nil, errors.New("injected: the stream does not open")
	}
	st, err := c.Cluster.Shard(ctx, sh)
	if err != nil {
		return nil, err
	}
	return &failingStream{ShardStream: st, left: c.after}, nil
}

type failingStream struct {
	ipfsserve.ShardStream
	left int
}

func (s *failingStream) Next() (dag.Block, error) {
	if s.left == 0 {
		return dag.Block{}, errors.New("injected: the holder went away")
	}
	s.left--
	return s.ShardStream.Next()
}

// TestCARStreamFails: a whole-file CAR whose shard streams fail to open,
// or fail midway, is still the whole DAG in depth-first order: the leaves
// the streams did not bring are read block by block.
func TestCARStreamFails(t *testing.T) {
	f := newGatewayFixture(t)
	want := f.sharded.dfs(t)
	for _, after := range []int{-1, 0, 5, 100} {
		src, err := ipfsserve.NewSource(failingCluster{f.peers[1].IPFSCluster(), after}, ipfsserve.DefaultSourceConfig())
		if err != nil {
			t.Fatal(err)
		}
		gw, err := ipfsserve.NewGateway(ipfsserve.GatewayConfig{Listen: "127.0.0.1:0"}, src)
		if err != nil {
			t.Fatal(err)
		}
		if err := gw.Start(); err != nil {
			t.Fatal(err)
		}
		a := get(t, gw.URL()+"/ipfs/"+f.sharded.root.String()+"?format=car")
		gw.Close()
		if a.status != http.StatusOK {
			t.Fatalf("streams failing after %d blocks: %d: %s", after, a.status, a.body)
		}
		roots, order, blocks := carBlocks(t, a.body)
		if len(roots) != 1 || !roots[0].Equals(f.sharded.root) || !slices.EqualFunc(order, want, cid.Cid.Equals) {
			t.Fatalf("streams failing after %d blocks: roots %v, %d blocks; want the %d of the DAG in order", after, roots, len(order), len(want))
		}
		if got := fileOf(t, f.sharded.root, blocks); !bytes.Equal(got, f.data) {
			t.Fatalf("streams failing after %d blocks: the CAR's file differs", after)
		}
	}
}
