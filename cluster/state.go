package cluster

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
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
	// store, once opened (UnknownShards), holds the lock instead.
	store *store.Store
}

// OpenOffline opens the peer directory dir: it reads its identity and
// config, and takes its lock, failing with ErrRunning if the daemon holds
// it. It completes a state import that a crash interrupted
// (consensus.FinishReset), so the tools see the state the daemon would.
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
	o := &Offline{dir: dir, id: id, release: release}
	if err := consensus.FinishReset(o.ConsensusDir()); err != nil {
		_ = release()
		return nil, err
	}
	return o, nil
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
// empty state, or joins one with --bootstrap, and keeps the shards, which
// that state does not know (unknown.go).
func (o *Offline) Cleanup() error {
	if err := os.RemoveAll(o.ConsensusDir()); err != nil {
		return fmt.Errorf("remove %s: %w", o.ConsensusDir(), err)
	}
	return nil
}

// UnknownShards returns, sorted by key, the shards the peer stores that
// its state does not know: those its daemon keeps, whatever the state
// says, instead of deleting them (unknown.go). They are the keys of the
// peer's list, or every stored key when its state is new (no Raft data,
// or no list: the daemon would list them all when it starts), less those
// its state wants here. It opens the store, which then holds the lock.
func (o *Offline) UnknownShards() ([]store.ShardInfo, error) {
	if err := o.openStore(); err != nil {
		return nil, err
	}
	s, _, err := o.State()
	switch {
	case errors.Is(err, consensus.ErrNoState):
		s = nil
	case err != nil:
		return nil, err
	}
	stored := map[string]store.ShardInfo{}
	for _, sh := range o.store.Shards() {
		stored[sh.Key] = sh
	}
	fresh := !exists(filepath.Join(o.ConsensusDir(), "raft"))
	listed, err := readUnknown(filepath.Join(o.ConsensusDir(), unknownFile))
	switch {
	case errors.Is(err, errNewerUnknown):
		return nil, err
	case fresh || err != nil:
		// New, or a damaged list: the daemon would list every key.
		listed = slices.Collect(maps.Keys(stored))
	}
	var out []store.ShardInfo
	for _, k := range listed {
		sh, ok := stored[k]
		if !ok {
			continue
		}
		if c, err := cid.Decode(k); err == nil && s != nil && s.Wants(c, o.id) {
			continue
		}
		out = append(out, sh)
	}
	slices.SortFunc(out, func(a, b store.ShardInfo) int { return cmp.Compare(a.Key, b.Key) })
	return out, nil
}

// DeleteUnknown deletes the shards UnknownShards returned, and takes them
// off the peer's list of unknown shards.
func (o *Offline) DeleteUnknown(shards []store.ShardInfo) error {
	if o.store == nil {
		return errors.New("delete unknown shards: UnknownShards first")
	}
	gone := map[string]bool{}
	for _, sh := range shards {
		if err := o.store.Delete(sh.Key); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("delete shard %s: %w", sh.Key, err)
		}
		gone[sh.Key] = true
	}
	path := filepath.Join(o.ConsensusDir(), unknownFile)
	listed, err := readUnknown(path)
	if err != nil || !exists(filepath.Join(o.ConsensusDir(), "raft")) {
		return nil // no list to keep: the daemon lists what is left when it starts
	}
	return writeUnknown(path, slices.DeleteFunc(listed, func(k string) bool { return gone[k] }))
}

// Store opens the peer's store, for writing into it while the daemon is
// stopped (shoal add --repo); Close closes it.
func (o *Offline) Store() (*store.Store, error) {
	if err := o.openStore(); err != nil {
		return nil, err
	}
	return o.store, nil
}

// KeepUnknown puts keys on the peer's list of unknown shards, so that its
// daemon keeps them, whatever its state says, until the state wants them
// here or an operator prunes them (unknown.go): a shard written offline
// is not the state's, and the tracker would delete it as unwanted. A new
// state (no Raft data) or one without a readable list needs nothing: the
// daemon lists every stored key when it starts.
func (o *Offline) KeepUnknown(keys ...string) error {
	if !exists(filepath.Join(o.ConsensusDir(), "raft")) {
		return nil
	}
	path := filepath.Join(o.ConsensusDir(), unknownFile)
	listed, err := readUnknown(path)
	switch {
	case errors.Is(err, errNewerUnknown):
		return err
	case err != nil:
		return nil
	}
	for _, k := range keys {
		if !slices.Contains(listed, k) {
			listed = append(listed, k)
		}
	}
	return writeUnknown(path, listed)
}

// openStore opens the peer's store in place of the bare lock.
func (o *Offline) openStore() error {
	if o.store != nil {
		return nil
	}
	if err := o.release(); err != nil {
		return err
	}
	o.release = func() error { return nil }
	st, err := store.Open(filepath.Join(o.dir, config.StoreDir))
	if errors.Is(err, store.ErrLocked) {
		// Its daemon started in the moment the lock was free.
		return fmt.Errorf("peer %s in %s: %w; stop it first", o.id, o.dir, ErrRunning)
	}
	if err != nil {
		return err
	}
	o.store, o.release = st, st.Close
	return nil
}

// Close releases the lock.
func (o *Offline) Close() error { return o.release() }
