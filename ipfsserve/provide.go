package ipfsserve

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p-kad-dht/dual"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Provider announces to the IPFS DHT that the IPFS host holds the roots
// the cluster pins: roots only, never every block, since a client that
// found the host for a root fetches the rest of the DAG from it over the
// same connection (Bitswap serves the links of what it served). It runs
// the DHT in client mode (both the public one and the LAN one, as Kubo's
// dual DHT does): it answers no DHT queries, so a public host of the
// cluster does not become a DHT server for the whole network.
//
// One goroutine (run) owns the DHT's use: it joins through the bootstrap
// peers, provides every root not provided within the last Reprovide, and
// waits for a change of the pinset or for a minute to pass. Records on
// the DHT expire after 48 hours; an unpinned root is simply not provided
// again.
type Provider struct {
	cfg    ProviderConfig
	dht    *dual.DHT
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	provided map[cid.Cid]time.Time // roots provided, and when
}

// ProviderConfig configures a Provider.
type ProviderConfig struct {
	// Host is the IPFS-facing host, never the cluster's.
	Host host.Host
	// Bootstrap are the DHT peers to join through.
	Bootstrap []peer.AddrInfo
	// Roots returns the roots to provide; Changed a channel closed at the
	// next change of them (consensus.State's Changed).
	Roots   func() []cid.Cid
	Changed func() <-chan struct{}
	// Reprovide is how often each root is provided again.
	Reprovide time.Duration
	// Logf logs what a round could not do.
	Logf func(format string, args ...any)
	// LoopbackOnLAN keeps loopback addresses in what the LAN DHT
	// announces, which it leaves out by default, as Kubo's
	// Routing.LoopbackAddressesOnLanDHT does: for a host that listens on
	// loopback only, the records would otherwise name no address, and a
	// DHT server drops a provider record without one.
	LoopbackOnLAN bool
}

// provideTimeout bounds one root's provide: a DHT walk to the 20 closest
// peers, which takes seconds on the public network.
const provideTimeout = time.Minute

// StartProvider starts the DHT client and the providing goroutine.
func StartProvider(cfg ProviderConfig) (*Provider, error) {
	if cfg.Host == nil || cfg.Roots == nil || cfg.Changed == nil || cfg.Logf == nil {
		return nil, errors.New("ipfsserve: a provider needs a host, Roots, Changed and Logf")
	}
	if cfg.Reprovide < time.Minute {
		return nil, fmt.Errorf("ipfsserve: reprovide interval %s is below a minute", cfg.Reprovide)
	}
	opts := []dual.Option{dual.DHTOption(dht.Mode(dht.ModeClient), dht.BootstrapPeers(cfg.Bootstrap...))}
	if cfg.LoopbackOnLAN {
		opts = append(opts, dual.LanDHTOption(dht.AddressFilter(func(a []ma.Multiaddr) []ma.Multiaddr { return a })))
	}
	d, err := dual.New(cfg.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("start the DHT client: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Provider{cfg: cfg, dht: d, cancel: cancel, done: make(chan struct{}), provided: map[cid.Cid]time.Time{}}
	go p.run(ctx)
	return p, nil
}

// Close stops providing and the DHT client.
func (p *Provider) Close() error {
	p.cancel()
	<-p.done
	return p.dht.Close()
}

// Provided reports whether root was provided, and when.
func (p *Provider) Provided(root cid.Cid) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at, ok := p.provided[root]
	return at, ok
}

func (p *Provider) run(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		changed := p.cfg.Changed()
		p.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
	}
}

// round joins the DHT through the bootstrap peers it is not connected to,
// then provides each root that is due, one at a time.
func (p *Provider) round(ctx context.Context) {
	for _, ai := range p.cfg.Bootstrap {
		if len(p.cfg.Host.Network().ConnsToPeer(ai.ID)) > 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := p.cfg.Host.Connect(cctx, ai); err != nil && ctx.Err() == nil {
			p.cfg.Logf("DHT bootstrap peer %s: %v", ai.ID, err)
		}
		cancel()
	}
	now := time.Now()
	roots := p.cfg.Roots()
	live := make(map[cid.Cid]bool, len(roots))
	var failed int
	var lastErr error
	for _, c := range roots {
		live[c] = true
		if at, ok := p.Provided(c); ok && now.Sub(at) < p.cfg.Reprovide {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, provideTimeout)
		err := p.dht.Provide(cctx, c, true)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failed, lastErr = failed+1, err
			continue
		}
		p.mu.Lock()
		p.provided[c] = time.Now()
		p.mu.Unlock()
	}
	p.mu.Lock()
	for c := range p.provided {
		if !live[c] {
			delete(p.provided, c)
		}
	}
	p.mu.Unlock()
	if failed > 0 {
		p.cfg.Logf("provide %d of %d pinned roots to the DHT failed, to be tried again in a minute; the last: %v", failed, len(roots), lastErr)
	}
}
