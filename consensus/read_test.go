package consensus

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestReadAfterWrite commits through one peer and reads at once through
// another: after ReadBarrier every read sees every acknowledged write.
// Without the barrier a follower's read misses about one write in four on
// this machine (issue 13's probe).
func TestReadAfterWrite(t *testing.T) {
	peers := newCluster(t, 3, nil)
	misses := 0
	const rounds = 150
	for i := range rounds {
		w, r := peers[i%3], peers[(i+1+i/3%2)%3]
		p := NewPin(testCID(1000 + i))
		// A loaded machine may trigger an election mid-commit: pinning
		// is idempotent, so commit again.
		err := w.c.Commit(ctxT(t, 5*time.Second), PinOp(p, time.Now()))
		for try := 0; err != nil && try < 3 && (errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNoLeader)); try++ {
			err = w.c.Commit(ctxT(t, 5*time.Second), PinOp(p, time.Now()))
		}
		if err != nil {
			t.Fatalf("round %d: commit via %s: %v", i, w.name, err)
		}
		if _, ok := r.c.State().Get(p.CID); !ok {
			misses++ // what a read without the barrier would have answered
		}
		ri, err := r.c.ReadBarrier(ctxT(t, 5*time.Second))
		if err != nil {
			t.Fatalf("round %d: read barrier on %s: %v", i, r.name, err)
		}
		if _, ok := r.c.State().Get(p.CID); !ok {
			t.Fatalf("round %d: %s committed %s, %s read after its barrier (applied %d) misses it", i, w.name, p.CID, r.name, ri.Applied)
		}
		if ri.Applied != r.c.State().Applied() || ri.Applied == 0 {
			t.Fatalf("round %d: barrier reports applied %d, state %d", i, ri.Applied, r.c.State().Applied())
		}
	}
	t.Logf("without the barrier %d of %d reads would have missed the write", misses, rounds)
}

// TestReadBarrierWithoutQuorum: a peer whose quorum is gone fails a
// consistent read within ReadTimeout, with ErrNoLeader, and never
// answers.
func TestReadBarrierWithoutQuorum(t *testing.T) {
	peers := newCluster(t, 3, func(c *Config) { c.ReadTimeout = time.Second })
	leader, others := leaderOf(t, peers)
	if err := leader.c.Commit(ctxT(t, 5*time.Second), PinOp(NewPin(testCID(1)), time.Now())); err != nil {
		t.Fatal(err)
	}
	lone := others[1]
	if _, err := lone.c.ReadBarrier(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Stop the leader and one follower: the last peer is a minority.
	leader.stop()
	others[0].stop()
	start := time.Now()
	_, err := lone.c.ReadBarrier(ctxT(t, 10*time.Second))
	took := time.Since(start)
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("read without quorum: %v, want ErrNoLeader", err)
	}
	if took < time.Second || took > 3*time.Second {
		t.Fatalf("read without quorum failed after %s, want about ReadTimeout (1s)", took)
	}
	t.Logf("%s: %v", took.Round(time.Millisecond), err)
	// A stale read needs nobody.
	if ri := lone.c.Info(); ri.Applied == 0 || ri.Leader {
		t.Fatalf("stale info %+v", ri)
	}
}

// TestReadBarrierAfterSnapshotRestart: a follower restarted from a
// snapshot, in a cluster where nothing is written after it, still passes
// the barrier: its state knows the snapshot's index (indexedSnapshots),
// not 0.
func TestReadBarrierAfterSnapshotRestart(t *testing.T) {
	peers := newCluster(t, 3, nil)
	leader, others := leaderOf(t, peers)
	for i := range 5 {
		if err := leader.c.Commit(ctxT(t, 5*time.Second), PinOp(NewPin(testCID(i)), time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	f := others[0]
	if _, err := f.c.ReadBarrier(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	want := f.c.State().Applied()
	if err := f.c.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	f.restart()
	// The restarted host starts with an empty peerstore, as a daemon does
	// before it loads peerstore.json: tell it where the others are.
	for _, p := range peers {
		if p != f {
			if err := f.host.Connect(ctxT(t, 5*time.Second), peer.AddrInfo{ID: p.id(), Addrs: p.host.Addrs()}); err != nil {
				t.Fatalf("reconnect to %s: %v", p.name, err)
			}
		}
	}
	// The snapshot's index may be past the last op: the leader's barrier.
	if got := f.c.State().Applied(); got < want {
		t.Fatalf("after a restart from the snapshot, applied %d, want the snapshot's, at least %d", got, want)
	}
	waitFor(t, 5*time.Second, "the restarted peer knows a leader", func() bool { return f.c.Leader() != "" })
	if _, err := f.c.ReadBarrier(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("barrier after a snapshot restart: %v", err)
	}
	if f.c.State().Len() != 5 {
		t.Fatalf("restarted peer holds %d pins, want 5", f.c.State().Len())
	}
}

// TestLastCommand: Raft's own entries (the no-op of an election, a
// configuration change) are skipped back to the last op.
func TestLastCommand(t *testing.T) {
	peers := newCluster(t, 1, nil)
	c := peers[0].c
	if err := c.Commit(ctxT(t, 5*time.Second), PinOp(NewPin(testCID(1)), time.Now())); err != nil {
		t.Fatal(err)
	}
	op := c.raft.LastIndex()
	// A barrier entry is not a command either.
	if err := c.raft.Barrier(time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	last := c.raft.LastIndex()
	var l raft.Log
	if err := c.wal.GetLog(last, &l); err != nil || l.Type == raft.LogCommand || last == op {
		t.Fatalf("entry %d: %v %v, want a non-command after op %d", last, l.Type, err, op)
	}
	if got, err := c.lastCommand(last); got != op || err != nil {
		t.Fatalf("lastCommand(%d) = %d, %v, want %d", last, got, err, op)
	}
	// Raft notes an entry applied just after the FSM answers its future.
	var ok bool
	var err error
	for deadline := time.Now().Add(time.Second); !ok && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if ok, err = c.caughtUp(last); err != nil {
			t.Fatal(err)
		}
	}
	if !ok {
		t.Fatalf("caughtUp(%d) = false: the state applied every op up to it", last)
	}
	if ok, _ := c.caughtUp(last + 1); ok {
		t.Fatalf("caughtUp(%d): an entry not yet in the log", last+1)
	}
	if got := c.State().Applied(); got != op {
		t.Fatalf("applied %d, want the op's index %d", got, op)
	}
}
