// Package clustertest holds what tests of several packages need to start
// in-process shoal peers: one config, so that they agree on the timings
// a loaded test machine tolerates.
package clustertest

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/shoal-project/shoal/config"
)

// Config is peer i's config in an in-process test cluster: named peerI,
// one fixed secret, libp2p and the API on loopback ports the system
// picks, replication 1 to 2, and Raft timings short enough for fast
// elections yet long enough that two loaded cores (go test runs packages
// side by side under -race) do not make the leader step down mid-test.
func Config(i int) config.Config {
	secret := make([]byte, 32)
	for j := range secret {
		secret[j] = byte(j)
	}
	cfg := config.Default()
	cfg.PeerName = fmt.Sprintf("peer%d", i)
	cfg.Secret = hex.EncodeToString(secret)
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.API.Listen = "127.0.0.1:0"
	cfg.Pinning.ReplicationMin, cfg.Pinning.ReplicationMax = 1, 2
	cfg.Consensus.HeartbeatTimeout = config.Duration(500 * time.Millisecond)
	cfg.Consensus.ElectionTimeout = config.Duration(500 * time.Millisecond)
	cfg.Consensus.LeaderLeaseTimeout = config.Duration(250 * time.Millisecond)
	cfg.Consensus.CommitTimeout = config.Duration(20 * time.Millisecond)
	cfg.Consensus.WaitForLeaderTimeout = config.Duration(5 * time.Second)
	return cfg
}
