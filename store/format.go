package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/ipfs/go-cid"

	car "github.com/ipld/go-car/v2"
	"github.com/shoal-project/shoal/dag"
)

const (
	// headerPage is the first page of a shard file: CARv2 pragma and header,
	// zero padding, then the CARv1 header ending exactly at headerPage, so that
	// blocks start page-aligned and can be written with O_DIRECT before the
	// root (which the header carries) is known.
	headerPage = 4096

	// align is the alignment O_DIRECT needs of buffer addresses, file offsets
	// and lengths. 4096 covers every logical block size Linux devices use.
	align = 4096

	// v2HeaderEnd is where the CARv2 pragma and fixed header end.
	v2HeaderEnd = car.PragmaSize + car.HeaderSize

	// maxSection is the largest section (CID + data) a shard may hold: go-car's
	// DefaultMaxAllowedSectionSize, so that go-car readers and Kubo's
	// `ipfs dag import` accept every shard we write.
	maxSection = 8 << 20

	// maxV1Header bounds the CARv1 header we accept when reading. Ours is
	// about 60 bytes; the bound only keeps hostile files from making us
	// allocate.
	maxV1Header = 64 << 10

	// codecMhSorted is the multicodec of go-car's multihash-sorted index
	// (car-multihash-index-sorted), the index our shards carry.
	codecMhSorted = 0x0401
)

// layout is where the parts of one shard file are, as read from its headers.
type layout struct {
	root         cid.Cid
	dataOffset   int64 // absolute offset of the inner CARv1
	dataSize     int64 // bytes of the inner CARv1, header included
	hdrLen       int64 // bytes of the CARv1 header: the first section's offset within the CARv1
	indexOffset  int64 // absolute offset of the index, 0 if none
	fullyIndexed bool  // the index lists every section, identity CIDs included
	size         int64 // file size
}

// blocksEnd returns the absolute offset just past the last section.
func (l layout) blocksEnd() int64 { return l.dataOffset + l.dataSize }

// rec is one index entry: a block's multihash and the absolute file offset
// and length of its section.
type rec struct {
	mh  string
	off int64
	n   int64
}

// encodeV1Header returns the CARv1 header for root: varint(len) followed by
// the DAG-CBOR map {"roots": [root], "version": 1}, keys in DAG-CBOR order.
func encodeV1Header(root cid.Cid) []byte {
	cb := root.Bytes()
	body := make([]byte, 0, 32+len(cb))
	body = append(body, 0xa2)                   // map(2)
	body = append(body, 0x65)                   // text(5)
	body = append(body, "roots"...)             //
	body = append(body, 0x81)                   // array(1)
	body = append(body, 0xd8, 0x2a)             // tag(42): CID
	body = cborHead(body, 2, uint64(len(cb)+1)) // bytes(len+1)
	body = append(body, 0x00)                   // multibase identity prefix
	body = append(body, cb...)
	body = append(body, 0x67)         // text(7)
	body = append(body, "version"...) //
	body = append(body, 0x01)         // uint(1)
	out := binary.AppendUvarint(make([]byte, 0, len(body)+2), uint64(len(body)))
	return append(out, body...)
}

// CARv1Header is the header of a CARv1 file whose only root is root, the
// one every shard file holds; an exported DAG's CAR file begins with it.
func CARv1Header(root cid.Cid) []byte { return encodeV1Header(root) }

// cborHead appends a CBOR head of major type major with argument v.
func cborHead(b []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(b, m|byte(v))
	case v <= math.MaxUint8:
		return append(b, m|24, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, m|27), v)
	}
}

// encodeHeaderPage fills page (headerPage bytes, zeroed by the caller) with
// the CARv2 pragma, the CARv2 header and the CARv1 header v1 ending at
// headerPage. blocks is the byte length of all sections.
func encodeHeaderPage(page, v1 []byte, blocks int64) {
	dataOffset := int64(headerPage - len(v1))
	copy(page, car.Pragma)
	h := page[car.PragmaSize:v2HeaderEnd]
	var ch car.Characteristics
	ch.SetFullyIndexed(true)
	binary.LittleEndian.PutUint64(h[0:], ch.Hi)
	binary.LittleEndian.PutUint64(h[8:], ch.Lo)
	binary.LittleEndian.PutUint64(h[16:], uint64(dataOffset))
	binary.LittleEndian.PutUint64(h[24:], uint64(int64(len(v1))+blocks))
	binary.LittleEndian.PutUint64(h[32:], uint64(headerPage+blocks))
	copy(page[dataOffset:headerPage], v1)
}

// readLayout parses and bounds-checks the headers of a shard file of size
// bytes. It never trusts a length before checking it against size.
func readLayout(r io.ReaderAt, size int64) (layout, error) {
	var l layout
	l.size = size
	var hb [v2HeaderEnd]byte
	if size < v2HeaderEnd {
		return l, fmt.Errorf("file of %d bytes is too short for a CARv2 header", size)
	}
	if _, err := r.ReadAt(hb[:], 0); err != nil {
		return l, fmt.Errorf("read CARv2 header: %w", err)
	}
	if !bytes.Equal(hb[:car.PragmaSize], car.Pragma) {
		return l, errors.New("not a CARv2 file (pragma mismatch)")
	}
	h := hb[car.PragmaSize:]
	var ch car.Characteristics
	ch.Hi = binary.LittleEndian.Uint64(h[0:])
	ch.Lo = binary.LittleEndian.Uint64(h[8:])
	l.fullyIndexed = ch.IsFullyIndexed()
	dataOffset := binary.LittleEndian.Uint64(h[16:])
	dataSize := binary.LittleEndian.Uint64(h[24:])
	indexOffset := binary.LittleEndian.Uint64(h[32:])
	us := uint64(size)
	if dataOffset < v2HeaderEnd || dataOffset > us {
		return l, fmt.Errorf("CARv2 data offset %d outside the file (%d bytes)", dataOffset, size)
	}
	if dataSize == 0 || dataSize > us-dataOffset {
		return l, fmt.Errorf("CARv2 data size %d at offset %d runs past the end of the file (%d bytes)", dataSize, dataOffset, size)
	}
	if indexOffset != 0 && (indexOffset < dataOffset+dataSize || indexOffset >= us) {
		return l, fmt.Errorf("CARv2 index offset %d outside [%d, %d)", indexOffset, dataOffset+dataSize, size)
	}
	l.dataOffset, l.dataSize, l.indexOffset = int64(dataOffset), int64(dataSize), int64(indexOffset)

	// CARv1 header: varint(len) DAG-CBOR.
	var vb [binary.MaxVarintLen64]byte
	vn, err := r.ReadAt(vb[:min(int64(len(vb)), l.dataSize)], l.dataOffset)
	if vn == 0 {
		return l, fmt.Errorf("read CARv1 header: %w", err)
	}
	hlen, n := binary.Uvarint(vb[:vn])
	if n <= 0 {
		return l, errors.New("bad CARv1 header length")
	}
	if hlen > maxV1Header || hlen > uint64(l.dataSize-int64(n)) {
		return l, fmt.Errorf("CARv1 header length %d too large", hlen)
	}
	hdr := make([]byte, hlen)
	if _, err := r.ReadAt(hdr, l.dataOffset+int64(n)); err != nil {
		return l, fmt.Errorf("read CARv1 header: %w", err)
	}
	root, err := decodeV1Header(hdr)
	if err != nil {
		return l, fmt.Errorf("CARv1 header: %w", err)
	}
	l.root = root
	l.hdrLen = int64(n) + int64(hlen)
	return l, nil
}

// decodeV1Header decodes a DAG-CBOR CARv1 header with version 1 and exactly
// one root, keys in any order.
func decodeV1Header(b []byte) (cid.Cid, error) {
	d := cborDec{b: b}
	major, n, err := d.head()
	if err != nil {
		return cid.Undef, err
	}
	if major != 5 || n != 2 {
		return cid.Undef, errors.New("not a map of two entries")
	}
	var root cid.Cid
	var sawRoots, sawVersion bool
	for range 2 {
		key, err := d.text()
		if err != nil {
			return cid.Undef, err
		}
		switch key {
		case "roots":
			if sawRoots {
				return cid.Undef, errors.New("duplicate key roots")
			}
			sawRoots = true
			major, n, err := d.head()
			if err != nil {
				return cid.Undef, err
			}
			if major != 4 || n != 1 {
				return cid.Undef, errors.New("roots is not an array of one CID (shards have exactly one root)")
			}
			if root, err = d.cid(); err != nil {
				return cid.Undef, err
			}
		case "version":
			if sawVersion {
				return cid.Undef, errors.New("duplicate key version")
			}
			sawVersion = true
			major, n, err := d.head()
			if err != nil {
				return cid.Undef, err
			}
			if major != 0 || n != 1 {
				return cid.Undef, errors.New("version is not 1")
			}
		default:
			return cid.Undef, fmt.Errorf("unexpected key %q", key)
		}
	}
	if len(d.b) != 0 {
		return cid.Undef, errors.New("trailing bytes")
	}
	return root, nil
}

// cborDec reads the few CBOR items a CARv1 header holds.
type cborDec struct{ b []byte }

var errCBORShort = errors.New("truncated CBOR")

func (d *cborDec) head() (major byte, v uint64, err error) {
	if len(d.b) == 0 {
		return 0, 0, errCBORShort
	}
	major, info := d.b[0]>>5, d.b[0]&0x1f
	d.b = d.b[1:]
	var size int
	switch {
	case info < 24:
		return major, uint64(info), nil
	case info == 24:
		size = 1
	case info == 25:
		size = 2
	case info == 26:
		size = 4
	case info == 27:
		size = 8
	default:
		return 0, 0, fmt.Errorf("unsupported CBOR additional info %d", info)
	}
	if len(d.b) < size {
		return 0, 0, errCBORShort
	}
	for _, c := range d.b[:size] {
		v = v<<8 | uint64(c)
	}
	d.b = d.b[size:]
	return major, v, nil
}

func (d *cborDec) bytesOf(wantMajor byte) ([]byte, error) {
	major, n, err := d.head()
	if err != nil {
		return nil, err
	}
	if major != wantMajor {
		return nil, fmt.Errorf("CBOR major type %d, want %d", major, wantMajor)
	}
	if n > uint64(len(d.b)) {
		return nil, errCBORShort
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s, nil
}

func (d *cborDec) text() (string, error) {
	b, err := d.bytesOf(3)
	return string(b), err
}

func (d *cborDec) cid() (cid.Cid, error) {
	major, tag, err := d.head()
	if err != nil {
		return cid.Undef, err
	}
	if major != 6 || tag != 42 {
		return cid.Undef, errors.New("root is not a CID (tag 42)")
	}
	b, err := d.bytesOf(2)
	if err != nil {
		return cid.Undef, err
	}
	if len(b) < 2 || b[0] != 0 {
		return cid.Undef, errors.New("root CID lacks the identity multibase prefix")
	}
	n, c, err := cid.CidFromBytes(b[1:])
	if err != nil {
		return cid.Undef, fmt.Errorf("root CID: %w", err)
	}
	if n != len(b)-1 {
		return cid.Undef, errors.New("trailing bytes after root CID")
	}
	return c, nil
}

// errNoUsableIndex says a shard has no index we can load (none, another
// codec, or one that omits identity CIDs): its sections must be scanned.
var errNoUsableIndex = errors.New("no usable index")

// readIndex loads the multihash-sorted index of a shard and returns its
// entries sorted by offset, each with its section length. Lengths come from
// the gap to the next section, which is exact because the index lists every
// section (fullyIndexed). Every offset is checked to lie on the section
// grid of the payload; the sections' contents are checked when read.
func readIndex(r io.ReaderAt, l layout) ([]rec, error) {
	if l.indexOffset == 0 || !l.fullyIndexed {
		return nil, errNoUsableIndex
	}
	buf := make([]byte, l.size-l.indexOffset)
	if _, err := r.ReadAt(buf, l.indexOffset); err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	codec, n := binary.Uvarint(buf)
	if n <= 0 {
		return nil, errors.New("bad index codec")
	}
	if codec != codecMhSorted {
		return nil, errNoUsableIndex
	}
	p := idxParser{b: buf[n:]}
	ncodes := p.i32()
	var recs []rec
	var mhb []byte
	for i := int32(0); i < ncodes && p.err == nil; i++ {
		code := p.u64()
		nwidths := p.i32()
		for j := int32(0); j < nwidths && p.err == nil; j++ {
			width := p.u32()
			nbytes := p.i64()
			if p.err != nil {
				break
			}
			if width < 8 || nbytes < 0 || nbytes > int64(len(p.b)) || nbytes%int64(width) != 0 {
				return nil, fmt.Errorf("bad index bucket (width %d, %d bytes)", width, nbytes)
			}
			dl := int(width) - 8
			for k := int64(0); k < nbytes/int64(width); k++ {
				e := p.b[k*int64(width) : (k+1)*int64(width)]
				mhb = binary.AppendUvarint(mhb[:0], code)
				mhb = binary.AppendUvarint(mhb, uint64(dl))
				mhb = append(mhb, e[:dl]...)
				off := binary.LittleEndian.Uint64(e[dl:])
				if off > uint64(l.dataSize) {
					return nil, fmt.Errorf("index offset %d past the data (%d bytes)", off, l.dataSize)
				}
				recs = append(recs, rec{mh: string(mhb), off: l.dataOffset + int64(off)})
			}
			p.b = p.b[nbytes:]
		}
	}
	if p.err != nil {
		return nil, fmt.Errorf("index: %w", p.err)
	}
	if len(p.b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes after the index", len(p.b))
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].off < recs[j].off })
	next := l.dataOffset + l.hdrLen
	for i := range recs {
		if recs[i].off != next {
			return nil, fmt.Errorf("index offset %d does not fall on a section boundary (want %d)", recs[i].off-l.dataOffset, next-l.dataOffset)
		}
		end := l.blocksEnd()
		if i+1 < len(recs) {
			end = recs[i+1].off
		}
		recs[i].n = end - recs[i].off
		if recs[i].n < 2 || recs[i].n > maxSection+binary.MaxVarintLen64 {
			return nil, fmt.Errorf("index gives section at %d a length of %d", recs[i].off-l.dataOffset, recs[i].n)
		}
		next = end
	}
	if next != l.blocksEnd() {
		return nil, fmt.Errorf("index covers %d of %d data bytes", next-l.dataOffset, l.dataSize)
	}
	return recs, nil
}

// idxParser reads little-endian integers, remembering the first shortfall.
type idxParser struct {
	b   []byte
	err error
}

func (p *idxParser) take(n int) []byte {
	if p.err != nil {
		return make([]byte, n)
	}
	if len(p.b) < n {
		p.err = io.ErrUnexpectedEOF
		return make([]byte, n)
	}
	s := p.b[:n]
	p.b = p.b[n:]
	return s
}

func (p *idxParser) u32() uint32 { return binary.LittleEndian.Uint32(p.take(4)) }
func (p *idxParser) u64() uint64 { return binary.LittleEndian.Uint64(p.take(8)) }
func (p *idxParser) i32() int32  { return int32(p.u32()) }
func (p *idxParser) i64() int64  { return int64(p.u64()) }

// scanSections walks the section headers of a shard's payload, reading only
// each section's length and CID, and returns its entries in stored order.
func scanSections(r io.ReaderAt, l layout) ([]rec, error) {
	var recs []rec
	err := forEachSection(r, l, func(c cid.Cid, off, n int64) error {
		recs = append(recs, rec{mh: string(c.Hash()), off: off, n: n})
		return nil
	})
	return recs, err
}

// forEachSection calls fn with the CID, absolute offset and length of each
// section of the payload, in stored order, reading only section headers.
// It stops at fn's first error and returns it.
func forEachSection(r io.ReaderAt, l layout, fn func(c cid.Cid, off, n int64) error) error {
	var hb [512]byte
	for pos := l.dataOffset + l.hdrLen; pos < l.blocksEnd(); {
		left := l.blocksEnd() - pos
		h := hb[:min(int64(len(hb)), left)]
		if _, err := r.ReadAt(h, pos); err != nil {
			return fmt.Errorf("read section at %d: %w", pos, err)
		}
		slen, vn, err := sectionLen(h, left)
		if err != nil {
			return fmt.Errorf("section at %d: %w", pos, err)
		}
		n := int64(vn) + slen
		cl, c, err := cid.CidFromBytes(h[vn:min(int64(len(h)), n)])
		if err != nil && n > int64(len(h)) {
			// A long CID (identity with inline data): read the whole section.
			full := make([]byte, n)
			if _, err := r.ReadAt(full, pos); err != nil {
				return fmt.Errorf("read section at %d: %w", pos, err)
			}
			cl, c, err = cid.CidFromBytes(full[vn:])
		}
		if err != nil {
			return fmt.Errorf("section at %d: CID: %w", pos, err)
		}
		if int64(cl) > slen {
			return fmt.Errorf("section at %d: CID longer than the section", pos)
		}
		if err := fn(c, pos, n); err != nil {
			return err
		}
		pos += n
	}
	return nil
}

// sectionLen decodes a section's length varint from the start of b, for a
// section that has at most left bytes before the end of the payload. It
// returns the length after the varint and the varint's size.
func sectionLen(b []byte, left int64) (int64, int, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, errors.New("bad section length varint")
	}
	if v == 0 || v > maxSection || int64(v) > left-int64(n) {
		return 0, 0, fmt.Errorf("section length %d invalid (%d bytes left, limit %d)", v, left-int64(n), maxSection)
	}
	return int64(v), n, nil
}

// parseSection splits one whole section (varint, CID, data) held in b.
func parseSection(b []byte) (cid.Cid, []byte, error) {
	slen, vn, err := sectionLen(b, int64(len(b)))
	if err != nil {
		return cid.Undef, nil, err
	}
	if int64(vn)+slen != int64(len(b)) {
		return cid.Undef, nil, fmt.Errorf("section length %d does not match its extent %d", slen, len(b)-vn)
	}
	cl, c, err := cid.CidFromBytes(b[vn:])
	if err != nil {
		return cid.Undef, nil, fmt.Errorf("CID: %w", err)
	}
	return c, b[vn+cl:], nil
}

// errMismatch says a block's bytes do not hash to its CID.
var errMismatch = dag.ErrMismatch

// checkHash re-hashes data and compares with c (dag.Verify).
func checkHash(c cid.Cid, data []byte) error { return dag.Verify(c, data) }
