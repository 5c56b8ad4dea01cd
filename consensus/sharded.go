package consensus

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Shard is one shard of a sharded pin or of an add in progress: what Raft
// records of it. Its blocks' CIDs are not here: they live in the shard's
// list node on the peers that hold it.
type Shard struct {
	// CID is the root of the shard's list tree (package shard).
	CID cid.Cid
	// Size is the bytes the shard takes in a store; Blocks its DAG blocks.
	Size, Blocks uint64
	// Offset and Length are the file bytes its leaves cover.
	Offset, Length uint64
	// Allocations are the peers that confirmed (or are to hold) it.
	Allocations []peer.ID
}

func cloneShards(ss []Shard) []Shard {
	if ss == nil {
		return nil
	}
	out := make([]Shard, len(ss))
	for i, s := range ss {
		out[i] = s
		out[i].Allocations = slices.Clone(s.Allocations)
	}
	return out
}

func (s Shard) equal(o Shard) bool {
	return s.CID.Equals(o.CID) && s.Size == o.Size && s.Blocks == o.Blocks && s.Offset == o.Offset &&
		s.Length == o.Length && slices.Equal(s.Allocations, o.Allocations)
}

func (s Shard) validate() error {
	if !s.CID.Defined() {
		return fmt.Errorf("shard has no CID: %w", ErrInvalidOp)
	}
	if len(s.Allocations) > MaxAllocations {
		return fmt.Errorf("shard %s: %d allocations exceed %d: %w", s.CID, len(s.Allocations), MaxAllocations, ErrInvalidOp)
	}
	for i, a := range s.Allocations {
		if slices.Contains(s.Allocations[:i], a) {
			return fmt.Errorf("shard %s: peer %s allocated twice: %w", s.CID, a, ErrInvalidOp)
		}
	}
	return nil
}

// MaxShards bounds the shards of one sharded pin: at the default 100 MiB a
// shard, 2^20 shards is 100 TiB.
const MaxShards = 1 << 20

// Add is a sharded add in progress: its shards are stored and confirmed
// one by one; only OpAddCommit turns it into a pin, and OpAddAbort (or the
// leader, when its owner vanished) drops it. Peers keep its shards while it
// exists.
type Add struct {
	// ID is chosen by the owner (random, at most MaxAddIDLen bytes).
	ID         string
	Name       string
	RMin, RMax int
	// Owner is the peer that ingests the file.
	Owner            peer.ID
	Started, Updated time.Time
	Shards           []Shard
}

// MaxAddIDLen bounds Add.ID.
const MaxAddIDLen = 64

func (a Add) clone() Add {
	a.Shards = cloneShards(a.Shards)
	return a
}

// Ops of a sharded add. Their numbers are part of the op format.
const (
	// OpAddBegin records a new add in progress (Op.Add: ID, Name, RMin,
	// RMax, Owner).
	OpAddBegin OpType = 3
	// OpAddShard appends confirmed shard Op.Index (Op.Shard) to add
	// Op.Add.ID. Repeating the op of a shard already recorded is a no-op,
	// so a commit whose outcome was unknown can be retried.
	OpAddShard OpType = 4
	// OpAddCommit turns add Op.Add.ID into the sharded pin of root
	// Op.Pin.CID with Op.Pin.ClusterDAG and Op.Pin.Size; Op.Pin.Allocations
	// are the peers that hold the cluster-DAG's list nodes. A pin of the
	// same root is replaced (keeping its Created time).
	OpAddCommit OpType = 5
	// OpAddAbort drops add Op.Add.ID; dropping one that does not exist is
	// a no-op.
	OpAddAbort OpType = 6
)

// AddBeginOp returns the op that begins add a.
func AddBeginOp(a Add, now time.Time) Op { return Op{Type: OpAddBegin, Time: now, Add: a} }

// AddShardOp records shard index of add id.
func AddShardOp(id string, index int, s Shard, now time.Time) Op {
	return Op{Type: OpAddShard, Time: now, Add: Add{ID: id}, Index: index, Shard: s}
}

// AddCommitOp turns add id into the sharded pin of root, whose cluster-DAG
// is held by holders.
func AddCommitOp(id string, root, clusterDAG cid.Cid, size uint64, holders []peer.ID, now time.Time) Op {
	return Op{Type: OpAddCommit, Time: now, Add: Add{ID: id},
		Pin: Pin{CID: root, ClusterDAG: clusterDAG, Size: size, Kind: KindSharded, Allocations: holders}}
}

// AddAbortOp drops add id.
func AddAbortOp(id string, now time.Time) Op {
	return Op{Type: OpAddAbort, Time: now, Add: Add{ID: id}}
}

func validateAddID(id string) error {
	if id == "" || len(id) > MaxAddIDLen {
		return fmt.Errorf("add ID of %d bytes is not in 1..%d: %w", len(id), MaxAddIDLen, ErrInvalidOp)
	}
	return nil
}

// validateAddOp checks the add ops' fields.
func (o Op) validateAddOp() error {
	if err := validateAddID(o.Add.ID); err != nil {
		return err
	}
	switch o.Type {
	case OpAddBegin:
		if err := checkPinFields(o.Add.Name, o.Add.RMin, o.Add.RMax, 0, KindSharded); err != nil {
			return fmt.Errorf("begin add: %w", err)
		}
		if _, err := peer.IDFromBytes([]byte(o.Add.Owner)); err != nil {
			return fmt.Errorf("begin add: owner is not a peer ID: %v: %w", err, ErrInvalidOp)
		}
	case OpAddShard:
		if o.Index < 0 || o.Index >= MaxShards {
			return fmt.Errorf("add shard: index %d out of range: %w", o.Index, ErrInvalidOp)
		}
		return o.Shard.validate()
	case OpAddCommit:
		if !o.Pin.CID.Defined() || !o.Pin.ClusterDAG.Defined() {
			return fmt.Errorf("commit add: root and cluster-DAG CIDs are required: %w", ErrInvalidOp)
		}
		return Shard{CID: o.Pin.ClusterDAG, Allocations: o.Pin.Allocations}.validate()
	}
	return nil
}

// appendAddOp appends the body of an add op. Formats:
//
//	OpAddBegin  body = id(bytes) name(bytes) rmin(varint) rmax(varint) owner(bytes)
//	OpAddShard  body = id(bytes) index(uvarint) shard
//	OpAddCommit body = id(bytes) root(cid bytes) clusterdag(cid bytes) size(uvarint)
//	                   nalloc(uvarint) allocation(bytes)*nalloc (the cluster-DAG's holders)
//	OpAddAbort  body = id(bytes)
//	shard       = cid(bytes) size blocks offset length (uvarints) nalloc(uvarint) allocation(bytes)*nalloc
func (o Op) appendAddOp(b []byte) []byte {
	b = appendField(b, []byte(o.Add.ID))
	switch o.Type {
	case OpAddBegin:
		b = appendField(b, []byte(o.Add.Name))
		b = binary.AppendVarint(b, int64(o.Add.RMin))
		b = binary.AppendVarint(b, int64(o.Add.RMax))
		b = appendField(b, []byte(o.Add.Owner))
	case OpAddShard:
		b = binary.AppendUvarint(b, uint64(o.Index))
		b = appendShard(b, &o.Shard)
	case OpAddCommit:
		b = appendField(b, o.Pin.CID.Bytes())
		b = appendField(b, o.Pin.ClusterDAG.Bytes())
		b = binary.AppendUvarint(b, o.Pin.Size)
		b = binary.AppendUvarint(b, uint64(len(o.Pin.Allocations)))
		for _, a := range o.Pin.Allocations {
			b = appendField(b, []byte(a))
		}
	}
	return b
}

func appendShard(b []byte, s *Shard) []byte {
	b = appendField(b, s.CID.Bytes())
	for _, v := range []uint64{s.Size, s.Blocks, s.Offset, s.Length} {
		b = binary.AppendUvarint(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Allocations)))
	for _, a := range s.Allocations {
		b = appendField(b, []byte(a))
	}
	return b
}

func (d *decoder) peerIDField() peer.ID {
	f := d.field(maxPeerIDLen)
	if d.err != nil {
		return ""
	}
	toID := d.peerID
	if toID == nil {
		toID = peer.IDFromBytes
	}
	id, err := toID(f)
	if err != nil {
		d.fail(err)
		return ""
	}
	return id
}

func (d *decoder) shard() Shard {
	var s Shard
	s.CID = d.cid()
	s.Size, s.Blocks, s.Offset, s.Length = d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint()
	n := d.uvarint()
	if d.err != nil {
		return Shard{}
	}
	if n > MaxAllocations {
		d.fail(fmt.Errorf("%d shard allocations exceed %d", n, MaxAllocations))
		return Shard{}
	}
	for range n {
		s.Allocations = append(s.Allocations, d.peerIDField())
	}
	if d.err == nil {
		if err := s.validate(); err != nil {
			d.fail(err)
		}
	}
	return s
}

// addOp decodes the body of an add op into o.
func (d *decoder) addOp(o *Op) {
	o.Add.ID = string(d.field(MaxAddIDLen))
	switch o.Type {
	case OpAddBegin:
		o.Add.Name = string(d.field(MaxNameLen))
		o.Add.RMin = d.int("rmin", Everywhere, MaxReplication)
		o.Add.RMax = d.int("rmax", Everywhere, MaxReplication)
		o.Add.Owner = d.peerIDField()
	case OpAddShard:
		o.Index = int(min(d.uvarint(), MaxShards))
		o.Shard = d.shard()
	case OpAddCommit:
		o.Pin.CID = d.cid()
		o.Pin.ClusterDAG = d.cid()
		o.Pin.Size = d.uvarint()
		o.Pin.Kind = KindSharded
		n := d.uvarint()
		if d.err == nil && n > MaxAllocations {
			d.fail(fmt.Errorf("%d allocations exceed %d", n, MaxAllocations))
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			o.Pin.Allocations = append(o.Pin.Allocations, d.peerIDField())
		}
	}
	if d.err == nil {
		if err := o.validateAddOp(); err != nil {
			d.fail(err)
		}
	}
}

// appendShardedFields appends what a sharded pin adds to the pin fields.
func appendShardedFields(b []byte, p *Pin) []byte {
	b = binary.AppendUvarint(b, p.Size)
	b = appendField(b, p.ClusterDAG.Bytes())
	b = binary.AppendUvarint(b, uint64(len(p.Shards)))
	for i := range p.Shards {
		b = appendShard(b, &p.Shards[i])
	}
	return b
}

func (d *decoder) shardedFields(p *Pin) {
	p.Size = d.uvarint()
	p.ClusterDAG = d.cid()
	n := d.uvarint()
	if d.err != nil {
		return
	}
	if n > MaxShards {
		d.fail(fmt.Errorf("%d shards exceed %d", n, MaxShards))
		return
	}
	p.Shards = make([]Shard, 0, min(n, uint64(len(d.b)/8+1)))
	for range n {
		p.Shards = append(p.Shards, d.shard())
		if d.err != nil {
			return
		}
	}
}

// applyAdd applies an add op. The caller holds s.mu.
func (s *State) applyAdd(op Op) error {
	id := op.Add.ID
	a, ok := s.adds[id]
	switch op.Type {
	case OpAddBegin:
		if ok {
			return fmt.Errorf("begin add %x: it exists: %w", id, ErrInvalidOp)
		}
		na := op.Add.clone()
		na.Owner = peer.ID(internID(string(na.Owner)))
		na.Started, na.Updated = op.Time, op.Time
		na.Shards = nil
		s.adds[id] = &na
		return nil
	case OpAddShard:
		if !ok {
			return fmt.Errorf("add shard %d to %x: %w", op.Index, id, ErrNoSuchAdd)
		}
		sh := op.Shard
		for i, al := range sh.Allocations {
			sh.Allocations[i] = peer.ID(internID(string(al)))
		}
		switch {
		case op.Index < len(a.Shards):
			if !a.Shards[op.Index].equal(sh) {
				return fmt.Errorf("add %x: shard %d is recorded differently: %w", id, op.Index, ErrInvalidOp)
			}
			return nil
		case op.Index > len(a.Shards):
			return fmt.Errorf("add %x: shard %d before shard %d: %w", id, op.Index, len(a.Shards), ErrInvalidOp)
		}
		na := *a // copy on write: snapshots may hold a
		na.Shards = append(slices.Clip(a.Shards), sh)
		na.Updated = op.Time
		s.adds[id] = &na
		s.journal.add(sh.CID)
		return nil
	case OpAddCommit:
		if !ok {
			return fmt.Errorf("commit add %x: %w", id, ErrNoSuchAdd)
		}
		p := Pin{CID: op.Pin.CID, Name: a.Name, RMin: a.RMin, RMax: a.RMax, Kind: KindSharded,
			Size: op.Pin.Size, ClusterDAG: op.Pin.ClusterDAG, Shards: a.Shards,
			Allocations: slices.Clone(op.Pin.Allocations), Created: op.Time, Updated: op.Time}
		for i, al := range p.Allocations {
			p.Allocations[i] = peer.ID(internID(string(al)))
		}
		if old, exists := s.pins[p.CID]; exists {
			p.Created = old.Created
		}
		s.setPin(&p)
		delete(s.adds, id)
		return nil
	case OpAddAbort:
		if ok {
			for i := range a.Shards {
				s.journal.add(a.Shards[i].CID)
			}
		}
		delete(s.adds, id)
		return nil
	}
	return fmt.Errorf("apply %s: unknown op type: %w", op, ErrInvalidOp)
}

// Adds returns the adds in progress, sorted by ID.
func (s *State) Adds() []Add {
	s.mu.RLock()
	out := make([]Add, 0, len(s.adds))
	for _, a := range s.adds {
		out = append(out, a.clone())
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Add) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// GetAdd returns the add in progress with id, if any.
func (s *State) GetAdd(id string) (Add, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.adds[id]
	if !ok {
		return Add{}, false
	}
	return a.clone(), true
}
