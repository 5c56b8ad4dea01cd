package p2p

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	ma "github.com/multiformats/go-multiaddr"
)

// PublicConfig configures a public host: the IPFS-facing one, which anyone
// may connect to.
type PublicConfig struct {
	PrivKey     crypto.PrivKey
	ListenAddrs []ma.Multiaddr
	// MaxConnections bounds its connections, inbound and outbound.
	MaxConnections int
	// MaxMemory bounds what its streams and connections may reserve.
	MaxMemory int64
}

// NewPublic starts a plain libp2p host for the public network: TCP, TLS
// 1.3 or Noise, yamux, identify and ping, as a Kubo node expects; no
// secret, no gate, no cluster protocol. Its resource manager is its own,
// so its load is bounded apart from the cluster host's, and a connection
// manager trims idle connections past three quarters of MaxConnections.
// The caller registers the protocols it serves and closes the host.
func NewPublic(cfg PublicConfig) (host.Host, error) {
	switch {
	case cfg.PrivKey == nil:
		return nil, errors.New("p2p: a public host needs a private key")
	case len(cfg.ListenAddrs) == 0:
		return nil, errors.New("p2p: a public host needs a listen address")
	case cfg.MaxConnections < 1:
		return nil, fmt.Errorf("p2p: max connections %d must be at least 1", cfg.MaxConnections)
	case cfg.MaxMemory < 1<<20:
		return nil, fmt.Errorf("p2p: max memory %d must be at least 1 MiB", cfg.MaxMemory)
	}
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	n := rcmgr.LimitVal(cfg.MaxConnections)
	concrete := rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{Conns: n, ConnsInbound: n, ConnsOutbound: n},
	}.Build(limits.Scale(cfg.MaxMemory, 4*cfg.MaxConnections))
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(concrete))
	if err != nil {
		return nil, fmt.Errorf("create the public host's resource manager: %w", err)
	}
	low := max(cfg.MaxConnections/2, 1)
	high := max(cfg.MaxConnections*3/4, low)
	cm, err := connmgr.NewConnManager(low, high, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		_ = rm.Close()
		return nil, err
	}
	h, err := libp2p.New(
		secureTCP(cfg.PrivKey, cfg.ListenAddrs),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.UserAgent("shoal"),
	)
	if err != nil {
		_ = rm.Close()
		_ = cm.Close()
		return nil, fmt.Errorf("start the public libp2p host on %v: %w", cfg.ListenAddrs, err)
	}
	return h, nil
}
