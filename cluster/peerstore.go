package cluster

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-project/shoal/config"
)

// peerstoreFile keeps the last known addresses of the cluster's members,
// so that a peer restarted after the whole cluster went down can reach the
// others: libp2p's peerstore lives in memory only.
const peerstoreFile = "peerstore.json"

// loadPeerstore adds the saved member addresses to the host. A missing or
// unreadable file only means the peer relies on --bootstrap.
func (p *Peer) loadPeerstore() {
	b, err := os.ReadFile(filepath.Join(p.dir, peerstoreFile))
	if err != nil {
		return
	}
	var saved map[string][]string
	if err := json.Unmarshal(b, &saved); err != nil {
		p.log("ignoring %s: %v", peerstoreFile, err)
		return
	}
	for id, addrs := range saved {
		pid, err := peer.Decode(id)
		if err != nil || pid == p.host.ID() {
			continue
		}
		var ms []ma.Multiaddr
		for _, a := range addrs {
			if m, err := ma.NewMultiaddr(a); err == nil {
				ms = append(ms, m)
			}
		}
		p.host.AddAddrs(pid, ms)
	}
}

// savePeerstore writes the addresses of the current members.
func (p *Peer) savePeerstore(ctx context.Context) {
	members, err := p.cons.Peers(ctx)
	if err != nil {
		return
	}
	saved := map[string][]string{}
	for _, m := range members {
		if m.ID == p.host.ID() {
			continue
		}
		for _, a := range p.host.PeerAddrs(m.ID) {
			saved[m.ID.String()] = append(saved[m.ID.String()], a.String())
		}
	}
	b, err := json.MarshalIndent(saved, "", "  ")
	if err != nil {
		return
	}
	// Best effort: the next save, seconds later, tries again.
	_ = config.WriteFileAtomic(filepath.Join(p.dir, peerstoreFile), b)
}

// persistPeerstore saves the member addresses every few seconds.
func (p *Peer) persistPeerstore(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.savePeerstore(ctx)
		}
	}
}
