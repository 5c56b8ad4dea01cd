package config

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestIPFS: the IPFS host is off by default; its addresses must be
// multiaddrs not shared with the cluster host, its connection bound in
// 1..65536; its key is made once and then loaded, and a damaged one is
// refused.
func TestIPFS(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want string // "" valid
	}{
		{"default", func(*Config) {}, ""},
		{"on", func(c *Config) { c.IPFS.Listen = []string{"/ip4/0.0.0.0/tcp/4001"} }, ""},
		{"port 0 twice", func(c *Config) { c.Listen = []string{"/ip4/127.0.0.1/tcp/0"}; c.IPFS.Listen = c.Listen }, ""},
		{"not a multiaddr", func(c *Config) { c.IPFS.Listen = []string{"0.0.0.0:4001"} },
			`config: ipfs listen address "0.0.0.0:4001" is not a multiaddr: failed to parse multiaddr "0.0.0.0:4001": must begin with /`},
		{"the cluster's", func(c *Config) { c.IPFS.Listen = c.Listen },
			"config: ipfs listen /ip4/0.0.0.0/tcp/9096 is a cluster listen address too; give the IPFS host a port of its own"},
		{"no connections", func(c *Config) { c.IPFS.MaxConnections = 0 }, "config: ipfs max_connections 0 is not in 1..65536"},
		{"provide", func(c *Config) {
			c.IPFS.Listen, c.IPFS.Provide = []string{"/ip4/0.0.0.0/tcp/4001"}, true
			c.IPFS.Bootstrap = []string{"/ip4/127.0.0.1/tcp/4002/p2p/12D3KooWGYvWNWPYbWn9zdcGRiem8xgSpwEsxTtTR9qD6TSWFKbv"}
		}, ""},
		{"provide without a host", func(c *Config) { c.IPFS.Provide = true },
			"config: ipfs provide is on but ipfs listen is empty: the records would name a host that does not run"},
		{"bootstrap without an ID", func(c *Config) { c.IPFS.Bootstrap = []string{"/ip4/127.0.0.1/tcp/4002"} },
			`config: ipfs bootstrap "/ip4/127.0.0.1/tcp/4002" is not a multiaddr ending in /p2p/PEERID: invalid p2p multiaddr`},
		{"reprovide too often", func(c *Config) { c.IPFS.ReprovideInterval = Duration(time.Second) },
			"config: ipfs reprovide_interval 1s is not in 1m..47h (DHT records expire after 48h)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
			tc.edit(&c)
			err := c.Validate()
			if (err == nil) != (tc.want == "") || (err != nil && err.Error() != tc.want) {
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
	if d := Default(); len(d.IPFS.Listen) != 0 || d.IPFS.MaxConnections != 512 || d.IPFS.Provide || len(d.IPFS.Bootstrap) != 0 ||
		d.IPFS.ReprovideInterval != Duration(12*time.Hour) {
		t.Fatalf("default ipfs %+v", d.IPFS)
	}

	dir := t.TempDir()
	k1, err := LoadIPFSIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadIPFSIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	id1, _ := peer.IDFromPrivateKey(k1)
	id2, _ := peer.IDFromPrivateKey(k2)
	if id1 != id2 {
		t.Fatalf("the IPFS key changed between loads: %s, then %s", id1, id2)
	}
	path := filepath.Join(dir, IPFSIdentityFile)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, mode %v", path, err, fi.Mode())
	}
	if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIPFSIdentity(dir); err == nil || !bytes.HasPrefix([]byte(err.Error()), []byte(path+" is not a libp2p private key: ")) {
		t.Fatalf("a damaged key: %v", err)
	}
}
