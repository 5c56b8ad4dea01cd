package kuborpc

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"runtime"

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
