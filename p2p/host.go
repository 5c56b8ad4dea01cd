package p2p

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	goyamux "github.com/libp2p/go-yamux/v5"
	ma "github.com/multiformats/go-multiaddr"
)

// Membership tells the Host which peers belong to the cluster. The
// consensus component implements it from the Raft configuration.
type Membership interface {
	// IsMember reports whether id is in the cluster. The Host calls it from
	// libp2p's stream-handler goroutines, once per inbound stream on a gated
	// protocol, so it must be safe for concurrent use and must not block.
	IsMember(id peer.ID) bool
}

// JoinFunc is the hook the accepting Host calls once a peer has proved the
// cluster secret in a join handshake (the daemon adds the peer to Raft).
// It runs on the handshake's goroutine with a context bounded by
// Config.JoinHookTimeout and cancelled by Close; addrs are the listen
// addresses the peer announced, already in the peerstore. A non-nil error
// refuses the join; its text is sent to the joining peer, so it should be
// one clear sentence.
type JoinFunc func(ctx context.Context, id peer.ID, addrs []ma.Multiaddr) error

// Host is a libp2p host whose protocols, but the join handshake, only serve
// cluster members and admitted peers. Its methods are safe for concurrent
// use.
type Host struct {
	h     host.Host
	cfg   Config
	gater *gater
	admit *admissions

	members atomic.Pointer[memberBox]
	onJoin  atomic.Pointer[JoinFunc]

	joinSlots chan struct{} // one token per join handshake being served

	// mu and closed guard handlers: a handler starts only while the Host
	// is open, so Close can wait for all of them.
	mu       sync.Mutex
	closed   bool
	closing  chan struct{}
	handlers sync.WaitGroup
}

type memberBox struct{ m Membership }

// New starts a libp2p host listening on cfg.ListenAddrs: TCP only, TLS 1.3
// (or Noise, for peers that offer only Noise) for encryption and peer
// authentication, yamux streams; no relay, NAT
// traversal, mDNS, DHT or ping. members may be nil (nobody is a member
// yet) and can be set later with SetMembership.
func New(cfg Config, members Membership) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.ListenAddrs = slices.Clone(cfg.ListenAddrs)
	cfg.Secret = slices.Clone(cfg.Secret)

	rm, err := resourceManager(cfg)
	if err != nil {
		return nil, fmt.Errorf("create libp2p resource manager: %w", err)
	}
	g := newGater()
	lh, err := libp2p.New(
		secureTCP(cfg.PrivKey, cfg.ListenAddrs),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionGater(g),
		// Cluster connections carry Raft heartbeats and shard transfers;
		// a trimming connection manager would only cut them. The resource
		// manager bounds the number of connections instead.
		libp2p.ConnectionManager(&connmgr.NullConnMgr{}),
		libp2p.DisableRelay(),
		libp2p.Ping(false),
		libp2p.DisableMetrics(),
		libp2p.UserAgent("shoal"),
	)
	if err != nil {
		_ = rm.Close()
		return nil, fmt.Errorf("start libp2p host on %v: %w", cfg.ListenAddrs, err)
	}
	h := &Host{
		h:         lh,
		cfg:       cfg,
		gater:     g,
		admit:     newAdmissions(),
		joinSlots: make(chan struct{}, cfg.MaxConcurrentJoins),
		closing:   make(chan struct{}),
	}
	h.SetMembership(members)
	lh.SetStreamHandler(JoinProtocol, h.track(h.serveJoin))
	return h, nil
}

// resourceManager scales libp2p's default limits to cfg's memory and file
// descriptors, and gives the join protocol, the one strangers can open, a
// small budget of its own.
func resourceManager(cfg Config) (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	joins := cfg.MaxConcurrentJoins
	limits.AddProtocolLimit(JoinProtocol,
		rcmgr.BaseLimit{StreamsInbound: joins, StreamsOutbound: joins, Streams: 2 * joins, Memory: 4 << 20},
		rcmgr.BaseLimitIncrease{})
	limits.AddProtocolPeerLimit(JoinProtocol,
		rcmgr.BaseLimit{StreamsInbound: 2, StreamsOutbound: 2, Streams: 4, Memory: 1 << 20},
		rcmgr.BaseLimitIncrease{})
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.Scale(cfg.MaxMemory, cfg.MaxFileDescriptors)))
}

// ID returns the peer ID of this host.
func (h *Host) ID() peer.ID { return h.h.ID() }

// Addrs returns the addresses this host listens on, each ending in
// /p2p/<ID> so that it can be handed to Join or Connect as is.
func (h *Host) Addrs() []ma.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: h.h.ID(), Addrs: h.h.Addrs()})
	if err != nil { // only for an empty ID, which a running host does not have
		return nil
	}
	return addrs
}

// SetMembership replaces the source of truth for IsMember; nil means no
// peer is a member. It exists because the membership (Raft) is built on
// top of the Host.
func (h *Host) SetMembership(m Membership) { h.members.Store(&memberBox{m: m}) }

// SetOnJoin sets the hook called for each peer that joins through this
// host; until it is set, joins are refused.
func (h *Host) SetOnJoin(fn JoinFunc) {
	if fn == nil {
		h.onJoin.Store(nil)
		return
	}
	h.onJoin.Store(&fn)
}

// Allowed reports whether id may open gated protocols: it is a member, or
// it proved the cluster secret within the last AdmissionTTL.
func (h *Host) Allowed(id peer.ID) bool {
	if b := h.members.Load(); b.m != nil && b.m.IsMember(id) {
		return true
	}
	return h.admit.admitted(id, time.Now())
}

// Handle serves protocol p with handler, for members and admitted peers
// only: a stream from anyone else is reset before a byte of it is read or
// written. handler runs on its own goroutine per stream, owns the stream
// and must close or reset it; it must return once the stream is reset,
// since Close waits for running handlers.
func (h *Host) Handle(p protocol.ID, handler network.StreamHandler) {
	h.h.SetStreamHandler(p, h.track(func(s network.Stream) {
		if !h.Allowed(s.Conn().RemotePeer()) {
			_ = s.Reset()
			return
		}
		handler(s)
	}))
}

// RemoveHandler stops serving protocol p.
func (h *Host) RemoveHandler(p protocol.ID) { h.h.RemoveStreamHandler(p) }

// track wraps a stream handler so that Close waits for it and so that no
// handler starts once Close has begun.
func (h *Host) track(handler network.StreamHandler) network.StreamHandler {
	return func(s network.Stream) {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			_ = s.Reset()
			return
		}
		h.handlers.Add(1)
		h.mu.Unlock()
		defer h.handlers.Done()
		handler(s)
	}
}

// NewStream opens a stream to id speaking the first protocol of protocols
// that id supports, connecting first if needed (from the peerstore's
// addresses).
func (h *Host) NewStream(ctx context.Context, id peer.ID, protocols ...protocol.ID) (network.Stream, error) {
	s, err := h.h.NewStream(ctx, id, protocols...)
	if err != nil {
		return nil, fmt.Errorf("open %v stream to %s: %w", protocols, id, err)
	}
	return s, nil
}

// Connect connects to the peer at info, adding its addresses to the
// peerstore.
func (h *Host) Connect(ctx context.Context, info peer.AddrInfo) error {
	if err := h.h.Connect(ctx, info); err != nil {
		return fmt.Errorf("connect to %s: %w", info.ID, err)
	}
	return nil
}

// Connected reports whether there is an open connection to id.
func (h *Host) Connected(id peer.ID) bool {
	return h.h.Network().Connectedness(id) == network.Connected
}

// AddAddrs records addresses of id in the peerstore for good (until Close);
// NewStream dials them.
func (h *Host) AddAddrs(id peer.ID, addrs []ma.Multiaddr) {
	if id == h.h.ID() || len(addrs) == 0 {
		return
	}
	h.h.Peerstore().AddAddrs(id, addrs, peerstore.PermanentAddrTTL)
}

// PeerAddrs returns the addresses of id the peerstore knows.
func (h *Host) PeerAddrs(id peer.ID) []ma.Multiaddr { return h.h.Peerstore().Addrs(id) }

// Block closes every connection to id and refuses new ones in both
// directions until Unblock. The daemon can use it to shut out a removed
// peer; tests use it to partition a cluster.
func (h *Host) Block(id peer.ID) {
	h.gater.set(id, true)
	_ = h.h.Network().ClosePeer(id)
}

// Unblock lets id connect again.
func (h *Host) Unblock(id peer.ID) { h.gater.set(id, false) }

// Blocked reports whether id is blocked.
func (h *Host) Blocked(id peer.ID) bool { return h.gater.isBlocked(id) }

// Close closes every connection and listener and waits for the stream
// handlers, which return once their streams are reset.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	close(h.closing)
	h.mu.Unlock()
	err := h.h.Close()
	h.handlers.Wait()
	if err != nil {
		return fmt.Errorf("close libp2p host %s: %w", h.h.ID(), err)
	}
	return nil
}

// streamWindow is each yamux stream's receive window from its start. The
// default, 256 KiB, grows only when window updates come back within four
// round trips, which on a fast link they rarely do: a shard stream then
// waits for an update every 256 KiB, with both ends idle in between. A
// window costs memory only while its reader lags.
const streamWindow = 4 << 20

// muxer is libp2p's yamux with the larger initial window.
// secureTCP is what both hosts speak: priv's identity on addrs, TCP only,
// TLS 1.3 (or Noise, for peers that offer only Noise), yamux streams.
func secureTCP(priv crypto.PrivKey, addrs []ma.Multiaddr) libp2p.Option {
	return libp2p.ChainOptions(
		libp2p.Identity(priv),
		libp2p.ListenAddrs(addrs...),
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, muxer()),
	)
}

func muxer() *yamux.Transport {
	cfg := goyamux.Config(*yamux.DefaultTransport)
	cfg.InitialStreamWindowSize = streamWindow
	return (*yamux.Transport)(&cfg)
}
