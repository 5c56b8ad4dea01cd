package consensus

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
	"unique"

	"github.com/hashicorp/raft"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// State is the replicated pinset. Callers only read it; Raft's FSM
// goroutine writes it. Its mutex owns the map; the *Pin values in the map
// are never modified once stored (an update stores a new one), so a
// snapshot can hold them while Apply goes on.
type State struct {
	mu   sync.RWMutex
	pins map[cid.Cid]*Pin
	// adds are the sharded adds in progress, by ID; like pins, the
	// values are never modified once stored.
	adds map[string]*Add
	// repairs in progress, by part (repair.go); values are never
	// modified once stored.
	repairs map[cid.Cid][]*Repair
	// removed are the peers removed from the cluster, and when
	// (removed.go).
	removed map[peer.ID]time.Time
	// refs and journal are derived from pins (index.go).
	refs    map[cid.Cid][]cid.Cid
	journal journal
	// changed is closed, and replaced, whenever an op is applied or a
	// snapshot restored (Changed).
	changed chan struct{}
	// applied is the Raft index of the last op applied, or of the
	// snapshot restored: what a consistent read waits for (read.go).
	applied uint64
}

// Applied is the Raft log index of the last op this state applied (or of
// the snapshot it was restored from); 0 before either.
func (s *State) Applied() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Changed returns a channel that is closed at the next change of the
// state: a reader waits on it instead of polling.
func (s *State) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// signal wakes the waiters of Changed. The caller holds s.mu.
func (s *State) signal() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func newState() *State {
	s := &State{pins: make(map[cid.Cid]*Pin), adds: make(map[string]*Add), refs: make(map[cid.Cid][]cid.Cid),
		repairs: make(map[cid.Cid][]*Repair), removed: make(map[peer.ID]time.Time), changed: make(chan struct{})}
	s.journal.lose()
	return s
}

// internID keeps one copy of each peer ID string: thousands of pins share
// a few peers.
func internID(s string) string { return unique.Make(s).Value() }

// Get returns the pin of c, if any.
func (s *State) Get(c cid.Cid) (Pin, bool) {
	s.mu.RLock()
	p, ok := s.pins[c]
	s.mu.RUnlock()
	if !ok {
		return Pin{}, false
	}
	return p.clone(), true
}

// Len returns the number of pins.
func (s *State) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.pins)
}

// Pins returns every pin, sorted by CID bytes. It copies the whole set:
// for a million pins, prefer Get or a future paging call.
func (s *State) Pins() []Pin {
	ptrs := s.sortedPins()
	out := make([]Pin, len(ptrs))
	for i, p := range ptrs {
		out[i] = p.clone()
	}
	return out
}

// sortedPins returns the current (immutable) pins in CID byte order. Only
// the collection holds the read lock; the sort does not.
func (s *State) sortedPins() []*Pin {
	s.mu.RLock()
	ptrs := make([]*Pin, 0, len(s.pins))
	for _, p := range s.pins {
		ptrs = append(ptrs, p)
	}
	s.mu.RUnlock()
	slices.SortFunc(ptrs, func(a, b *Pin) int { return cmp.Compare(a.CID.KeyString(), b.CID.KeyString()) })
	return ptrs
}

// apply changes the state by op. It is deterministic: its outcome depends
// on the state and the op only.
func (s *State) apply(index uint64, op Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.signal()
	s.applied = max(s.applied, index)
	switch op.Type {
	case OpPin:
		p := op.Pin // op is ours: DecodeOp shares no memory with the log
		p.Created, p.Updated = op.Time, op.Time
		if old, ok := s.pins[p.CID]; ok {
			p.Created = old.Created
			if old.Kind == KindSharded {
				// Pinning a sharded root again renames it or changes
				// its replication; its shards stay where they are.
				np := *old
				np.Name, np.RMin, np.RMax, np.Updated = p.Name, p.RMin, p.RMax, op.Time
				s.setPin(&np)
				return nil
			}
		}
		for i, a := range p.Allocations {
			p.Allocations[i] = peer.ID(internID(string(a)))
		}
		s.setPin(&p)
		return nil
	case OpAddBegin, OpAddShard, OpAddCommit, OpAddAbort:
		return s.applyAdd(op)
	case OpRepair, OpRealloc:
		return s.applyRepair(op)
	case OpRemoved:
		if _, ok := s.removed[op.Peer]; !ok {
			s.removed[peer.ID(internID(string(op.Peer)))] = op.Time
		}
		return nil
	case OpUnpin:
		if _, ok := s.pins[op.Pin.CID]; !ok {
			return fmt.Errorf("unpin %s: %w", op.Pin.CID, ErrNotPinned)
		}
		s.delPin(op.Pin.CID)
		return nil
	default:
		return fmt.Errorf("apply %s: unknown op type: %w", op, ErrInvalidOp)
	}
}

// fsm adapts State to raft.FSM. Raft calls Apply, Snapshot and Restore
// from its one FSM goroutine, and Persist from another.
type fsm struct{ s *State }

var (
	_ raft.FSM         = fsm{}
	_ raft.FSMSnapshot = (*snapshot)(nil)
)

// Apply returns nil or the error of the op (an error value, never a
// panic): the leader hands it to the committer as the op's result.
// Entries that do not decode are refused the same way on every peer.
func (f fsm) Apply(l *raft.Log) any {
	op, err := DecodeOp(l.Data)
	if err != nil {
		f.s.setApplied(l.Index)
		return fmt.Errorf("log entry %d: %w", l.Index, err)
	}
	return f.s.apply(l.Index, op)
}

// setApplied records index as applied without a change to the pins.
func (s *State) setApplied(index uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = max(s.applied, index)
	s.signal()
}

// Snapshot captures the current pins: a slice of pointers to immutable
// values, so Apply can go on while Persist writes them.
func (f fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.s.mu.RLock()
	ptrs := make([]*Pin, 0, len(f.s.pins))
	for _, p := range f.s.pins {
		ptrs = append(ptrs, p)
	}
	adds := make([]*Add, 0, len(f.s.adds))
	for _, a := range f.s.adds {
		adds = append(adds, a)
	}
	var repairs []*Repair
	for _, rs := range f.s.repairs {
		repairs = append(repairs, rs...)
	}
	removed := make([]removedPeer, 0, len(f.s.removed))
	for id, at := range f.s.removed {
		removed = append(removed, removedPeer{id, at})
	}
	f.s.mu.RUnlock()
	return &snapshot{pins: ptrs, adds: adds, repairs: repairs, removed: removed}, nil
}

// Restore replaces the state with the snapshot in rc. On error the state
// is unchanged. rc opened by indexedSnapshots carries the snapshot's
// index, which becomes the state's Applied (Raft wraps it, in
// raft.ReadCloserWrapper).
func (f fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	sd, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	index := snapshotIndex(rc)
	f.s.mu.Lock()
	f.s.applied = index
	f.s.pins = sd.pins
	f.s.adds = sd.adds
	f.s.repairs = sd.repairs
	f.s.removed = sd.removed
	f.s.reindex()
	f.s.signal()
	f.s.mu.Unlock()
	return nil
}

type snapshot struct {
	pins    []*Pin
	adds    []*Add
	repairs []*Repair
	removed []removedPeer
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	slices.SortFunc(s.pins, func(a, b *Pin) int { return cmp.Compare(a.CID.KeyString(), b.CID.KeyString()) })
	slices.SortFunc(s.adds, func(a, b *Add) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(s.repairs, func(a, b *Repair) int {
		return cmp.Compare(a.Root.KeyString()+a.Part.KeyString(), b.Root.KeyString()+b.Part.KeyString())
	})
	slices.SortFunc(s.removed, func(a, b removedPeer) int { return cmp.Compare(a.ID, b.ID) })
	if err := writeSnapshot(sink, s.pins, s.adds, s.repairs, s.removed); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot %s: %w", sink.ID(), err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {}
