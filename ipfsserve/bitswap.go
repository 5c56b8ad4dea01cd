package ipfsserve

import (
	"context"
	"errors"
	"sync"

	bsnetwork "github.com/ipfs/boxo/bitswap/network"
	bsnet "github.com/ipfs/boxo/bitswap/network/bsnet"
	bsserver "github.com/ipfs/boxo/bitswap/server"
	blockstore "github.com/ipfs/boxo/blockstore"
	mdag "github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/consensus"
)

// Bitswap serves the blocks of pinned DAGs to bitswap clients (Kubo's
// `ipfs cat`, any boxo client) on a public libp2p host, through a Source,
// and nothing else: a want for any other block is answered DONT_HAVE.
//
// A want names a block by CID alone, with no root. A block is served when
// it is (see "Bitswap" in the package doc):
//
//   - the root of a pin;
//   - a link of a block this server returned, whose pin is still pinned:
//     a client walking a DAG from its root only ever asks for those, and
//     each is found where the gateway finds it (its span names its shard);
//   - in this peer's store, in a part of a pin: a plain pin's, or a
//     sharded pin's shard when the block is dag-pb or raw (its list nodes
//     and cluster-DAG, dag-cbor, are the cluster's bookkeeping).
type Bitswap struct {
	net    bsnetwork.BitSwapNetwork
	server *bsserver.Server
	store  *bitswapStore
}

// NewBitswap starts a bitswap server on h, reading through src. It does
// not own h or src: Close them after the Bitswap.
func NewBitswap(h host.Host, src *Source) *Bitswap {
	ctx, cancel := context.WithCancel(context.Background())
	bs := &bitswapStore{src: src, routes: newRoutes(maxRoutes), readers: map[cid.Cid]*Reader{}, ctx: ctx, cancel: cancel}
	n := bsnet.NewFromIpfsHost(h)
	srv := bsserver.New(context.Background(), n, bs,
		bsserver.WithPeerBlockRequestFilter(bs.allowed),
		bsserver.SetSendDontHaves(true))
	n.Start(srv)
	return &Bitswap{net: n, server: srv, store: bs}
}

// Close stops serving: the network stops delivering wants and the
// server's workers end.
func (b *Bitswap) Close() {
	b.net.Stop()
	b.server.Close()
	b.store.cancel()
}

// BitswapStat is what a Bitswap has served.
type BitswapStat struct {
	BlocksSent uint64
	DataSent   uint64
	Peers      int
}

// Stat returns what the server has sent, and to how many peers.
func (b *Bitswap) Stat() (BitswapStat, error) {
	st, err := b.server.Stat()
	if err != nil {
		return BitswapStat{}, err
	}
	return BitswapStat{BlocksSent: st.BlocksSent, DataSent: st.DataSent, Peers: len(st.Peers)}, nil
}

// maxRoutes bounds the links a bitswap server remembers: about 130 bytes
// each, 34 MiB at most. A client walking a 1 TiB file depth-first holds a
// few thousand open at once (depth x fan-out, plus its read-ahead); the
// oldest are forgotten first, and a forgotten one is still served if this
// peer's store holds it.
const maxRoutes = 1 << 18

// maxReaders bounds the roots a bitswap server keeps a Reader for (its
// pin, the members, the last peer that served, its read-ahead: at most
// maxNext expected blocks, 240 KiB).
const maxReaders = 64

// route is where a linked block lies: its pin's root, and for a sharded
// file the bytes it covers.
type route struct {
	root    cid.Cid
	sp      span
	hasSpan bool
}

// bitswapStore is the read-only blockstore the bitswap server reads: the
// blocks a Source serves, confined as Bitswap says. Safe for concurrent
// use: the server's workers call it at once.
type bitswapStore struct {
	src    *Source
	routes *routes
	// ctx ends the read-ahead fetches when the Bitswap closes.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	readers map[cid.Cid]*Reader
}

var _ blockstore.Blockstore = (*bitswapStore)(nil)

// locate returns the Reader and the route of c, or false when c is not to
// be served.
func (b *bitswapStore) locate(c cid.Cid) (*Reader, route, bool) {
	rt, ok := b.routes.get(c)
	if !ok {
		if pin, pinned := b.src.c.Pin(c); pinned {
			rt, ok = route{root: c, sp: span{0, pin.Size}, hasSpan: pin.Kind == consensus.KindSharded}, true
		} else if root, held := b.src.c.Holding(c); held {
			rt, ok = route{root: root}, true
		}
	}
	if !ok {
		return nil, route{}, false
	}
	r, err := b.reader(rt.root)
	if err != nil {
		return nil, route{}, false
	}
	return r, rt, true
}

// reader returns the Reader of root, opening one if needed; ErrNotPinned
// once root is not pinned.
func (b *bitswapStore) reader(root cid.Cid) (*Reader, error) {
	b.mu.Lock()
	r, ok := b.readers[root]
	b.mu.Unlock()
	if ok {
		return r, r.recheck()
	}
	r, err := b.src.Open(root)
	if err != nil {
		return nil, err
	}
	// A client reads a file in order, asking a few blocks ahead of where
	// it is: fetching the next ones from the other peers meanwhile
	// hides the round trip each costs.
	r.ReadAhead()
	r.StreamShards(b.ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.readers) >= maxReaders {
		for k := range b.readers {
			delete(b.readers, k) // any one: a dropped Reader is opened again
			break
		}
	}
	b.readers[root] = r
	return r, nil
}

// allowed is the server's request filter: it says, without reading a
// block, whether c may be served.
func (b *bitswapStore) allowed(_ peer.ID, c cid.Cid) bool {
	_, _, ok := b.locate(c)
	return ok
}

func (b *bitswapStore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	r, rt, ok := b.locate(c)
	if !ok {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	r.waitAhead(ctx, c)
	data, err := r.block(ctx, c, rt.sp, rt.hasSpan)
	if err != nil {
		if errors.Is(err, ErrNotPinned) || errors.Is(err, ErrUnavailable) {
			return nil, ipld.ErrNotFound{Cid: c}
		}
		return nil, err
	}
	var kids []child
	if rt.hasSpan {
		kids = children(c, data, rt.sp)
	} else {
		for _, l := range links(c, data) {
			kids = append(kids, child{c: l})
		}
	}
	for _, k := range kids {
		b.routes.put(k.c, route{root: rt.root, sp: k.sp, hasSpan: k.has})
	}
	r.advance(b.ctx, c, kids)
	return blocks.NewBlockWithCid(data, c)
}

// GetSize answers every want the server takes, before it reads a block
// for a want-block: a block in this peer's store is sized from the
// store's index, one in the cache from the cache, and any other is
// fetched (into the cache, where the Get that follows finds it).
func (b *bitswapStore) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	if _, _, ok := b.locate(c); !ok {
		return -1, ipld.ErrNotFound{Cid: c}
	}
	if n, ok := b.src.c.Stored(c); ok {
		return n, nil
	}
	if r, _, ok := b.locate(c); ok {
		r.waitAhead(ctx, c)
	}
	if data, ok := b.src.cache.get(c); ok {
		return len(data), nil
	}
	blk, err := b.Get(ctx, c)
	if err != nil {
		return -1, err
	}
	// A want-block follows: a leaf taken from a shard stream is not in
	// the cache yet.
	b.src.cache.put(c, blk.RawData())
	return len(blk.RawData()), nil
}

// Has is GetSize's question: a local block is not read for it.
func (b *bitswapStore) Has(ctx context.Context, c cid.Cid) (bool, error) {
	_, err := b.GetSize(ctx, c)
	if errors.Is(err, ipld.ErrNotFound{Cid: c}) {
		return false, nil
	}
	return err == nil, err
}

func (*bitswapStore) DeleteBlock(context.Context, cid.Cid) error    { return errReadOnly }
func (*bitswapStore) Put(context.Context, blocks.Block) error       { return errReadOnly }
func (*bitswapStore) PutMany(context.Context, []blocks.Block) error { return errReadOnly }

// AllKeysChan lists nothing: the server never enumerates, and a stranger
// must not learn what is pinned but by asking for its CID.
func (*bitswapStore) AllKeysChan(context.Context) (<-chan cid.Cid, error) {
	ch := make(chan cid.Cid)
	close(ch)
	return ch, nil
}

// routes is a bounded map of routes, oldest out first. Safe for
// concurrent use.
type routes struct {
	max int

	mu    sync.Mutex
	byKey map[string]route
	ring  []string // keys in insertion order, ring[next] the oldest once full
	next  int
}

func newRoutes(max int) *routes { return &routes{max: max, byKey: map[string]route{}} }

func (t *routes) get(c cid.Cid) (route, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt, ok := t.byKey[c.KeyString()]
	return rt, ok
}

func (t *routes) put(c cid.Cid, rt route) {
	k := c.KeyString()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.byKey[k]; ok {
		t.byKey[k] = rt
		return
	}
	if len(t.ring) < t.max {
		t.ring = append(t.ring, k)
	} else {
		delete(t.byKey, t.ring[t.next])
		t.ring[t.next] = k
		t.next = (t.next + 1) % t.max
	}
	t.byKey[k] = rt
}

func (t *routes) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byKey)
}

// links returns the links of a dag-pb block; none for any other block
// (shoal's plain pins are dag-pb and raw) or one that does not decode.
func links(c cid.Cid, data []byte) []cid.Cid {
	if c.Type() != cid.DagProtobuf {
		return nil
	}
	nd, err := mdag.DecodeProtobuf(data)
	if err != nil {
		return nil
	}
	out := make([]cid.Cid, 0, len(nd.Links()))
	for _, l := range nd.Links() {
		out = append(out, l.Cid)
	}
	return out
}
