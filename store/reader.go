package store

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/ipfs/go-cid"
	"golang.org/x/sys/unix"

	"github.com/shoal-project/shoal/dag"
)

// readBufSize is the read-ahead of a ShardReader: large enough that reading
// a shard of 256 KiB blocks costs few system calls.
const readBufSize = 256 << 10

// ShardReader iterates the blocks of one shard in stored order, checking
// each against its CID unless it was made by Store.OpenShardUnchecked. It
// is made by Store.OpenShard or OpenShardUnchecked, belongs to one
// goroutine, and must be closed. It holds the file open, so a concurrent
// Delete does not cut it short.
type ShardReader struct {
	key string
	ra  io.ReaderAt
	c   io.Closer // nil when reading from memory (fuzzing)
	lay layout
	br  byteReader
	// release closes the descriptor of a direct read and returns its
	// buffer to the Store.
	release func()
	pos     int64  // absolute offset of the next section
	buf     []byte // reused section buffer, at most maxSection bytes
	// unchecked: Next does not hash blocks (OpenShardUnchecked).
	unchecked bool
}

// byteReader is what Next reads sections from: a bufio.Reader, or a
// directReader.
type byteReader interface {
	io.Reader
	io.ByteReader
}

// OpenShard opens the shard stored under key for reading, every block
// checked against its CID. An unknown key returns ErrNotFound; a file whose
// headers are damaged, *CorruptError.
func (s *Store) OpenShard(key string) (*ShardReader, error) {
	return s.openShard(key, false)
}

// OpenShardUnchecked is OpenShard for a caller that hashes every block
// itself: its Next does not re-hash a block against its CID, so a block
// whose bytes changed on disk is returned as it lies there. Everything
// else is still checked (the headers, each section's length against the
// file, that its CID parses), so a damaged file gives a *CorruptError,
// never a panic or an allocation beyond the section limit.
//
// The read server of package cluster uses it: its reader hashes every block
// it receives anyway, and hashing on both sides doubled the CPU time of a
// remote read. Damage it lets through is found by that reader and by
// Verify.
func (s *Store) OpenShardUnchecked(key string) (*ShardReader, error) {
	return s.openShard(key, true)
}

func (s *Store) openShard(key string, unchecked bool) (*ShardReader, error) {
	sh, err := s.shard(key)
	if err != nil {
		return nil, fmt.Errorf("open shard %s: %w", key, err)
	}
	f, err := os.Open(sh.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open shard %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open shard %s: %w", key, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open shard %s: %w", key, err)
	}
	r, err := newShardReader(f, st.Size(), key)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open shard %s: %w", key, err)
	}
	r.c = f
	r.unchecked = unchecked
	// Read the blocks with O_DIRECT, through a descriptor of their own
	// (the index and headers are read at unaligned offsets through f),
	// where the filesystem allows it: see directReader.
	if df, err := os.OpenFile(sh.path, os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
		d := newDirectReader(df, s.getReadBuf(), s.getReadBuf(), r.pos, r.lay.blocksEnd())
		r.br = d
		r.release = func() {
			for _, b := range d.close() {
				s.putReadBuf(b)
			}
			df.Close()
		}
	}
	return r, nil
}

// newShardReader reads the headers of the size-byte shard in ra.
func newShardReader(ra io.ReaderAt, size int64, key string) (*ShardReader, error) {
	l, err := readLayout(ra, size)
	if err != nil {
		return nil, &CorruptError{Key: key, Offset: -1, Reason: err.Error()}
	}
	start := l.dataOffset + l.hdrLen
	return &ShardReader{
		key: key,
		ra:  ra,
		lay: l,
		br:  bufio.NewReaderSize(io.NewSectionReader(ra, start, l.blocksEnd()-start), readBufSize),
		pos: start,
	}, nil
}

// Root returns the root CID in the shard's CAR header.
func (r *ShardReader) Root() cid.Cid { return r.lay.root }

// Next returns the next block, or io.EOF after the last one. The block's
// Data is only valid until the next call: the buffer is reused so that
// reading a shard takes bounded memory. A block that does not match its CID
// (not checked by a reader of OpenShardUnchecked), or a damaged section,
// returns a *CorruptError naming the shard, the CID (when readable) and the
// offset; iteration should stop there.
func (r *ShardReader) Next() (dag.Block, error) {
	b, sec, err := r.next(r.buf)
	if cap(sec) > cap(r.buf) {
		r.buf = sec[:0]
	}
	return b, err
}

// NextInto is Next reading the block into buf's spare capacity (from
// buf[0], whatever len(buf) is), which the caller owns: it returns the
// block and how many bytes of buf the block's section took, or 0 when the
// section did not fit and was read into new memory. The reader keeps no
// reference to buf, so the caller may hold the block as long as it likes.
func (r *ShardReader) NextInto(buf []byte) (dag.Block, int, error) {
	b, sec, err := r.next(buf[:0])
	if err != nil || len(sec) > cap(buf) {
		return b, 0, err // next reads into buf whenever the section fits
	}
	return b, len(sec), nil
}

// next reads the next section into buf when it fits, else into new memory,
// and returns its block and the section's bytes.
func (r *ShardReader) next(buf []byte) (dag.Block, []byte, error) {
	end := r.lay.blocksEnd()
	if r.pos >= end {
		return dag.Block{}, nil, io.EOF
	}
	bad := func(c cid.Cid, reason string) error {
		return &CorruptError{Key: r.key, CID: c, Offset: r.pos, Reason: reason}
	}
	var vb [binary.MaxVarintLen64]byte
	vn := 0
	for {
		b, err := r.br.ReadByte()
		if err != nil {
			return dag.Block{}, nil, bad(cid.Undef, "read section length: "+errText(err))
		}
		vb[vn] = b
		vn++
		if b < 0x80 || vn == len(vb) {
			break
		}
	}
	slen, _, err := sectionLen(vb[:vn], end-r.pos)
	if err != nil {
		return dag.Block{}, nil, bad(cid.Undef, err.Error())
	}
	var sec []byte
	if int64(cap(buf)) >= slen {
		sec = buf[:slen]
	} else {
		sec = make([]byte, slen)
	}
	if _, err := io.ReadFull(r.br, sec); err != nil {
		return dag.Block{}, sec, bad(cid.Undef, "read section: "+errText(err))
	}
	cl, c, err := cid.CidFromBytes(sec)
	if err != nil {
		return dag.Block{}, sec, bad(cid.Undef, "CID: "+err.Error())
	}
	data := sec[cl:]
	if !r.unchecked {
		if err := checkHash(c, data); err != nil {
			if errors.Is(err, errMismatch) {
				return dag.Block{}, sec, bad(c, err.Error())
			}
			return dag.Block{}, sec, fmt.Errorf("shard %s: block %s: %w", r.key, c, err)
		}
	}
	r.pos += int64(vn) + slen
	return dag.Block{CID: c, Data: data}, sec, nil
}

func errText(err error) string {
	if errors.Is(err, io.EOF) {
		return "unexpected end of data"
	}
	return err.Error()
}

// Close closes the shard file.
func (r *ShardReader) Close() error {
	if r.c == nil {
		return nil
	}
	err := r.c.Close()
	r.c = nil
	if r.release != nil {
		r.release()
		r.release = nil
	}
	return err
}

// verifyEvery is how many blocks Verify reads between context checks.
const verifyEvery = 64

// Verify reads the shard stored under key, re-hashes every block, and
// checks that the file's index lists exactly the blocks found at their
// offsets. It returns the first damage as a *CorruptError (ErrCorrupt)
// naming the CID, ErrNotFound for an unknown key, or ctx's error.
// It reads the whole shard; any goroutine may call it.
func (s *Store) Verify(ctx context.Context, key string) error {
	r, err := s.OpenShard(key)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer r.Close()
	type found struct {
		c   cid.Cid
		off int64
	}
	var blocks []found
	for i := 0; ; i++ {
		if i%verifyEvery == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("verify shard %s: %w", key, err)
			}
		}
		off := r.pos
		b, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		blocks = append(blocks, found{c: b.CID, off: off})
	}
	recs, err := readIndex(r.ra, r.lay)
	if errors.Is(err, errNoUsableIndex) {
		return nil // blocks were found by scanning; nothing to cross-check
	}
	if err != nil {
		return fmt.Errorf("verify: %w", &CorruptError{Key: key, Offset: r.lay.indexOffset, Reason: "index: " + err.Error()})
	}
	for i, b := range blocks {
		if i >= len(recs) || recs[i].off != b.off || recs[i].mh != string(b.c.Hash()) {
			return fmt.Errorf("verify: %w", &CorruptError{Key: key, CID: b.c, Offset: b.off, Reason: "the index does not list this block at this offset"})
		}
	}
	if len(recs) != len(blocks) {
		return fmt.Errorf("verify: %w", &CorruptError{Key: key, Offset: r.lay.indexOffset,
			Reason: fmt.Sprintf("the index lists %d blocks, the data holds %d", len(recs), len(blocks))})
	}
	return nil
}
