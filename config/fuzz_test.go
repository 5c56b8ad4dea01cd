package config

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// fuzzDir is a peer directory made by Init, and its two files.
func fuzzDir(f *testing.F) (dir string, cfgJSON, key []byte) {
	f.Helper()
	dir = filepath.Join(f.TempDir(), "peer")
	if _, err := Init(dir, validConfig()); err != nil {
		f.Fatal(err)
	}
	cfgJSON, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		f.Fatal(err)
	}
	key, err = os.ReadFile(filepath.Join(dir, IdentityFile))
	if err != nil {
		f.Fatal(err)
	}
	return dir, cfgJSON, key
}

// FuzzLoadConfig loads arbitrary bytes as config.json. Load refuses them
// with an error that names the file, or returns a config that is the one
// JSON object of the file, passes Validate, and survives Save and Load
// unchanged.
func FuzzLoadConfig(f *testing.F) {
	dir, good, key := fuzzDir(f)
	f.Add(good)
	full := validConfig()
	full.PeerName = "full"
	full.API.BasicAuth = map[string]string{"admin": "secret"}
	full.API.BearerTokens = []string{"token"}
	full.Pinning.ReplicationMin, full.Pinning.ReplicationMax = 2, 3
	if b, err := json.Marshal(full); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"secret":"` + strings.Repeat("ab", 32) + `","api":{"listen":"0.0.0.0:9094"}}`))
	f.Add([]byte(`{"secret":"` + strings.Repeat("ab", 32) + `","consensus":{"heartbeat_timeout":"-1s"}}`))
	f.Add([]byte(`{"secret":"` + strings.Repeat("ab", 32) + `","capacity":"12 ZiB"}`))
	f.Add([]byte(`{"unknown_field":1}`))
	f.Add(append(bytes.Clone(good), good...))
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	dir2 := filepath.Join(f.TempDir(), "again")
	if err := os.MkdirAll(dir2, 0o700); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir2, IdentityFile), key, 0o600); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		path := filepath.Join(dir, ConfigFile)
		if err := os.WriteFile(path, in, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, priv, err := Load(dir)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name %s", err, path)
			}
			return
		}
		if !json.Valid(in) {
			t.Fatalf("Load accepted %q, which is not one JSON value", in)
		}
		if priv == nil {
			t.Fatal("a config without its key")
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Load accepted a config Validate refuses: %v", err)
		}
		if err := Save(dir2, cfg); err != nil {
			t.Fatalf("save the loaded config: %v", err)
		}
		again, _, err := Load(dir2)
		if err != nil || !reflect.DeepEqual(again, cfg) {
			t.Fatalf("config %q saved and loaded is %+v, %v; want %+v", in, again, err, cfg)
		}
	})
}

// FuzzLoadIdentity loads arbitrary bytes as identity.key. Load refuses
// them with an error, or returns a key whose signatures its own public
// key verifies and that names a peer: a peer cannot start with a key
// that would fail every handshake.
func FuzzLoadIdentity(f *testing.F) {
	dir, _, key := fuzzDir(f)
	f.Add(key)
	for _, typ := range []int{crypto.Secp256k1, crypto.ECDSA} {
		sk, _, err := crypto.GenerateKeyPairWithReader(typ, 256, rand.Reader)
		if err != nil {
			f.Fatal(err)
		}
		b, err := crypto.MarshalPrivateKey(sk)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(key[:len(key)-1])
	flipped := bytes.Clone(key)
	flipped[len(flipped)-1] ^= 1 // in the public half of the Ed25519 key
	f.Add(flipped)
	f.Add([]byte{0x08, 0x00, 0x12, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		if err := os.WriteFile(filepath.Join(dir, IdentityFile), in, 0o600); err != nil {
			t.Fatal(err)
		}
		_, priv, err := Load(dir)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if _, err := peer.IDFromPrivateKey(priv); err != nil {
			t.Fatalf("key %x accepted, names no peer: %v", in, err)
		}
		sig, err := priv.Sign([]byte("shoal"))
		if err != nil {
			t.Fatalf("key %x accepted, cannot sign: %v", in, err)
		}
		if ok, err := priv.GetPublic().Verify([]byte("shoal"), sig); !ok || err != nil {
			t.Fatalf("key %x accepted, its public key refuses its signature: %v", in, err)
		}
	})
}
