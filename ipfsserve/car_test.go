package ipfsserve_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockservice"
	blockstore "github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/gateway"
	blocks "github.com/ipfs/go-block-format"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-project/shoal/api"
)

// boxoGateway is boxo's own gateway over an in-memory blockstore holding
// refs' blocks: what the trustless gateway spec's reference code answers.
func boxoGateway(t *testing.T, refs ...refDAG) *httptest.Server {
	t.Helper()
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	for _, ref := range refs {
		for c, data := range ref.blocks {
			b, err := blocks.NewBlockWithCid(data, c)
			if err != nil {
				t.Fatal(err)
			}
			if err := bs.Put(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
	}
	backend, err := gateway.NewBlocksBackend(blockservice.New(bs, offline.Exchange(bs)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gateway.NewHandler(gateway.Config{NoDNSLink: true, DisableHTMLErrors: true,
		MetricsRegistry: prometheus.NewRegistry()}, backend))
	t.Cleanup(srv.Close)
	return srv
}

// TestWholeCARMatchesBoxo: the gateway writes whole-DAG CARs itself
// (car.go); every peer's answer is byte for byte, and header for header,
// what boxo's gateway answers for the same DAG: a sharded file whose
// shards lie on other peers, a plain pin, and a file whose repeated
// leaves are written once. The variants boxo still writes (dups=y, a
// range, order=unk) keep their own answers.
func TestWholeCARMatchesBoxo(t *testing.T) {
	f := newGatewayFixture(t)
	ctx := context.Background()
	zeros := append(make([]byte, 20*leafSize), seeded("dups tail", 5000)...)
	dups := buildRef(t, zeros, testChunker)
	res, err := f.peers[0].api.Add(ctx, bytes.NewReader(zeros), "zeros", api.AddParams{Name: "zeros", Chunker: testChunker, RMin: 1, RMax: 1})
	if err != nil || res.CID != dups.root.String() {
		t.Fatalf("add zeros: %v, root %s, want %s", err, res.CID, dups.root)
	}
	if len(dups.blocks) >= 22 {
		t.Fatalf("the zeros' DAG has %d distinct blocks: its leaves do not repeat", len(dups.blocks))
	}
	// Repeated leaves in a sharded file: its shard streams bring the
	// zero leaf many times, the CAR has it once.
	szeros := append(make([]byte, 100*leafSize), seeded("sharded dups tail", 7000)...)
	sdups := buildRef(t, szeros, testChunker)
	res, err = f.peers[0].api.Add(ctx, bytes.NewReader(szeros), "szeros", api.AddParams{Name: "szeros", Chunker: testChunker,
		Shard: true, ShardSize: 1 << 20, RMin: 1, RMax: 1})
	if err != nil || res.CID != sdups.root.String() || len(res.Shards) < 2 {
		t.Fatalf("add sharded zeros: %v, root %s (want %s), %d shards", err, res.CID, sdups.root, len(res.Shards))
	}
	waitFor(t, 10*time.Second, func() error {
		for _, p := range f.peers {
			if _, err := p.api.Status(ctx, res.CID, false); err != nil {
				return err
			}
		}
		return nil
	})
	ref := boxoGateway(t, f.sharded, f.plain, dups, sdups)
	for _, root := range []string{f.sharded.root.String(), f.plain.root.String(), dups.root.String(), sdups.root.String()} {
		for _, q := range []string{"?format=car", "?format=car&dag-scope=all", "?format=car&car-order=dfs&car-dups=n"} {
			want := get(t, ref.URL+"/ipfs/"+root+q)
			if want.status != http.StatusOK {
				t.Fatalf("boxo: %s%s: %d %s", root, q, want.status, want.body)
			}
			for i, p := range f.peers {
				got := get(t, p.GatewayURL()+"/ipfs/"+root+q)
				if got.status != http.StatusOK || !bytes.Equal(got.body, want.body) {
					t.Fatalf("peer%d: %s%s: %d, %d bytes; boxo's %d bytes differ", i, root, q, got.status, len(got.body), len(want.body))
				}
				for _, h := range []string{"Content-Type", "Etag", "X-Ipfs-Roots", "X-Ipfs-Path", "Cache-Control", "Content-Disposition", "Accept-Ranges", "X-Content-Type-Options"} {
					if got.header.Get(h) != want.header.Get(h) {
						t.Errorf("peer%d: %s%s: %s %q, boxo %q", i, root, q, h, got.header.Get(h), want.header.Get(h))
					}
				}
			}
		}
	}
}
