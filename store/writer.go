package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-car/v2/index"
	"golang.org/x/sys/unix"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/internal/durable"
)

// Writer writes one new shard. It is made by Store.Create and belongs to one
// goroutine; it runs one goroutine of its own, which writes full buffers to
// disk while Put fills the other. Every Writer must end with Commit or Abort,
// which wait for that goroutine.
//
// Memory: two buffers of defaultBufSize whatever the shard size, plus one
// index entry (~80 bytes) per block until Commit.
type Writer struct {
	s      *Store
	f      *os.File
	path   string
	direct bool // O_DIRECT is on; touched by the flusher, then by Commit after it stopped

	owned   [2][]byte // both aligned buffers, returned to the Store's pool at the end
	cur     []byte    // the buffer Put fills; nil while both are with the flusher
	fill    int
	fileOff int64 // file offset of cur[0]

	size int64          // section bytes written by Put
	recs []index.Record // per block: CID and offset from the start of the blocks

	jobs   chan job      // full buffers to write, to the flusher
	free   chan written  // written buffers, from the flusher
	exited chan struct{} // closed when the flusher returns

	err   error // first write error; sticky
	state wstate
	info  ShardInfo // after Commit

	hook func(stage string) // tests: called between Commit's stages
}

type wstate int

const (
	writing wstate = iota
	committed
	aborted
)

type job struct {
	buf []byte
	off int64
}

type written struct {
	buf []byte
	err error
}

// Create starts a new shard in dir/tmp/. ctx is only checked before the
// file is created: a Writer's life is bounded by Commit and Abort, not by a
// context. The caller must end the Writer with Commit or Abort.
func (s *Store) Create(ctx context.Context) (*Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create shard: %w", err)
	}
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return nil, fmt.Errorf("create shard in %s: %w", s.dir, ErrClosed)
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "shard-*"+shardExt)
	if err != nil {
		return nil, fmt.Errorf("create shard: %w", err)
	}
	// Readable by other local tools (`ipfs dag import`), like any data file.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("create shard: %w", err)
	}
	w := &Writer{
		s:       s,
		f:       f,
		path:    f.Name(),
		direct:  setDirect(f, true) == nil, // refused (EINVAL on some filesystems): plain writes
		owned:   [2][]byte{s.getBuf(), s.getBuf()},
		fileOff: headerPage,
		jobs:    make(chan job, 1),
		free:    make(chan written, 2),
		exited:  make(chan struct{}),
		hook:    func(string) {},
	}
	w.cur = w.owned[0]
	w.free <- written{buf: w.owned[1]}
	go w.flushLoop()
	return w, nil
}

// setDirect turns O_DIRECT on or off for f.
func setDirect(f *os.File, on bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		var fl int
		if fl, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0); ferr != nil {
			return
		}
		if on {
			fl |= unix.O_DIRECT
		} else {
			fl &^= unix.O_DIRECT
		}
		_, ferr = unix.FcntlInt(fd, unix.F_SETFL, fl)
	}); err != nil {
		return err
	}
	return ferr
}

// getBuf returns an idle aligned buffer of s.bufSize bytes.
func (s *Store) getBuf() []byte {
	for {
		select {
		case b := <-s.bufs:
			if len(b) == s.bufSize {
				return b
			}
		default:
			return alignedBuf(s.bufSize)
		}
	}
}

func (s *Store) putBuf(b []byte) {
	select {
	case s.bufs <- b[:cap(b)]:
	default:
	}
}

// getReadBuf returns an idle aligned buffer of readBufSizeDirect bytes
// for a ShardReader; putReadBuf takes it back.
func (s *Store) getReadBuf() []byte {
	select {
	case b := <-s.rbufs:
		return b
	default:
		return alignedBuf(readBufSizeDirect)
	}
}

func (s *Store) putReadBuf(b []byte) {
	select {
	case s.rbufs <- b:
	default:
	}
}

// alignedBuf returns n bytes whose address is a multiple of align, as
// O_DIRECT requires. Go's heap does not move objects.
func alignedBuf(n int) []byte {
	b := make([]byte, n+align)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) & (align - 1)); r != 0 {
		skip = align - r
	}
	return b[skip : skip+n : skip+n]
}

// flushLoop writes the buffers it is sent and hands them back, until jobs
// is closed. After a write error it stops writing but keeps handing buffers
// back, so Put never blocks on it.
func (w *Writer) flushLoop() {
	defer close(w.exited)
	var failed error
	for j := range w.jobs {
		if failed == nil {
			failed = w.writeAt(j.buf, j.off)
		}
		w.free <- written{buf: j.buf, err: failed}
	}
}

// writeAt writes p at off, falling back to plain writes the first time the
// filesystem refuses an O_DIRECT write (EINVAL).
func (w *Writer) writeAt(p []byte, off int64) error {
	_, err := w.f.WriteAt(p, off)
	if err != nil && w.direct && errors.Is(err, unix.EINVAL) {
		if setDirect(w.f, false) == nil {
			w.direct = false
			_, err = w.f.WriteAt(p, off)
		}
	}
	if err != nil {
		return fmt.Errorf("write %s at %d: %w", w.path, off, err)
	}
	return nil
}

// Put appends b to the shard. It copies b.Data, so the caller may reuse it
// on return; it keeps b.CID (an immutable string) for the index. It blocks only while both buffers wait for the disk. A section
// (CID + data) over 8 MiB is refused, as go-car and Kubo refuse them. After
// an error the Writer can only be aborted.
func (w *Writer) Put(b dag.Block) error {
	if w.state != writing {
		return fmt.Errorf("put block %s: writer already ended", b.CID)
	}
	if w.err != nil {
		return fmt.Errorf("put block %s: %w", b.CID, w.err)
	}
	if !b.CID.Defined() {
		return errors.New("put block: undefined CID")
	}
	k := b.CID.KeyString()
	slen := len(k) + len(b.Data)
	if slen > maxSection {
		return fmt.Errorf("put block %s: %d bytes with its CID exceed the %d-byte section limit of CAR readers", b.CID, slen, maxSection)
	}
	var vb [binary.MaxVarintLen64]byte
	vn := binary.PutUvarint(vb[:], uint64(slen))
	w.recs = append(w.recs, index.Record{Cid: b.CID, Offset: uint64(w.size)})
	w.size += int64(vn + slen)
	if err := write(w, vb[:vn]); err != nil {
		return fmt.Errorf("put block %s: %w", b.CID, err)
	}
	if err := write(w, k); err != nil {
		return fmt.Errorf("put block %s: %w", b.CID, err)
	}
	if err := write(w, b.Data); err != nil {
		return fmt.Errorf("put block %s: %w", b.CID, err)
	}
	return nil
}

// Size returns the bytes of block sections (varint, CID, data) written so
// far: the shard's payload, without headers and index.
func (w *Writer) Size() int64 { return w.size }

// write copies p into the buffers, handing each full one to the flusher.
func write[T string | []byte](w *Writer, p T) error {
	for len(p) > 0 {
		n := copy(w.cur[w.fill:], p)
		w.fill += n
		p = p[n:]
		if w.fill == len(w.cur) {
			if err := w.submit(); err != nil {
				return err
			}
		}
	}
	return nil
}

// submit sends cur to the flusher and takes the other buffer, waiting for
// it to be written if need be.
func (w *Writer) submit() error {
	w.jobs <- job{buf: w.cur, off: w.fileOff}
	w.fileOff += int64(len(w.cur))
	d := <-w.free
	w.cur, w.fill = d.buf[:cap(d.buf)], 0
	if d.err != nil {
		w.err = d.err
	}
	return d.err
}

// indexSink lets go-car's index encoder write into the buffers.
type indexSink struct{ w *Writer }

func (s indexSink) Write(p []byte) (int, error) {
	if err := write(s.w, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// stop waits for the flusher to write what it was sent and to return, and
// reports the first write error.
func (w *Writer) stop() error {
	if w.jobs == nil {
		return nil
	}
	close(w.jobs)
	<-w.exited
	w.jobs = nil
	var err error
	for {
		select {
		case d := <-w.free:
			if d.err != nil && err == nil {
				err = d.err
			}
		default:
			return err
		}
	}
}

// Commit makes the shard durable under key with root in its CAR header:
// it writes the index after the blocks, the header page, truncates the file
// to its length, fdatasyncs it, renames it to dir/shards/<key>.car and
// fsyncs that directory. When Commit returns nil, the shard survives a
// crash and its blocks are visible to Get.
//
// key must be 1-200 bytes of [A-Za-z0-9._-] not starting with '.' (a CID
// string qualifies). If key is already stored with the same root and the
// same blocks, Commit discards this copy and returns the stored shard's
// info; with different content it fails with ErrExists. ctx is checked
// between stages; once the rename is done the commit stands.
//
// On error nothing is stored and the Writer is aborted. Calling Commit again
// after a success with the same key and root returns the same info.
func (w *Writer) Commit(ctx context.Context, key string, root cid.Cid) (ShardInfo, error) {
	switch w.state {
	case committed:
		if key == w.info.Key && root.Equals(w.info.Root) {
			return w.info, nil
		}
		return ShardInfo{}, fmt.Errorf("commit shard %s: writer already committed shard %s", key, w.info.Key)
	case aborted:
		return ShardInfo{}, fmt.Errorf("commit shard %s: writer was aborted", key)
	}
	info, err := w.commit(ctx, key, root)
	if err != nil {
		w.Abort()
		return ShardInfo{}, fmt.Errorf("commit shard %s: %w", key, err)
	}
	w.state = committed
	w.info = info
	w.release()
	return info, nil
}

func (w *Writer) commit(ctx context.Context, key string, root cid.Cid) (ShardInfo, error) {
	if !validKey(key) {
		return ShardInfo{}, errors.New("key must be 1-200 bytes of [A-Za-z0-9._-], not starting with '.'")
	}
	if !root.Defined() {
		return ShardInfo{}, errors.New("undefined root CID")
	}
	v1 := encodeV1Header(root)
	if len(v1) > headerPage-v2HeaderEnd {
		return ShardInfo{}, fmt.Errorf("root CID of %d bytes does not fit the header page", root.ByteLen())
	}
	if w.err != nil {
		return ShardInfo{}, w.err
	}
	if err := ctx.Err(); err != nil {
		return ShardInfo{}, err
	}

	// Index, in go-car's multihash-sorted form, with offsets counted from
	// the start of the inner CARv1, right after the blocks.
	hdrLen := uint64(len(v1))
	for i := range w.recs {
		w.recs[i].Offset += hdrLen
	}
	idx := index.NewMultihashSorted()
	if err := idx.Load(w.recs); err != nil {
		return ShardInfo{}, fmt.Errorf("build index: %w", err)
	}
	if _, err := index.WriteTo(idx, indexSink{w}); err != nil {
		return ShardInfo{}, fmt.Errorf("write index: %w", err)
	}
	total := w.fileOff + int64(w.fill)

	// The tail: pad the last partial buffer to the alignment, write it,
	// and truncate the padding away below.
	if w.fill > 0 {
		pad := (w.fill + align - 1) &^ (align - 1)
		clear(w.cur[w.fill:pad])
		w.jobs <- job{buf: w.cur[:pad], off: w.fileOff}
		w.cur = nil
	}
	if err := w.stop(); err != nil {
		return ShardInfo{}, err
	}
	w.hook("written")
	if err := ctx.Err(); err != nil {
		return ShardInfo{}, err
	}
	page := w.owned[0][:headerPage]
	clear(page)
	encodeHeaderPage(page, v1, w.size)
	if err := w.writeAt(page, 0); err != nil {
		return ShardInfo{}, err
	}
	if err := w.f.Truncate(total); err != nil {
		return ShardInfo{}, fmt.Errorf("truncate %s: %w", w.path, err)
	}
	if err := fdatasync(w.f); err != nil {
		return ShardInfo{}, fmt.Errorf("fdatasync %s: %w", w.path, err)
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		return ShardInfo{}, fmt.Errorf("close %s: %w", w.path, err)
	}
	w.hook("synced")
	if err := ctx.Err(); err != nil {
		return ShardInfo{}, err
	}
	info := ShardInfo{Key: key, Root: root, Size: total, Blocks: len(w.recs)}
	return w.s.publish(w.path, info, w.recs, headerPage-int64(hdrLen), headerPage+w.size)
}

func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

// Abort discards the shard: it stops the Writer's goroutine and removes the
// temporary file. It is a no-op after Commit or a previous Abort.
func (w *Writer) Abort() error {
	if w.state != writing {
		return nil
	}
	w.state = aborted
	w.stop() // write errors no longer matter
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	w.release()
	if err := os.Remove(w.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("abort shard: %w", err)
	}
	return nil
}

// release gives the buffers back to the Store and drops the index entries.
// The flusher has stopped.
func (w *Writer) release() {
	for i, b := range w.owned {
		w.s.putBuf(b)
		w.owned[i] = nil
	}
	w.cur, w.recs = nil, nil
}

// publish moves a synced temporary shard file into dir/shards/ and
// registers its blocks, or, if key is taken, checks that the stored shard
// has the same content. recs hold offsets from dataOffset, in stored order;
// the blocks end at blocksEnd.
func (s *Store) publish(tmp string, info ShardInfo, recs []index.Record, dataOffset, blocksEnd int64) (ShardInfo, error) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.RLock()
	closed, old := s.closed, s.shards[info.Key]
	s.mu.RUnlock()
	if closed {
		return ShardInfo{}, ErrClosed
	}
	if old != nil {
		if err := sameContent(old, info, recs, dataOffset); err != nil {
			return ShardInfo{}, err
		}
		if err := os.Remove(tmp); err != nil {
			return ShardInfo{}, err
		}
		return old.info, nil
	}
	sd := filepath.Join(s.dir, shardsDir)
	dst := filepath.Join(sd, info.Key+shardExt)
	if err := os.Rename(tmp, dst); err != nil {
		return ShardInfo{}, err
	}
	if err := durable.SyncDir(sd); err != nil {
		// Not known durable: do not leave it for the next Open to find.
		os.Remove(dst)
		return ShardInfo{}, err
	}
	rs := make([]rec, len(recs))
	for i, r := range recs {
		end := blocksEnd
		if i+1 < len(recs) {
			end = dataOffset + int64(recs[i+1].Offset)
		}
		off := dataOffset + int64(r.Offset)
		rs[i] = rec{mh: string(r.Cid.Hash()), off: off, n: end - off}
	}
	sh := &shard{info: info, path: dst}
	s.mu.Lock()
	s.add(sh, rs)
	s.mu.Unlock()
	return info, nil
}

// sameContent checks that the stored shard old holds the same root and the
// same CIDs at the same offsets as a new shard. Every block is checked
// against its CID when read, so equal CIDs mean equal content.
func sameContent(old *shard, info ShardInfo, recs []index.Record, dataOffset int64) error {
	differ := fmt.Errorf("%w (stored: root %s, %d blocks, %d bytes; new: root %s, %d blocks, %d bytes)",
		ErrExists, old.info.Root, old.info.Blocks, old.info.Size, info.Root, info.Blocks, info.Size)
	if !old.info.Root.Equals(info.Root) || old.info.Blocks != info.Blocks || old.info.Size != info.Size {
		return differ
	}
	f, err := os.Open(old.path)
	if err != nil {
		return err
	}
	defer f.Close()
	l, err := readLayout(f, old.info.Size)
	if err != nil {
		return &CorruptError{Key: old.info.Key, Offset: -1, Reason: err.Error()}
	}
	i := 0
	err = forEachSection(f, l, func(c cid.Cid, off, _ int64) error {
		if i >= len(recs) || !c.Equals(recs[i].Cid) || off != dataOffset+int64(recs[i].Offset) {
			return differ
		}
		i++
		return nil
	})
	if err != nil {
		return err
	}
	if i != len(recs) {
		return differ
	}
	return nil
}
