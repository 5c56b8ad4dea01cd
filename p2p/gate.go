package p2p

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// admissions records the peers that proved the cluster secret, each until
// an expiry time. Its mutex owns the map.
type admissions struct {
	mu    sync.Mutex
	until map[peer.ID]time.Time
}

func newAdmissions() *admissions {
	return &admissions{until: make(map[peer.ID]time.Time)}
}

// admit lets id in until now+ttl, extending an earlier admission.
func (a *admissions) admit(id peer.ID, now time.Time, ttl time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Drop expired entries on every insert, so the map holds at most the
	// peers admitted within one TTL: admissions need the secret, so this is
	// bounded by what members do, not by strangers.
	for p, t := range a.until {
		if !now.Before(t) {
			delete(a.until, p)
		}
	}
	if t := now.Add(ttl); t.After(a.until[id]) {
		a.until[id] = t
	}
}

// admitted reports whether id is admitted at time now.
func (a *admissions) admitted(id peer.ID, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.until[id]
	return ok && now.Before(t)
}

// gater refuses connections to and from blocked peers. Its mutex owns the
// set. It implements libp2p's ConnectionGater; libp2p calls it from its
// dialing and accepting goroutines.
type gater struct {
	mu      sync.RWMutex
	blocked map[peer.ID]struct{}
}

var _ connmgr.ConnectionGater = (*gater)(nil)

func newGater() *gater { return &gater{blocked: make(map[peer.ID]struct{})} }

func (g *gater) set(id peer.ID, block bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if block {
		g.blocked[id] = struct{}{}
	} else {
		delete(g.blocked, id)
	}
}

func (g *gater) isBlocked(id peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	_, ok := g.blocked[id]
	return ok
}

func (g *gater) InterceptPeerDial(p peer.ID) bool                 { return !g.isBlocked(p) }
func (g *gater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return !g.isBlocked(p) }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !g.isBlocked(p)
}
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
