package consensus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Consistent reads, ReadIndex-style (etcd's design, section 6.4 of the
// Raft thesis). A read that must reflect every write acknowledged before
// it began calls ReadBarrier first:
//
//  1. the leader notes its commit index C, then confirms with a quorum
//     that it still leads (raft.VerifyLeader: one heartbeat round). Every
//     acknowledged write is committed, at an index <= C. A new leader's
//     commit index can lag what its predecessor committed until an entry
//     of its own term commits, so once per term, before its first read,
//     it commits a barrier entry (raft.Barrier);
//  2. the reading peer waits until Raft there has applied C (its entries
//     up to C are then committed, the same as on every peer) and its
//     State has applied the last op (command entry) at or below C.
//     Raft's own entries (no-ops, barriers, configuration changes) never
//     reach the FSM, so the State's own index alone cannot show that they
//     are past.
//
// A follower asks the leader over CommitProtocol (reqReadIndex); a leader
// does step 1 itself. A leader that was paused or cut off and still
// believes it leads fails step 1 (a quorum answers with a newer term) and
// so never answers from its stale state. Nothing is written to the log
// but the one barrier a term: the cost of a read is one round trip to the
// leader plus one heartbeat round, and on a follower the wait until it
// learns that C is committed, measured in ARCHITECTURE.md.

// ReadInfo says how current this peer's state is, for a read that asked
// for none of that (a stale read) or to report what a consistent read saw.
type ReadInfo struct {
	// Applied is the log index of the last op this peer's state applied.
	Applied uint64
	// Leader is true on the leader.
	Leader bool
	// LastContact is when this peer last heard from the leader (zero on
	// the leader, and on a peer that never heard from one).
	LastContact time.Time
}

// Info reports how current this peer's state is, without asking anyone.
func (c *Consensus) Info() ReadInfo {
	ri := ReadInfo{Applied: c.state.Applied(), Leader: c.raft.State() == raft.Leader}
	if !ri.Leader {
		ri.LastContact = c.raft.LastContact()
	}
	return ri
}

// ReadBarrier returns once this peer's State reflects every op committed
// before the call, so that a read of it that follows is linearizable. It
// fails with ErrNoLeader when no leader confirms its leadership within
// Config.ReadTimeout (no quorum, a minority partition), and never returns
// without that confirmation.
func (c *Consensus) ReadBarrier(ctx context.Context) (ReadInfo, error) {
	ctx, end, err := c.begin(ctx)
	if err != nil {
		return ReadInfo{}, err
	}
	defer end()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ReadTimeout)
	defer cancel()
	var last error
	for {
		idx, leader, err := c.readIndex(ctx)
		if err == nil {
			err = c.waitApplied(ctx, idx, leader)
			if err == nil {
				return c.Info(), nil
			}
		}
		if errors.Is(err, ErrClosed) {
			return ReadInfo{}, err
		}
		if !errors.Is(err, errSuperseded) {
			last = err
		}
		if ctx.Err() != nil {
			break
		}
		// Whatever failed (no leader yet, a leader that lost its
		// quorum, a stream reset), ask again until the read's time is up.
		select {
		case <-ctx.Done():
		case <-time.After(c.pollInterval()):
		}
	}
	if err := c.ctxErr(ctx, "confirming the state"); errors.Is(err, ErrClosed) {
		return ReadInfo{}, err
	}
	if last == nil {
		last = errors.New("no leader elected")
	}
	return ReadInfo{}, fmt.Errorf("%w: %s could not confirm its state is current within %s: %w", ErrNoLeader, c.id, c.cfg.ReadTimeout, last)
}

// errSuperseded: the leader that handed out a read index lost its
// leadership before this peer reached the index; ask the new one.
var errSuperseded = errors.New("read index superseded")

// readIndex asks the leader for the read index (step 1) and says who
// answered.
func (c *Consensus) readIndex(ctx context.Context) (uint64, peer.ID, error) {
	leader := c.Leader()
	switch leader {
	case "":
		return 0, "", errors.New("no leader known")
	case c.id:
		idx, err := c.readIndexLocal(ctx)
		return idx, leader, err
	}
	body, err := c.call(ctx, leader, reqReadIndex, nil)
	if err != nil {
		return 0, leader, err
	}
	idx, n := binary.Uvarint(body)
	if n <= 0 || n != len(body) {
		return 0, leader, fmt.Errorf("malformed read index from %s", leader)
	}
	return idx, leader, nil
}

// readIndexLocal is step 1 on the leader.
func (c *Consensus) readIndexLocal(ctx context.Context) (uint64, error) {
	if c.raft.State() != raft.Leader {
		return 0, fmt.Errorf("%s: %w", c.id, ErrNotLeader)
	}
	if term := c.raft.CurrentTerm(); c.readTerm.Load() != term {
		if err := c.wait(ctx, c.raft.Barrier(c.cfg.ReadTimeout)); err != nil {
			return 0, err
		}
		c.readTerm.Store(term)
	}
	idx := c.raft.CommitIndex()
	if err := c.wait(ctx, c.raft.VerifyLeader()); err != nil {
		return 0, err
	}
	return idx, nil
}

// caughtUp reports whether this peer's State reflects every committed
// entry up to idx (step 2).
func (c *Consensus) caughtUp(idx uint64) (bool, error) {
	applied := c.state.Applied()
	if applied >= idx {
		return true, nil
	}
	if c.raft.AppliedIndex() < idx {
		return false, nil
	}
	// Raft has handed every entry up to idx to the FSM, and they are
	// committed: the State is there once it applied the last op among
	// them.
	op, err := c.lastCommand(idx)
	return err == nil && applied >= op, err
}

// lastCommand is the index of the last command entry at or below i in this
// peer's log: in practice i itself, or a step or two back past an
// election's no-op. When the scan reaches entries compacted into a
// snapshot it returns 0: the FSM applied (or restored) those before the
// snapshot was taken.
func (c *Consensus) lastCommand(i uint64) (uint64, error) {
	for ; i > 0; i-- {
		var l raft.Log
		switch err := c.wal.GetLog(i, &l); {
		case errors.Is(err, raft.ErrLogNotFound):
			return 0, nil
		case err != nil:
			return 0, fmt.Errorf("read raft log entry %d: %w", i, err)
		case l.Type == raft.LogCommand:
			return i, nil
		}
	}
	return 0, nil
}

// waitApplied waits until this peer caught up with idx, the read index
// leader handed out (step 2).
func (c *Consensus) waitApplied(ctx context.Context, idx uint64, leader peer.ID) error {
	for {
		changed := c.state.Changed()
		ok, err := c.caughtUp(idx)
		if ok || err != nil {
			return err
		}
		// A leader that lost its leadership may have handed out an index
		// its successor's log never reaches: ask the successor.
		if c.Leader() != leader {
			return errSuperseded
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for this peer to apply entry %d (applied %d): %w", idx, c.state.Applied(), c.ctxErr(ctx, "waiting to apply"))
		case <-time.After(c.pollInterval()):
			// Raft's own entries do not change the State: poll.
		}
	}
}

// serveReadIndex answers a follower's reqReadIndex: the body is the index,
// a uvarint.
func (c *Consensus) serveReadIndex(ctx context.Context, from peer.ID) ([]byte, error) {
	idx, err := c.readIndexLocal(ctx)
	if err != nil {
		return nil, fmt.Errorf("read index for %s: %w", from, err)
	}
	return binary.AppendUvarint(nil, idx), nil
}

// indexedSnapshots is Raft's snapshot store, but a snapshot it opens
// tells fsm.Restore its index, so that State.Applied is right after a
// restore too: Raft passes the FSM only the bytes.
type indexedSnapshots struct{ *raft.FileSnapshotStore }

func (s indexedSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.FileSnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	return meta, &indexedReader{ReadCloser: rc, index: meta.Index}, nil
}

type indexedReader struct {
	io.ReadCloser
	index uint64
}

// snapshotIndex is the index indexedSnapshots gave rc, or 0.
func snapshotIndex(rc io.ReadCloser) uint64 {
	for {
		switch r := rc.(type) {
		case *indexedReader:
			return r.index
		case raft.ReadCloserWrapper:
			rc = r.WrappedReadCloser()
		default:
			return 0
		}
	}
}
