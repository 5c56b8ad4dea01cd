package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ipfsserve"
	"github.com/shoal-project/shoal/p2p"
)

// Serving the cluster's content to IPFS clients (package ipfsserve): the
// trustless gateway (gateway.listen) and the bitswap server on the
// IPFS-facing host (ipfs.listen) read through ipfsCluster, the
// cluster as ipfsserve sees it: the local pinset, the local store, and
// other members' stores over /shoal/read/1 ("block CID", read.go).

// ipfsCluster implements ipfsserve.Cluster over p.
type ipfsCluster struct{ p *Peer }

var _ ipfsserve.Cluster = ipfsCluster{}

func (c ipfsCluster) Pin(root cid.Cid) (consensus.Pin, bool) { return c.p.cons.State().Get(root) }

func (c ipfsCluster) Local(b cid.Cid) ([]byte, error) { return c.p.store.Get(b) }

func (c ipfsCluster) Stored(b cid.Cid) (int, bool) { return c.p.store.Size(b) }

func (c ipfsCluster) Holding(b cid.Cid) (cid.Cid, bool) {
	key, ok := c.p.store.Locate(b)
	if !ok {
		return cid.Undef, false
	}
	k, err := cid.Decode(key)
	if err != nil {
		return cid.Undef, false
	}
	st := c.p.cons.State()
	if pin, ok := st.Get(k); ok && pin.Kind != consensus.KindSharded {
		return k, true
	}
	if t := b.Type(); t != cid.DagProtobuf && t != cid.Raw {
		return cid.Undef, false // a shard's list nodes, a cluster-DAG
	}
	return st.ShardOwner(k)
}

func (c ipfsCluster) Fetch(ctx context.Context, from peer.ID, b cid.Cid) ([]byte, error) {
	return c.p.readBlock(ctx, from, b)
}

func (c ipfsCluster) Members(ctx context.Context) []peer.ID { return backend{c.p}.members(ctx) }

// Shard opens sh from the first of its sources (shardSources: this peer,
// its holders, every other member) that has it, as cat and export do.
func (c ipfsCluster) Shard(ctx context.Context, sh consensus.Shard) (ipfsserve.ShardStream, error) {
	var errs []string
	for _, src := range c.p.shardSources(ctx, sh, c.Members(ctx)) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		sc, err := src.open()
		if err == nil {
			return shardStream{sc}, nil
		}
		errs = append(errs, fmt.Sprintf("%s: %v", src.name, err))
	}
	return nil, fmt.Errorf("no peer could serve shard %s: %s", sh.CID, strings.Join(errs, "; "))
}

// shardStream is a shardCopy as an ipfsserve.ShardStream.
type shardStream struct{ sc *shardCopy }

func (s shardStream) Next() (dag.Block, error) { return s.sc.next() }

func (s shardStream) Close() { s.sc.close() }

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

// ipfsNode is the IPFS-facing libp2p host and its bitswap server
// (ipfs.listen): a host apart from the cluster's, with its own key
// (config.IPFSIdentityFile), port and resource limits, that serves
// nothing but identify, ping and bitswap.
type ipfsNode struct {
	host     host.Host
	src      *ipfsserve.Source
	bitswap  *ipfsserve.Bitswap
	provider *ipfsserve.Provider // nil unless ipfs.provide
}

// publicMemory bounds what the IPFS host's connections and streams may
// reserve: a bitswap message is at most 4 MiB, and yamux windows are
// 16 MiB per stream at most.
const publicMemory = 256 << 20

// startIPFS starts the IPFS-facing host when ipfs.listen is set.
func (p *Peer) startIPFS() error {
	if len(p.cfg.IPFS.Listen) == 0 {
		return nil
	}
	priv, err := config.LoadIPFSIdentity(p.dir)
	if err != nil {
		return err
	}
	addrs := make([]ma.Multiaddr, 0, len(p.cfg.IPFS.Listen))
	for _, a := range p.cfg.IPFS.Listen {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return fmt.Errorf("ipfs listen address %q: %w", a, err)
		}
		addrs = append(addrs, m)
	}
	h, err := p2p.NewPublic(p2p.PublicConfig{PrivKey: priv, ListenAddrs: addrs,
		MaxConnections: p.cfg.IPFS.MaxConnections, MaxMemory: publicMemory})
	if err != nil {
		return err
	}
	src, err := ipfsserve.NewSource(ipfsCluster{p}, ipfsserve.DefaultSourceConfig())
	if err != nil {
		_ = h.Close()
		return err
	}
	p.ipfs = &ipfsNode{host: h, src: src, bitswap: ipfsserve.NewBitswap(h, src)}
	p.log("IPFS host %s serving pinned content over bitswap on %v", h.ID(), p.IPFSAddrs())
	if !p.cfg.IPFS.Provide {
		return nil
	}
	var boot []peer.AddrInfo
	for _, b := range p.cfg.IPFS.Bootstrap {
		ai, err := peer.AddrInfoFromString(b)
		if err != nil {
			return fmt.Errorf("ipfs bootstrap %q: %w", b, err)
		}
		boot = append(boot, *ai)
	}
	p.ipfs.provider, err = ipfsserve.StartProvider(ipfsserve.ProviderConfig{
		Host: h, Bootstrap: boot, Reprovide: time.Duration(p.cfg.IPFS.ReprovideInterval),
		Roots: func() []cid.Cid {
			var out []cid.Cid
			p.cons.State().Each(func(pin consensus.Pin) bool {
				out = append(out, pin.CID)
				return true
			})
			return out
		},
		Changed:       func() <-chan struct{} { return p.cons.State().Changed() },
		Logf:          p.log,
		LoopbackOnLAN: loopbackOnly(h.Addrs()),
	})
	if err != nil {
		return err
	}
	p.log("IPFS host %s provides the pinned roots to the DHT (client mode, %d bootstrap peers)", h.ID(), len(boot))
	return nil
}

func (n *ipfsNode) close() error {
	var errs []error
	if n.provider != nil {
		errs = append(errs, n.provider.Close())
	}
	n.bitswap.Close()
	n.src.Close()
	return errors.Join(append(errs, n.host.Close())...)
}

// IPFSID is the IPFS-facing host's peer ID, "" when ipfs.listen is empty.
func (p *Peer) IPFSID() string {
	if p.ipfs == nil {
		return ""
	}
	return p.ipfs.host.ID().String()
}

// IPFSAddrs are the IPFS-facing host's addresses, each with /p2p/ID, as
// `ipfs swarm connect` takes them; nil when ipfs.listen is empty.
func (p *Peer) IPFSAddrs() []string {
	if p.ipfs == nil {
		return nil
	}
	var out []string
	for _, a := range p.ipfs.host.Addrs() {
		out = append(out, a.String()+"/p2p/"+p.ipfs.host.ID().String())
	}
	return out
}

// BitswapStat is what the bitswap server has sent; an error when
// ipfs.listen is empty.
func (p *Peer) BitswapStat() (ipfsserve.BitswapStat, error) {
	if p.ipfs == nil {
		return ipfsserve.BitswapStat{}, errors.New("the IPFS host is off (ipfs.listen is empty)")
	}
	return p.ipfs.bitswap.Stat()
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

// loopbackOnly reports whether every address is a loopback one.
func loopbackOnly(addrs []ma.Multiaddr) bool {
	for _, a := range addrs {
		if !manet.IsIPLoopback(a) {
			return false
		}
	}
	return len(addrs) > 0
}
