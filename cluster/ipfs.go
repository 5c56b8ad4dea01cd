package cluster

import (
	"context"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/ipfsserve"
)

// Serving the cluster's content to IPFS clients (package ipfsserve): the
// trustless gateway (gateway.listen) reads through ipfsCluster, the
// cluster as ipfsserve sees it: the local pinset, the local store, and
// other members' stores over /shoal/read/1 ("block CID", read.go).

// ipfsCluster implements ipfsserve.Cluster over p.
type ipfsCluster struct{ p *Peer }

var _ ipfsserve.Cluster = ipfsCluster{}

func (c ipfsCluster) Pin(root cid.Cid) (consensus.Pin, bool) { return c.p.cons.State().Get(root) }

func (c ipfsCluster) Local(b cid.Cid) ([]byte, error) { return c.p.store.Get(b) }

func (c ipfsCluster) Fetch(ctx context.Context, from peer.ID, b cid.Cid) ([]byte, error) {
	return c.p.readBlock(ctx, from, b)
}

func (c ipfsCluster) Members(ctx context.Context) []peer.ID { return backend{c.p}.members(ctx) }

func (c ipfsCluster) Self() peer.ID { return c.p.host.ID() }

// startGateway starts the gateway when gateway.listen is set.
func (p *Peer) startGateway() error {
	if p.cfg.Gateway.Listen == "" {
		return nil
	}
	src, err := ipfsserve.NewSource(ipfsCluster{p}, ipfsserve.DefaultSourceConfig())
	if err != nil {
		return err
	}
	gw, err := ipfsserve.NewGateway(ipfsserve.GatewayConfig{
		Listen:       p.cfg.Gateway.Listen,
		Deserialized: p.cfg.Gateway.Deserialized,
	}, src)
	if err != nil {
		return err
	}
	if err := gw.Start(); err != nil {
		gw.Close()
		return err
	}
	p.gateway = gw
	return nil
}

// IPFSCluster is the cluster as package ipfsserve reads it, for a Source
// of one's own (the package's tests count the reads through it).
func (p *Peer) IPFSCluster() ipfsserve.Cluster { return ipfsCluster{p} }

// GatewayURL is the trustless gateway's base URL, "" when it is off.
func (p *Peer) GatewayURL() string {
	if p.gateway == nil {
		return ""
	}
	return p.gateway.URL()
}
