package consensus

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The snapshot format, version 1. Integers are encoding/binary varints;
// "bytes" is a uvarint length and that many bytes.
//
//	header  "shoal-pinset 1\n"            (the format name and version, a text line)
//	count   uvarint                       (number of pins)
//	record  * count, in ascending order of CID bytes:
//	        length(uvarint) then length bytes of
//	        cid(bytes) name(bytes) rmin(varint) rmax(varint) kind(1 byte)
//	        nalloc(uvarint) allocation(bytes)*nalloc
//	        created(varint, Unix ns) updated(varint, Unix ns)
//
// The stream ends right after the last record. The pin fields are encoded
// as in an OpPin body. Records are length-prefixed so that a reader can
// bound what it buffers and a future version can append fields. Writers
// and readers stream through bufio: memory is the pins themselves, never
// a copy of the whole snapshot. Raft's file snapshot store adds its own
// CRC over the stream. The golden bytes are in testdata/snapshot-v1.bin.
const snapshotHeader = "shoal-pinset 1\n"

// maxRecord bounds one snapshot record: a pin with the longest name and
// the most allocations fits with room to spare.
const maxRecord = 512 << 10

func writeSnapshot(w io.Writer, pins []*Pin) error {
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
	return bw.Flush()
}

func readSnapshot(r io.Reader) (map[cid.Cid]*Pin, error) {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("read pinset snapshot: %s: %w", fmt.Sprintf(format, args...), ErrCorruptSnapshot)
	}
	br := bufio.NewReaderSize(r, 1<<20)
	header := make([]byte, len(snapshotHeader))
	if _, err := io.ReadFull(br, header); err != nil || string(header) != snapshotHeader {
		return nil, corrupt("header %q, want %q", header, snapshotHeader)
	}
	count, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, corrupt("pin count: %v", err)
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
			return nil, corrupt("length of record %d of %d: %v", i, count, err)
		}
		if n > maxRecord {
			return nil, corrupt("record %d is %d bytes, limit %d", i, n, maxRecord)
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, corrupt("record %d of %d: %v", i, count, err)
		}
		d.b, d.err = buf, nil
		p := d.pinFields()
		created, updated := d.time(), d.time()
		if d.err == nil && len(d.b) != 0 {
			d.err = fmt.Errorf("%d bytes after the fields", len(d.b))
		}
		if d.err != nil {
			return nil, corrupt("record %d: %v", i, d.err)
		}
		key := p.CID.KeyString()
		if i > 0 && key <= prev {
			return nil, corrupt("record %d: CID %s out of order or repeated", i, p.CID)
		}
		prev = key
		p.Created, p.Updated = created, updated
		pins[p.CID] = &p
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return nil, corrupt("data after the last of %d records", count)
	}
	return pins, nil
}
