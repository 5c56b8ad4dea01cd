package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/dag"
)

// OpType says what an Op does. Its numbers are part of the op format:
// never renumber, only add.
type OpType uint8

const (
	// OpPin adds Op.Pin to the pinset, or, if its CID is already pinned,
	// replaces the name, replication factors, allocations and kind of the
	// existing pin (keeping its Created time).
	OpPin OpType = 1
	// OpUnpin removes the pin of Op.Pin.CID; it fails with ErrNotPinned if
	// there is none.
	OpUnpin OpType = 2
)

func (t OpType) String() string {
	switch t {
	case OpPin:
		return "pin"
	case OpUnpin:
		return "unpin"
	case OpAddBegin:
		return "add-begin"
	case OpAddShard:
		return "add-shard"
	case OpAddCommit:
		return "add-commit"
	case OpAddAbort:
		return "add-abort"
	case OpRepair:
		return "repair"
	case OpRealloc:
		return "realloc"
	case OpRemoved:
		return "removed"
	default:
		return fmt.Sprintf("op(%d)", uint8(t))
	}
}

// OpFormatVersion is the first byte of every encoded op.
const OpFormatVersion = 1

// Op is one change to the pinset, the payload of one Raft log entry. It
// carries CIDs and placements, never data.
type Op struct {
	Type OpType
	// Time is the proposer's clock when it made the op. Apply stamps it on
	// the pin as Updated (and as Created for a new pin): replaying the log
	// on any peer gives the same times.
	Time time.Time
	// Pin is the pin to add or update (OpPin; its Created and Updated are
	// ignored), or only its CID (OpUnpin), or the root, cluster-DAG and
	// size of a committed add (OpAddCommit).
	Pin Pin
	// Add, Index and Shard are the fields of the add ops (sharded.go).
	Add   Add
	Index int
	Shard Shard
	// Peer is the peer of OpRemoved (removed.go).
	Peer peer.ID
}

// PinOp returns an op that pins (or updates) p, made at time now.
func PinOp(p Pin, now time.Time) Op { return Op{Type: OpPin, Time: now, Pin: p} }

// UnpinOp returns an op that unpins c, made at time now.
func UnpinOp(c cid.Cid, now time.Time) Op { return Op{Type: OpUnpin, Time: now, Pin: Pin{CID: c}} }

func (o Op) String() string {
	if o.Type == OpRepair || o.Type == OpRealloc {
		return fmt.Sprintf("%s %s of %s", o.Type, o.Shard.CID, o.Pin.CID)
	}
	if o.Type == OpRemoved {
		return fmt.Sprintf("%s %s", o.Type, o.Peer)
	}
	if o.Type >= OpAddBegin {
		return fmt.Sprintf("%s %x", o.Type, o.Add.ID)
	}
	return fmt.Sprintf("%s %s", o.Type, o.Pin.CID)
}

// Validate reports the first reason o cannot be encoded or applied.
func (o Op) Validate() error {
	if o.Time.IsZero() {
		return fmt.Errorf("%s: op time is not set: %w", o, ErrInvalidOp)
	}
	if n := o.Time.UnixNano(); !time.Unix(0, n).Equal(o.Time) {
		return fmt.Errorf("%s: op time %s is outside the years 1678-2262: %w", o, o.Time, ErrInvalidOp)
	}
	if err := o.checkCIDs(); err != nil {
		return err
	}
	switch o.Type {
	case OpPin:
		if o.Pin.Kind == KindSharded {
			return fmt.Errorf("%s: sharded pins are made by committing an add: %w", o, ErrInvalidOp)
		}
		return o.Pin.Validate()
	case OpAddBegin, OpAddShard, OpAddCommit, OpAddAbort:
		return o.validateAddOp()
	case OpRepair, OpRealloc:
		return o.validateRepairOp()
	case OpRemoved:
		if _, err := peer.IDFromBytes([]byte(o.Peer)); err != nil {
			return fmt.Errorf("removed: not a peer ID: %v: %w", err, ErrInvalidOp)
		}
		return nil
	case OpUnpin:
		if !o.Pin.CID.Defined() {
			return fmt.Errorf("unpin: no CID: %w", ErrInvalidOp)
		}
		return nil
	default:
		return fmt.Errorf("%s: unknown op type: %w", o.Type, ErrInvalidOp)
	}
}

// checkCIDs refuses an op that names a CID whose hash shoal does not
// accept (dag.CheckCID). Validate calls it for every op this peer proposes
// and the leader for every op a member forwards. DecodeOp does not, nor
// Apply: a log written before the policy must replay to the state the
// peers that applied it reached.
func (o Op) checkCIDs() error {
	cids := []cid.Cid{o.Pin.CID, o.Pin.ClusterDAG, o.Shard.CID}
	for _, sh := range o.Pin.Shards {
		cids = append(cids, sh.CID)
	}
	for _, sh := range o.Add.Shards {
		cids = append(cids, sh.CID)
	}
	for _, c := range cids {
		if !c.Defined() {
			continue // whether it may be missing is the op type's check
		}
		if err := dag.CheckCID(c); err != nil {
			return fmt.Errorf("%s: %v: %w", o.Type, err, ErrInvalidOp)
		}
	}
	return nil
}

// The op format (all integers are encoding/binary varints; "bytes" is a
// uvarint length followed by that many bytes):
//
//	op      = version(1 byte, =1) type(1 byte) time(varint, Unix ns) body
//	OpPin   body = cid(bytes) name(bytes) rmin(varint) rmax(varint) kind(1 byte)
//	               count(uvarint) allocation(bytes, a peer ID's multihash)*count
//	OpUnpin body = cid(bytes)
//
// Nothing may follow the body. The golden vectors are in testdata/ops.

// AppendBinary appends the encoding of o to b (encoding.BinaryAppender).
func (o Op) AppendBinary(b []byte) ([]byte, error) {
	if err := o.Validate(); err != nil {
		return b, err
	}
	b = append(b, OpFormatVersion, byte(o.Type))
	b = binary.AppendVarint(b, o.Time.UnixNano())
	switch o.Type {
	case OpPin:
		b = appendPinFields(b, &o.Pin)
	case OpUnpin:
		b = appendField(b, o.Pin.CID.Bytes())
	case OpAddBegin, OpAddShard, OpAddCommit, OpAddAbort:
		b = o.appendAddOp(b)
	case OpRepair, OpRealloc:
		b = o.appendRepairOp(b)
	case OpRemoved:
		b = appendField(b, []byte(o.Peer))
	}
	return b, nil
}

// MarshalBinary encodes o (encoding.BinaryMarshaler).
func (o Op) MarshalBinary() ([]byte, error) { return o.AppendBinary(nil) }

// DecodeOp decodes an op encoded by AppendBinary, checking everything
// Validate checks but the CID policy (checkCIDs, which Apply must not
// apply to old entries). It never panics, whatever b holds, and the Op it
// returns shares no memory with b.
func DecodeOp(b []byte) (Op, error) {
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != OpFormatVersion {
		return Op{}, fmt.Errorf("decode op: format version %d, this peer reads %d: %w", v, OpFormatVersion, ErrInvalidOp)
	}
	var o Op
	o.Type = OpType(d.byte())
	o.Time = d.time()
	switch o.Type {
	case OpPin:
		o.Pin = d.pinFields()
		if d.err == nil && o.Pin.Kind == KindSharded {
			d.fail(fmt.Errorf("a pin op may not carry a sharded pin: %w", ErrInvalidOp))
		}
	case OpUnpin:
		o.Pin.CID = d.cid()
	case OpAddBegin, OpAddShard, OpAddCommit, OpAddAbort:
		d.addOp(&o)
	case OpRepair, OpRealloc:
		d.repairOp(&o)
	case OpRemoved:
		o.Peer = d.peerIDField()
	default:
		if d.err == nil {
			return Op{}, fmt.Errorf("decode op: unknown op type %d: %w", uint8(o.Type), ErrInvalidOp)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the op", len(d.b))
	}
	if d.err != nil {
		if errors.Is(d.err, ErrInvalidOp) {
			return Op{}, fmt.Errorf("decode op: %w", d.err)
		}
		return Op{}, fmt.Errorf("decode op: %v: %w", d.err, ErrInvalidOp)
	}
	return o, nil
}

// appendPinFields appends the fields a pin shares between ops and
// snapshots: everything but Created and Updated.
func appendPinFields(b []byte, p *Pin) []byte {
	b = appendField(b, p.CID.Bytes())
	b = appendField(b, []byte(p.Name))
	b = binary.AppendVarint(b, int64(p.RMin))
	b = binary.AppendVarint(b, int64(p.RMax))
	b = append(b, byte(p.Kind))
	b = binary.AppendUvarint(b, uint64(len(p.Allocations)))
	for _, a := range p.Allocations {
		b = appendField(b, []byte(a))
	}
	return b
}

func appendField(b, f []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(f))), f...)
}

// decoder reads fields from b, remembering the first error; after an error
// every read returns a zero value, so callers check d.err once.
type decoder struct {
	b   []byte
	err error
	// peerID turns bytes into a checked peer ID. Restore sets it to an
	// interning version, so that a snapshot of a million pins on three
	// peers holds three ID strings and checks each once.
	peerID func([]byte) (peer.ID, error)
}

var errTruncated = errors.New("truncated")

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail(errTruncated)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad uvarint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad varint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

// field returns the next length-prefixed field, aliasing d.b.
func (d *decoder) field(max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.fail(fmt.Errorf("field of %d bytes exceeds the limit %d or the %d bytes left", n, max, len(d.b)))
		return nil
	}
	f := d.b[:n]
	d.b = d.b[n:]
	return f
}

// int reads a varint that must fit in [lo, hi].
func (d *decoder) int(what string, lo, hi int64) int {
	v := d.varint()
	if d.err == nil && (v < lo || v > hi) {
		d.fail(fmt.Errorf("%s %d out of range %d..%d", what, v, lo, hi))
	}
	return int(v)
}

func (d *decoder) time() time.Time {
	ns := d.varint()
	if d.err != nil {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

const maxCIDLen = 256 // a CID with a 64-byte digest is under 80 bytes

func (d *decoder) cid() cid.Cid {
	f := d.field(maxCIDLen)
	if d.err != nil {
		return cid.Undef
	}
	c, err := cid.Cast(f) // copies f
	if err != nil {
		d.fail(err)
		return cid.Undef
	}
	return c
}

const maxPeerIDLen = 128 // identity multihashes of RSA keys reach ~40; sha256 ones 34

func (d *decoder) pinFields() Pin {
	var p Pin
	p.CID = d.cid()
	p.Name = string(d.field(MaxNameLen))
	p.RMin = d.int("rmin", Everywhere, MaxReplication)
	p.RMax = d.int("rmax", Everywhere, MaxReplication)
	p.Kind = Kind(d.byte())
	n := d.uvarint()
	if d.err != nil {
		return Pin{}
	}
	if n > MaxAllocations {
		d.fail(fmt.Errorf("%d allocations exceed %d", n, MaxAllocations))
		return Pin{}
	}
	if n > 0 {
		p.Allocations = make([]peer.ID, 0, min(n, uint64(len(d.b))))
	}
	for range n {
		id := d.peerIDField()
		if d.err != nil {
			d.err = fmt.Errorf("allocation %d: %w", len(p.Allocations), d.err)
			return Pin{}
		}
		p.Allocations = append(p.Allocations, id)
	}
	if d.err == nil {
		// Ranges against each other, duplicates, kind; the peer IDs were
		// checked above.
		if err := p.validateShape(); err != nil {
			d.fail(err)
			return Pin{}
		}
	}
	return p
}
