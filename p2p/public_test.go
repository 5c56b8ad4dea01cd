package p2p

import (
	"crypto/rand"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"
)

// TestNewPublic: a public host runs identify and ping and no cluster
// protocol, not even the join handshake; a config it cannot run is one
// sentence.
func TestNewPublic(t *testing.T) {
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	addrs := []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	h, err := NewPublic(PublicConfig{PrivKey: priv, ListenAddrs: addrs, MaxConnections: 8, MaxMemory: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, p := range h.Mux().Protocols() {
		if p == JoinProtocol {
			t.Errorf("the public host serves %s", p)
		}
	}
	if len(h.Addrs()) == 0 {
		t.Fatal("the public host listens nowhere")
	}
	for _, tc := range []struct {
		cfg  PublicConfig
		want string
	}{
		{PublicConfig{ListenAddrs: addrs, MaxConnections: 8, MaxMemory: 64 << 20}, "p2p: a public host needs a private key"},
		{PublicConfig{PrivKey: priv, MaxConnections: 8, MaxMemory: 64 << 20}, "p2p: a public host needs a listen address"},
		{PublicConfig{PrivKey: priv, ListenAddrs: addrs, MaxMemory: 64 << 20}, "p2p: max connections 0 must be at least 1"},
		{PublicConfig{PrivKey: priv, ListenAddrs: addrs, MaxConnections: 8, MaxMemory: 1000}, "p2p: max memory 1000 must be at least 1 MiB"},
	} {
		if h, err := NewPublic(tc.cfg); err == nil || err.Error() != tc.want {
			if h != nil {
				h.Close()
			}
			t.Errorf("NewPublic: %v, want %q", err, tc.want)
		}
	}
}
