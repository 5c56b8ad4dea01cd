package consensus

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The snapshot format, version 4. Integers are encoding/binary varints;
// "bytes" is a uvarint length and that many bytes.
//
//	header  "shoal-pinset 4\n"            (the format name and version, a text line)
//	count   uvarint                       (number of pins)
//	record  * count, in ascending order of CID bytes:
//	        length(uvarint) then length bytes of
//	        cid(bytes) name(bytes) rmin(varint) rmax(varint) kind(1 byte)
//	        nalloc(uvarint) allocation(bytes)*nalloc
//	        [kind 2, sharded: size(uvarint) clusterdag(bytes) nshards(uvarint) shard*nshards]
//	        created(varint, Unix ns) updated(varint, Unix ns)
//	nadds   uvarint                       (adds in progress)
//	add     * nadds, in ascending order of ID:
//	        length(uvarint) then length bytes of
//	        id(bytes) name(bytes) rmin(varint) rmax(varint) owner(bytes)
//	        started(varint) updated(varint) nshards(uvarint) shard*nshards
//	nrepairs uvarint                      (repairs in progress)
//	repair  * nrepairs, in ascending order of (root, part) bytes:
//	        length(uvarint) then length bytes of
//	        root(bytes) part(bytes) started(varint) npending(uvarint) peer(bytes)*npending
//	nremoved uvarint                      (peers removed from the cluster: removed.go)
//	removed * nremoved, in ascending order of peer ID bytes:
//	        length(uvarint) then length bytes of
//	        peer(bytes) at(varint, Unix ns)
//	shard   = cid(bytes) size blocks offset length (uvarints) nalloc(uvarint) allocation(bytes)*nalloc
//
// Version 3 (testdata/snapshot-v3.hex) is version 4 without the removed
// peers; version 2 (testdata/snapshot-v2.hex) is version 3 without the repairs;
// version 1 (testdata/snapshot-v1.hex) is version 2 without the sharded
// fields and the adds. Readers take all four, writers write version 4.
//
// The stream ends right after the last record. The pin fields are encoded
// as in an OpPin body. Records are length-prefixed so that a reader can
// bound what it buffers and a future version can append fields. Writers
// and readers stream through bufio: memory is the pins themselves, never
// a copy of the whole snapshot. Raft's file snapshot store adds its own
// CRC over the stream. The golden bytes are in testdata/snapshot-v1.bin.
const (
	snapshotHeader   = "shoal-pinset 4\n"
	snapshotHeaderV3 = "shoal-pinset 3\n"
	snapshotHeaderV2 = "shoal-pinset 2\n"
	snapshotHeaderV1 = "shoal-pinset 1\n"
)

// maxRecord bounds one snapshot record: a sharded pin of 100,000 shards
// (10 TiB at 100 MiB a shard) fits.
const maxRecord = 64 << 20

func writeSnapshot(w io.Writer, pins []*Pin, adds []*Add, repairs []*Repair, removed []removedPeer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.WriteString(snapshotHeader); err != nil {
		return err
	}
	var rec, lenBuf []byte
	lenBuf = binary.AppendUvarint(lenBuf[:0], uint64(len(pins)))
	if _, err := bw.Write(lenBuf); err != nil {
		return err
	}
	for _, p := range pins {
		rec = appendPinFields(rec[:0], p)
		if p.Kind == KindSharded {
			rec = appendShardedFields(rec, p)
		}
		rec = binary.AppendVarint(rec, p.Created.UnixNano())
		rec = binary.AppendVarint(rec, p.Updated.UnixNano())
		lenBuf = binary.AppendUvarint(lenBuf[:0], uint64(len(rec)))
		if _, err := bw.Write(lenBuf); err != nil {
			return err
		}
		if _, err := bw.Write(rec); err != nil {
			return err
		}
	}
	lenBuf = binary.AppendUvarint(lenBuf[:0], uint64(len(adds)))
	if _, err := bw.Write(lenBuf); err != nil {
		return err
	}
	for _, a := range adds {
		rec = appendField(rec[:0], []byte(a.ID))
		rec = appendField(rec, []byte(a.Name))
		rec = binary.AppendVarint(rec, int64(a.RMin))
		rec = binary.AppendVarint(rec, int64(a.RMax))
		rec = appendField(rec, []byte(a.Owner))
		rec = binary.AppendVarint(rec, a.Started.UnixNano())
		rec = binary.AppendVarint(rec, a.Updated.UnixNano())
		rec = binary.AppendUvarint(rec, uint64(len(a.Shards)))
		for i := range a.Shards {
			rec = appendShard(rec, &a.Shards[i])
		}
		lenBuf = binary.AppendUvarint(lenBuf[:0], uint64(len(rec)))
		if _, err := bw.Write(lenBuf); err != nil {
			return err
		}
		if _, err := bw.Write(rec); err != nil {
			return err
		}
	}
	lenBuf = binary.AppendUvarint(lenBuf[:0], uint64(len(repairs)))
	if _, err := bw.Write(lenBuf); err != nil {
		return err
	}
	for _, r := range repairs {
		rec = appendField(rec[:0], r.Root.Bytes())
		rec = appendField(rec, r.Part.Bytes())
		rec = binary.AppendVarint(rec, r.Started.UnixNano())
		rec = binary.AppendUvarint(rec, uint64(len(r.Pending)))
		for _, a := range r.Pending {
			rec = appendField(rec, []byte(a))
		}
		lenBuf = binary.AppendUvarint(lenBuf[:0], uint64(len(rec)))
		if _, err := bw.Write(lenBuf); err != nil {
			return err
		}
		if _, err := bw.Write(rec); err != nil {
			return err
		}
	}
	lenBuf = binary.AppendUvarint(lenBuf[:0], uint64(len(removed)))
	if _, err := bw.Write(lenBuf); err != nil {
		return err
	}
	for _, r := range removed {
		rec = appendField(rec[:0], []byte(r.ID))
		rec = binary.AppendVarint(rec, r.At.UnixNano())
		lenBuf = binary.AppendUvarint(lenBuf[:0], uint64(len(rec)))
		if _, err := bw.Write(lenBuf); err != nil {
			return err
		}
		if _, err := bw.Write(rec); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// snapshotData is what a snapshot holds.
type snapshotData struct {
	pins    map[cid.Cid]*Pin
	adds    map[string]*Add
	repairs map[cid.Cid][]*Repair
	removed map[peer.ID]time.Time
}

func readSnapshot(r io.Reader) (snapshotData, error) {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("read pinset snapshot: %s: %w", fmt.Sprintf(format, args...), ErrCorruptSnapshot)
	}
	br := bufio.NewReaderSize(r, 1<<20)
	header := make([]byte, len(snapshotHeader))
	if _, err := io.ReadFull(br, header); err != nil ||
		(string(header) != snapshotHeader && string(header) != snapshotHeaderV3 &&
			string(header) != snapshotHeaderV2 && string(header) != snapshotHeaderV1) {
		return snapshotData{}, corrupt("header %q, want %q", header, snapshotHeader)
	}
	v1, v2, v3 := string(header) == snapshotHeaderV1, string(header) == snapshotHeaderV2, string(header) == snapshotHeaderV3
	count, err := binary.ReadUvarint(br)
	if err != nil {
		return snapshotData{}, corrupt("pin count: %v", err)
	}
	// The count is not trusted for the allocation: a corrupt one must not
	// reserve memory the records never fill.
	pins := make(map[cid.Cid]*Pin, min(count, 1<<20))
	ids := make(map[string]peer.ID) // one string per distinct peer
	d := decoder{peerID: func(b []byte) (peer.ID, error) {
		if id, ok := ids[string(b)]; ok {
			return id, nil
		}
		id, err := peer.IDFromBytes(b)
		if err == nil {
			ids[string(id)] = id
		}
		return id, err
	}}
	buf := make([]byte, 0, 4096)
	var prev string
	for i := range count {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return snapshotData{}, corrupt("length of record %d of %d: %v", i, count, err)
		}
		if n > maxRecord {
			return snapshotData{}, corrupt("record %d is %d bytes, limit %d", i, n, maxRecord)
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return snapshotData{}, corrupt("record %d of %d: %v", i, count, err)
		}
		d.b, d.err = buf, nil
		p := d.pinFields()
		if p.Kind == KindSharded && !v1 {
			d.shardedFields(&p)
		}
		created, updated := d.time(), d.time()
		if d.err == nil && len(d.b) != 0 {
			d.err = fmt.Errorf("%d bytes after the fields", len(d.b))
		}
		if d.err != nil {
			return snapshotData{}, corrupt("record %d: %v", i, d.err)
		}
		key := p.CID.KeyString()
		if i > 0 && key <= prev {
			return snapshotData{}, corrupt("record %d: CID %s out of order or repeated", i, p.CID)
		}
		prev = key
		p.Created, p.Updated = created, updated
		pins[p.CID] = &p
	}
	adds := make(map[string]*Add)
	if !v1 {
		nadds, err := binary.ReadUvarint(br)
		if err != nil {
			return snapshotData{}, corrupt("add count: %v", err)
		}
		var prevID string
		for i := range nadds {
			n, err := binary.ReadUvarint(br)
			if err != nil || n > maxRecord {
				return snapshotData{}, corrupt("length of add %d of %d: %v", i, nadds, err)
			}
			if uint64(cap(buf)) < n {
				buf = make([]byte, n)
			}
			buf = buf[:n]
			if _, err := io.ReadFull(br, buf); err != nil {
				return snapshotData{}, corrupt("add %d of %d: %v", i, nadds, err)
			}
			d.b, d.err = buf, nil
			var a Add
			a.ID = string(d.field(MaxAddIDLen))
			a.Name = string(d.field(MaxNameLen))
			a.RMin = d.int("rmin", Everywhere, MaxReplication)
			a.RMax = d.int("rmax", Everywhere, MaxReplication)
			a.Owner = d.peerIDField()
			a.Started, a.Updated = d.time(), d.time()
			ns := d.uvarint()
			if d.err == nil && ns > MaxShards {
				d.fail(fmt.Errorf("%d shards exceed %d", ns, MaxShards))
			}
			for j := uint64(0); j < ns && d.err == nil; j++ {
				a.Shards = append(a.Shards, d.shard())
			}
			if d.err == nil && len(d.b) != 0 {
				d.err = fmt.Errorf("%d bytes after the fields", len(d.b))
			}
			if d.err == nil {
				d.err = validateAddID(a.ID)
			}
			if d.err != nil {
				return snapshotData{}, corrupt("add %d: %v", i, d.err)
			}
			if i > 0 && a.ID <= prevID {
				return snapshotData{}, corrupt("add %d out of order or repeated", i)
			}
			prevID = a.ID
			adds[a.ID] = &a
		}
	}
	repairs := make(map[cid.Cid][]*Repair)
	if !v1 && !v2 {
		nrep, err := binary.ReadUvarint(br)
		if err != nil {
			return snapshotData{}, corrupt("repair count: %v", err)
		}
		var prevKey string
		for i := range nrep {
			n, err := binary.ReadUvarint(br)
			if err != nil || n > maxRecord {
				return snapshotData{}, corrupt("length of repair %d of %d: %v", i, nrep, err)
			}
			if uint64(cap(buf)) < n {
				buf = make([]byte, n)
			}
			buf = buf[:n]
			if _, err := io.ReadFull(br, buf); err != nil {
				return snapshotData{}, corrupt("repair %d of %d: %v", i, nrep, err)
			}
			d.b, d.err = buf, nil
			var r Repair
			r.Root, r.Part = d.cid(), d.cid()
			r.Started = d.time()
			r.Pending = d.peerIDs()
			if d.err == nil && len(d.b) != 0 {
				d.err = fmt.Errorf("%d bytes after the fields", len(d.b))
			}
			if d.err == nil {
				d.err = RepairOp(r.Root, r.Part, nil, r.Pending, r.Started).validateRepairOp()
			}
			if d.err == nil {
				if p, ok := pins[r.Root]; !ok {
					d.err = fmt.Errorf("root %s is not pinned", r.Root)
				} else if _, ok := partHolders(p, r.Part); !ok {
					d.err = fmt.Errorf("%s is not a part of %s", r.Part, r.Root)
				}
			}
			if d.err != nil {
				return snapshotData{}, corrupt("repair %d: %v", i, d.err)
			}
			key := r.Root.KeyString() + r.Part.KeyString()
			if i > 0 && key <= prevKey {
				return snapshotData{}, corrupt("repair %d out of order or repeated", i)
			}
			prevKey = key
			repairs[r.Part] = append(repairs[r.Part], &r)
		}
	}
	removed := make(map[peer.ID]time.Time)
	if !v1 && !v2 && !v3 {
		nrem, err := binary.ReadUvarint(br)
		if err != nil {
			return snapshotData{}, corrupt("removed peer count: %v", err)
		}
		var prevID peer.ID
		for i := range nrem {
			n, err := binary.ReadUvarint(br)
			if err != nil || n > maxRecord {
				return snapshotData{}, corrupt("length of removed peer %d of %d: %v", i, nrem, err)
			}
			if uint64(cap(buf)) < n {
				buf = make([]byte, n)
			}
			buf = buf[:n]
			if _, err := io.ReadFull(br, buf); err != nil {
				return snapshotData{}, corrupt("removed peer %d of %d: %v", i, nrem, err)
			}
			d.b, d.err = buf, nil
			id, at := d.peerIDField(), d.time()
			if d.err == nil && len(d.b) != 0 {
				d.err = fmt.Errorf("%d bytes after the fields", len(d.b))
			}
			if d.err != nil {
				return snapshotData{}, corrupt("removed peer %d: %v", i, d.err)
			}
			if i > 0 && id <= prevID {
				return snapshotData{}, corrupt("removed peer %d out of order or repeated", i)
			}
			prevID = id
			removed[id] = at
		}
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return snapshotData{}, corrupt("data after the last of %d records", count)
	}
	return snapshotData{pins, adds, repairs, removed}, nil
}
