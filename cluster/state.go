package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/store"
)

// ErrRunning: a state tool found the peer's daemon running.
var ErrRunning = errors.New("its daemon is running")

// Offline is a peer's directory opened for the state tools (shoal state
// export, import, cleanup) while its daemon is stopped. It holds the
// store's lock, which the daemon takes when it starts, so no daemon runs
// on the directory until Close.
type Offline struct {
	dir     string
	id      peer.ID
	release func() error
}

// OpenOffline opens the peer directory dir: it reads its identity and
// config, and takes its lock, failing with ErrRunning if the daemon holds
// it.
func OpenOffline(dir string) (*Offline, error) {
	_, key, err := config.Load(dir)
	if err != nil {
		return nil, err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%s: identity: %w", dir, err)
	}
	release, err := store.Lock(filepath.Join(dir, config.StoreDir))
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("peer %s in %s: %w; stop it first", id, dir, ErrRunning)
	}
	if err != nil {
		return nil, err
	}
	return &Offline{dir: dir, id: id, release: release}, nil
}

// ID is the peer's ID.
func (o *Offline) ID() peer.ID { return o.id }

// ConsensusDir is where the peer keeps its consensus data.
func (o *Offline) ConsensusDir() string { return filepath.Join(o.dir, config.ConsensusDir) }

// State replays the peer's consensus data into a State, as its daemon
// would restore it (consensus.ReadState); consensus.ErrNoState if it has
// none.
func (o *Offline) State() (*consensus.State, consensus.Replay, error) {
	return consensus.ReadState(o.ConsensusDir())
}

// Replace makes s the peer's state and the peer the only member of its
// cluster (consensus.ResetState): its daemon then starts as a one-peer
// cluster that others join with --bootstrap. The old consensus data is
// kept in the returned directory ("" if there was none).
func (o *Offline) Replace(s *consensus.State, now time.Time) (backup string, err error) {
	return consensus.ResetState(o.ConsensusDir(), o.id, s, now)
}

// Cleanup removes the peer's consensus data, keeping its identity, config
// and shards: its daemon then starts as a new one-peer cluster with an
// empty state, or joins one with --bootstrap.
func (o *Offline) Cleanup() error {
	if err := os.RemoveAll(o.ConsensusDir()); err != nil {
		return fmt.Errorf("remove %s: %w", o.ConsensusDir(), err)
	}
	return nil
}

// Close releases the lock.
func (o *Offline) Close() error { return o.release() }
