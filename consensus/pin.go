package consensus

import (
	"fmt"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Kind says what a pin stands for. Its numbers are part of the op and
// snapshot formats: never renumber, only add.
type Kind uint8

const (
	// KindPlain is a whole DAG pinned as one unit on each allocated peer.
	KindPlain Kind = 1
	// KindSharded is a file whose DAG blocks are cut into shards, each
	// allocated on its own (Pin.Shards).
	KindSharded Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindPlain:
		return "plain"
	case KindSharded:
		return "sharded"
	default:
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
}

func (k Kind) valid() bool { return k == KindPlain || k == KindSharded }

// Limits on a pin's fields, checked when an op is encoded, decoded and
// applied, so that no member can grow a pin without bound.
const (
	MaxNameLen     = 4096  // bytes of Pin.Name
	MaxAllocations = 1024  // entries of Pin.Allocations
	MaxReplication = 65535 // largest RMin / RMax
)

// Everywhere is the replication factor meaning "on every peer".
const Everywhere = -1

// Pin is one entry of the shared pinset. Values returned by State own
// their Allocations slice.
//
// Its size matters: a 1,000,000-pin cluster holds a million of them, so it
// carries no pointers to other pins and no per-pin maps.
type Pin struct {
	CID  cid.Cid
	Name string
	// RMin and RMax are the replication factors: the pin is healthy with
	// at least RMin allocations and never gets more than RMax. Everywhere
	// (-1) for both means every peer.
	RMin, RMax int
	// Allocations are the peers that should hold the content, chosen by
	// the proposer (the allocator), in its order of preference.
	Allocations []peer.ID
	// Created and Updated are the proposer's clock when the pin was first
	// committed and last changed; Apply copies them from the op and never
	// reads a clock.
	Created, Updated time.Time
	Kind             Kind

	// Sharded pins only (Kind == KindSharded); Allocations is empty, each
	// shard has its own.
	//
	// Size is the file's length in bytes; ClusterDAG the root of the list
	// of its shard roots (package shard); Shards the shards in file order.
	Size       uint64
	ClusterDAG cid.Cid
	Shards     []Shard
}

// NewPin returns a plain pin of c on every peer.
func NewPin(c cid.Cid) Pin {
	return Pin{CID: c, RMin: Everywhere, RMax: Everywhere, Kind: KindPlain}
}

// Validate reports the first field of p that no op may carry. Created and
// Updated are not checked: ops do not carry them.
func (p Pin) Validate() error {
	if err := p.validateShape(); err != nil {
		return err
	}
	for i, a := range p.Allocations {
		if _, err := peer.IDFromBytes([]byte(a)); err != nil {
			return fmt.Errorf("pin %s: allocation %d is not a peer ID: %v: %w", p.CID, i, err, ErrInvalidOp)
		}
	}
	return nil
}

// validateShape is Validate without the check of each peer ID's
// multihash, which decoders do as they read.
func (p Pin) validateShape() error {
	if !p.CID.Defined() {
		return fmt.Errorf("pin has no CID: %w", ErrInvalidOp)
	}
	if err := checkPinFields(p.Name, p.RMin, p.RMax, len(p.Allocations), p.Kind); err != nil {
		return fmt.Errorf("pin %s: %w", p.CID, err)
	}
	for i, a := range p.Allocations {
		// Quadratic, but MaxAllocations bounds it and real pins have a
		// handful of allocations.
		if slices.Contains(p.Allocations[:i], a) {
			return fmt.Errorf("pin %s: peer %s allocated twice: %w", p.CID, a, ErrInvalidOp)
		}
	}
	return nil
}

func checkPinFields(name string, rmin, rmax, nalloc int, kind Kind) error {
	switch {
	case len(name) > MaxNameLen:
		return fmt.Errorf("name of %d bytes exceeds %d: %w", len(name), MaxNameLen, ErrInvalidOp)
	case rmin == Everywhere && rmax != Everywhere:
		return fmt.Errorf("rmin is everywhere (-1) but rmax is %d: %w", rmax, ErrInvalidOp)
	case rmin != Everywhere && (rmin < 1 || rmin > MaxReplication):
		return fmt.Errorf("rmin %d is neither -1 nor in 1..%d: %w", rmin, MaxReplication, ErrInvalidOp)
	case rmax != Everywhere && (rmax < rmin || rmax > MaxReplication):
		return fmt.Errorf("rmax %d is neither -1 nor in rmin(%d)..%d: %w", rmax, rmin, MaxReplication, ErrInvalidOp)
	case nalloc > MaxAllocations:
		return fmt.Errorf("%d allocations exceed %d: %w", nalloc, MaxAllocations, ErrInvalidOp)
	case !kind.valid():
		return fmt.Errorf("unknown pin %s: %w", kind, ErrInvalidOp)
	}
	return nil
}

// clone returns p with its own Allocations and Shards slices.
func (p Pin) clone() Pin {
	p.Allocations = slices.Clone(p.Allocations)
	p.Shards = cloneShards(p.Shards)
	return p
}
