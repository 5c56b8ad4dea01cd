package p2p

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"
)

// SecretSize is the length in bytes of the cluster secret.
const SecretSize = 32

// Config configures a Host. Build it with DefaultConfig, set ListenAddrs,
// PrivKey and Secret, and call Validate (New calls it too). New never
// modifies the Config it is given.
type Config struct {
	// ListenAddrs are the TCP multiaddrs to listen on, e.g.
	// /ip4/0.0.0.0/tcp/9096. Port 0 picks a free port.
	ListenAddrs []ma.Multiaddr

	// PrivKey is the peer's identity key; its peer ID is the peer's name in
	// the cluster and in the Raft configuration.
	PrivKey crypto.PrivKey

	// Secret is the cluster secret, SecretSize random bytes shared by every
	// peer of the cluster. It is never sent: the join handshake proves
	// possession with HMAC-SHA256 over fresh nonces.
	Secret []byte

	// AdmissionTTL is how long a peer that proved the secret in a join
	// handshake may open gated protocols without being a member. It must
	// outlast the time the join hook takes to add the peer to Raft and the
	// time the new peer needs to receive the Raft configuration.
	AdmissionTTL time.Duration

	// HandshakeTimeout bounds each read and write of the join handshake, so
	// a peer that connects and stays silent holds a handler for no longer.
	HandshakeTimeout time.Duration

	// JoinHookTimeout bounds the OnJoin hook (adding the peer to Raft,
	// possibly through the leader).
	JoinHookTimeout time.Duration

	// MaxConcurrentJoins caps the join handshakes served at once; extra
	// ones are reset. The join protocol is the only one open to peers that
	// do not hold the secret, so this bounds what they can cost us.
	MaxConcurrentJoins int

	// MaxMemory is the memory the libp2p resource manager lets connections
	// and streams reserve (mostly yamux receive windows).
	MaxMemory int64

	// MaxFileDescriptors is the number of file descriptors (one per TCP
	// connection) the resource manager allows.
	MaxFileDescriptors int
}

// DefaultConfig returns a Config with every field but PrivKey and Secret set.
func DefaultConfig() Config {
	return Config{
		// A LAN cluster on the standard-ish port of its field (IPFS Cluster
		// uses 9096 for its cluster swarm).
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/0.0.0.0/tcp/9096")},
		// Ten minutes: adding a peer to Raft takes at most a few election
		// timeouts; the rest is slack for a slow leader election meanwhile.
		AdmissionTTL: 10 * time.Minute,
		// Ten seconds per message: a handshake is 4 small messages on an
		// established connection, so a honest peer needs milliseconds.
		HandshakeTimeout: 10 * time.Second,
		// Thirty seconds: the hook may wait for a leader (seconds) and then
		// for a Raft configuration change to commit.
		JoinHookTimeout: 30 * time.Second,
		// Joins are rare (an operator adds a peer); 8 at once is plenty and
		// bounds the goroutines and reads a stranger can make us do.
		MaxConcurrentJoins: 8,
		// 1 GiB, the cap libp2p's own default uses: one stream at full speed
		// grows its yamux window to 16 MiB, so this allows ~64 such streams.
		MaxMemory: 1 << 30,
		// 4096 connections plus slack is far more than a cluster of tens of
		// peers needs, and under the common 'ulimit -n' of 1024*8.
		MaxFileDescriptors: 4096,
	}
}

// Validate reports the first problem with the configuration.
func (c Config) Validate() error {
	switch {
	case len(c.ListenAddrs) == 0:
		return fmt.Errorf("p2p config: ListenAddrs is empty: %w", ErrInvalidConfig)
	case c.PrivKey == nil:
		return fmt.Errorf("p2p config: PrivKey is not set: %w", ErrInvalidConfig)
	case len(c.Secret) != SecretSize:
		return fmt.Errorf("p2p config: Secret is %d bytes, want %d: %w", len(c.Secret), SecretSize, ErrInvalidConfig)
	case c.HandshakeTimeout <= 0:
		return fmt.Errorf("p2p config: HandshakeTimeout must be positive: %w", ErrInvalidConfig)
	case c.JoinHookTimeout <= 0:
		return fmt.Errorf("p2p config: JoinHookTimeout must be positive: %w", ErrInvalidConfig)
	case c.AdmissionTTL < c.JoinHookTimeout:
		// An admission that expires before the hook that adds the peer to
		// Raft has finished leaves the peer unable to receive the
		// configuration that makes it a member.
		return fmt.Errorf("p2p config: AdmissionTTL (%s) must be at least JoinHookTimeout (%s): %w",
			c.AdmissionTTL, c.JoinHookTimeout, ErrInvalidConfig)
	case c.MaxConcurrentJoins < 1:
		return fmt.Errorf("p2p config: MaxConcurrentJoins must be at least 1: %w", ErrInvalidConfig)
	case c.MaxMemory < 64<<20:
		return fmt.Errorf("p2p config: MaxMemory %d is below 64 MiB: %w", c.MaxMemory, ErrInvalidConfig)
	case c.MaxFileDescriptors < 64:
		return fmt.Errorf("p2p config: MaxFileDescriptors %d is below 64: %w", c.MaxFileDescriptors, ErrInvalidConfig)
	}
	for _, a := range c.ListenAddrs {
		if _, err := a.ValueForProtocol(ma.P_TCP); err != nil {
			return fmt.Errorf("p2p config: listen address %s is not TCP: %w", a, ErrInvalidConfig)
		}
	}
	return nil
}
