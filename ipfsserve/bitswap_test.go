package ipfsserve_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	bsclient "github.com/ipfs/boxo/bitswap/client"
	bsnet "github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	blockstore "github.com/ipfs/boxo/blockstore"
	mdag "github.com/ipfs/boxo/ipld/merkledag"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// bitswapClient is a stranger on the IPFS network: a plain libp2p host
// (no cluster secret) with boxo's bitswap client, an empty blockstore of
// its own, and no content routing: it asks the peers it is connected to.
type bitswapClient struct {
	h      host.Host
	client *bsclient.Client
}

// newBitswapClient connects a new client to the IPFS hosts at addrs.
func newBitswapClient(t *testing.T, addrs []string) *bitswapClient {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	n := bsnet.NewFromIpfsHost(h)
	c := bsclient.New(context.Background(), n, nil, bs)
	n.Start(c)
	t.Cleanup(func() { n.Stop(); c.Close() })
	for _, a := range addrs {
		ai, err := peer.AddrInfoFromString(a)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = h.Connect(ctx, *ai)
		cancel()
		if err != nil {
			t.Fatalf("connect to the IPFS host %s: %v", a, err)
		}
	}
	return &bitswapClient{h: h, client: c}
}

// cat reads the UnixFS file at root over bitswap.
func (b *bitswapClient) cat(ctx context.Context, root cid.Cid) ([]byte, error) {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	dserv := mdag.NewDAGService(blockservice.New(bs, b.client))
	nd, err := dserv.Get(ctx, root)
	if err != nil {
		return nil, err
	}
	r, err := uio.NewDagReader(ctx, nd, dserv)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// TestBitswap: a stranger connected to one peer's IPFS host reads, over
// bitswap, a sharded file whose shards lie on the three peers and a plain
// pin held by one peer: identical bytes. It gets no block the cluster does
// not pin (a CID nothing pins, a shard's list node, the cluster-DAG), and
// the host speaks no cluster protocol. After an unpin the root is no
// longer served.
func TestBitswap(t *testing.T) {
	f := newGatewayFixture(t)
	ctx := context.Background()
	for i, p := range f.peers {
		if p.IPFSID() == "" || p.IPFSID() == p.ID().String() {
			t.Fatalf("peer%d's IPFS host is %q, its cluster ID %s: want one of its own", i, p.IPFSID(), p.ID())
		}
	}

	t.Run("cat", func(t *testing.T) {
		for i, p := range f.peers {
			bc := newBitswapClient(t, p.IPFSAddrs()[:1])
			for _, ref := range []struct {
				root cid.Cid
				data []byte
			}{{f.sharded.root, f.data}, {f.plain.root, f.small}} {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				got, err := bc.cat(cctx, ref.root)
				cancel()
				if err != nil {
					t.Fatalf("peer%d: cat %s: %v", i, ref.root, err)
				}
				if !bytes.Equal(got, ref.data) {
					t.Fatalf("peer%d: cat %s: %d bytes, want the %d added", i, ref.root, len(got), len(ref.data))
				}
			}
		}
		st, err := f.peers[0].BitswapStat()
		if err != nil {
			t.Fatal(err)
		}
		if min := uint64(len(f.sharded.blocks) + len(f.plain.blocks)); st.BlocksSent < min {
			t.Fatalf("peer0 sent %d blocks, fewer than the %d of both DAGs", st.BlocksSent, min)
		}
	})

	t.Run("not pinned", func(t *testing.T) {
		bc := newBitswapClient(t, f.peers[0].IPFSAddrs())
		unpinned := buildRef(t, seeded("never added", 1000), testChunker).root
		var denied []cid.Cid
		denied = append(denied, unpinned)
		for _, s := range append([]string{f.clusterDAG}, f.shards[0].CID, f.shards[len(f.shards)-1].CID) {
			c, err := cid.Decode(s)
			if err != nil {
				t.Fatal(err)
			}
			denied = append(denied, c)
		}
		before, err := f.peers[0].BitswapStat()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range denied {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := bc.client.GetBlock(cctx, c)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("GetBlock %s: %v, want no answer (context deadline exceeded)", c, err)
			}
		}
		after, err := f.peers[0].BitswapStat()
		if err != nil {
			t.Fatal(err)
		}
		if after.BlocksSent != before.BlocksSent {
			t.Fatalf("the server sent %d blocks for CIDs it must not serve", after.BlocksSent-before.BlocksSent)
		}
	})

	t.Run("no cluster protocol", func(t *testing.T) {
		bc := newBitswapClient(t, f.peers[1].IPFSAddrs()[:1])
		ai, err := peer.AddrInfoFromString(f.peers[1].IPFSAddrs()[0])
		if err != nil {
			t.Fatal(err)
		}
		var protos []protocol.ID
		waitFor(t, 5*time.Second, func() error {
			protos, err = bc.h.Peerstore().GetProtocols(ai.ID)
			if err != nil || len(protos) == 0 {
				return fmt.Errorf("identify gave no protocols: %v", err)
			}
			return nil
		})
		for _, p := range protos {
			if !strings.HasPrefix(string(p), "/ipfs/") && !strings.HasPrefix(string(p), "/libp2p/") {
				t.Errorf("the IPFS host speaks %s", p)
			}
		}
		if !slices.Contains(protos, "/ipfs/bitswap/1.2.0") {
			t.Errorf("the IPFS host's protocols %v lack bitswap 1.2.0", protos)
		}
		for _, p := range []protocol.ID{"/shoal/read/1", "/shoal/fetch/1", "/shoal/raft/1", "/shoal/join/1"} {
			s, err := bc.h.NewStream(ctx, ai.ID, p)
			if err == nil {
				s.Reset()
				t.Fatalf("the IPFS host opened a %s stream", p)
			}
		}
	})

	t.Run("unpin", func(t *testing.T) {
		if _, err := f.peers[1].api.Unpin(ctx, f.plain.root.String()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, func() error {
			bc := newBitswapClient(t, f.peers[0].IPFSAddrs()[:1])
			cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			if _, err := bc.client.GetBlock(cctx, f.plain.root); err == nil {
				return errors.New("the unpinned root is still served")
			}
			return nil
		})
	})
}
