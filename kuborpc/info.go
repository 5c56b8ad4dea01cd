package kuborpc

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"runtime"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// idOutput is Kubo's answer to id.
type idOutput struct {
	ID           string
	PublicKey    string
	Addresses    []string
	AgentVersion string
	Protocols    []string
}

// id answers with this peer's cluster identity: its peer ID, key and
// cluster addresses (not an IPFS node's: the cluster host speaks no IPFS
// protocol; ipfs.listen's host is in the REST API's /id).
func (h *handler) id(w http.ResponseWriter, r *http.Request, q url.Values) error {
	if len(q["arg"]) > 0 {
		return clientErr("shoal answers id for itself only, not for another peer")
	}
	me := h.b.ID(r.Context())
	out := idOutput{ID: me.ID, Addresses: me.Addresses, AgentVersion: "shoal/" + h.cfg.Version, Protocols: []string{}}
	if out.Addresses == nil {
		out.Addresses = []string{}
	}
	if pid, err := peer.Decode(me.ID); err == nil {
		if pk, err := pid.ExtractPublicKey(); err == nil {
			if b, err := crypto.MarshalPublicKey(pk); err == nil {
				out.PublicKey = base64.StdEncoding.EncodeToString(b)
			}
		}
	}
	writeValue(w, out)
	return nil
}

// versionOutput is Kubo's answer to version.
type versionOutput struct {
	Version string
	Commit  string
	Repo    string
	System  string
	Golang  string
}

// KuboVersion is the Kubo release whose RPC API shoal speaks, which
// version answers: Kubo's CLI calls version before every command and
// needs a semantic version (at least 0.23.0 for the Abspath-Encoded
// header of its uploads). Commit names shoal's own version.
const KuboVersion = "0.43.1"

// version answers with the Kubo API's version, and shoal's as Commit.
func (h *handler) version(w http.ResponseWriter, _ *http.Request, _ url.Values) error {
	writeValue(w, versionOutput{Version: KuboVersion, Commit: "shoal-" + h.cfg.Version, Repo: "shoal",
		System: runtime.GOARCH + "/" + runtime.GOOS, Golang: runtime.Version()})
	return nil
}

// repoStatOutput is Kubo's answer to repo/stat.
type repoStatOutput struct {
	RepoSize   uint64
	StorageMax uint64
	NumObjects uint64
	RepoPath   string
	Version    string
}

// repoStat sums the cluster's storage: bytes held and capacity over the
// peers that answered. NumObjects is 0: peers count shards, not blocks.
func (h *handler) repoStat(w http.ResponseWriter, r *http.Request, _ url.Values) error {
	peers, err := h.b.Peers(r.Context())
	if err != nil {
		return err
	}
	var out repoStatOutput
	for _, p := range peers {
		if p.Alive {
			out.RepoSize += uint64(max(p.Used, 0))
			out.StorageMax += uint64(max(p.Capacity, 0))
		}
	}
	out.Version = "shoal-cluster"
	writeValue(w, out)
	return nil
}

// swarmPeer is one entry of Kubo's swarm/peers.
type swarmPeer struct {
	Addr     string `json:",omitempty"`
	Peer     string
	Identify idOutput
}

// swarmPeers lists the cluster's other peers that answered, at their
// first cluster address: shoal's swarm is its cluster.
func (h *handler) swarmPeers(w http.ResponseWriter, r *http.Request, _ url.Values) error {
	peers, err := h.b.Peers(r.Context())
	if err != nil {
		return err
	}
	self := h.b.ID(r.Context()).ID
	out := struct{ Peers []swarmPeer }{Peers: []swarmPeer{}}
	for _, p := range peers {
		if !p.Alive || p.ID == self {
			continue
		}
		sp := swarmPeer{Peer: p.ID}
		if len(p.Addresses) > 0 {
			a, _, _ := strings.Cut(p.Addresses[0], "/p2p/")
			sp.Addr = a
		}
		out.Peers = append(out.Peers, sp)
	}
	writeValue(w, out)
	return nil
}
