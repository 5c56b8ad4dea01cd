package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/ipfs/go-cid"
	"golang.org/x/sys/unix"

	"github.com/shoal-project/shoal/internal/durable"
)

// Sentinel errors, for callers that branch on them with errors.Is. Every
// error returned by this package wraps at most one of them and names the
// directory, shard key or CID concerned.
var (
	// ErrNotFound: Get, OpenShard, Verify or Delete asked for a block or a
	// shard key the store does not hold.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt: stored bytes do not match their CID or the shard's own
	// structure. Errors wrapping it are *CorruptError, which names the
	// shard and the block.
	ErrCorrupt = errors.New("corrupt shard")
	// ErrLocked: Open found the directory held by another Store, in this
	// process or another one.
	ErrLocked = errors.New("store directory is in use by another shoal process or Store (LOCK is held)")
	// ErrVersion: Open found a VERSION file it cannot read, or a newer
	// format than this build understands.
	ErrVersion = errors.New("unsupported store format version")
	// ErrExists: Commit found a shard with the same key and different
	// content.
	ErrExists = errors.New("a shard with this key and different content exists")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("store closed")
)

// CorruptError describes damage found in a stored shard. It unwraps to
// ErrCorrupt.
type CorruptError struct {
	Key    string  // shard key
	CID    cid.Cid // the block concerned; cid.Undef if the damage is not in one block
	Offset int64   // byte offset of the damaged section in the shard file, -1 if none
	Reason string
}

func (e *CorruptError) Error() string {
	if e.CID.Defined() {
		return fmt.Sprintf("shard %s: block %s at offset %d: %s", e.Key, e.CID, e.Offset, e.Reason)
	}
	if e.Offset >= 0 {
		return fmt.Sprintf("shard %s: at offset %d: %s", e.Key, e.Offset, e.Reason)
	}
	return fmt.Sprintf("shard %s: %s", e.Key, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// ShardInfo describes one committed shard.
type ShardInfo struct {
	Key    string  // the caller's key, also the file name without ".car"
	Root   cid.Cid // the root in the CAR header
	Size   int64   // bytes of the shard file on disk
	Blocks int     // number of blocks (sections), duplicates counted
}

// Quarantine records a shard file that Open could not load and moved aside.
type Quarantine struct {
	Key  string // key the file had
	Path string // where it now is, under dir/corrupt/
	Err  error  // why it was refused
}

const (
	versionFile = "VERSION"
	lockFile    = "LOCK"
	shardsDir   = "shards"
	tmpDir      = "tmp"
	corruptDir  = "corrupt"
	shardExt    = ".car"

	// FormatVersion is the on-disk format this build writes and reads (see
	// doc.go). Open refuses a directory of any other version.
	FormatVersion = 1
	versionPrefix = "shoal-store "

	// defaultBufSize is the size of each of a Writer's two O_DIRECT buffers.
	// PERF.md measures O_DIRECT at 1.0-1.2 GB/s with 4 MiB writes;
	// BenchmarkWriter gives 1.19-1.52 GB/s with 4 MiB and 0.59-1.32 GB/s
	// with 8 MiB (doc.go), so 4 MiB: as fast or faster, and a Writer stays
	// at 8 MiB of memory.
	defaultBufSize = 4 << 20

	// pooledBufs is how many idle writer buffers a Store keeps for reuse:
	// freshly allocated memory is slow to touch on these VMs (PERF.md).
	pooledBufs = 4
)

// loc is where one block lives: ~24 bytes plus its map key (see doc.go).
type loc struct {
	sh  *shard
	off int64 // absolute offset of the section in the shard file
	n   int64 // section length, varint included
}

// shard is one committed shard file. It is immutable once registered.
type shard struct {
	info ShardInfo
	path string
}

// Store is a directory of shards and an in-memory index of their blocks.
// Its methods are safe for concurrent use by any number of goroutines; each
// Writer it hands out belongs to one goroutine.
type Store struct {
	dir     string
	lock    *os.File
	bufSize int
	bufs    chan []byte // idle aligned writer buffers
	rbufs   chan []byte // idle aligned shard reader buffers

	// commitMu serialises what changes dir/shards: Commit's final rename and
	// Delete, so that the key check and the rename are one step.
	commitMu sync.Mutex

	mu          sync.RWMutex // guards the fields below
	closed      bool
	shards      map[string]*shard
	index       map[string]loc   // multihash bytes -> first known location
	dups        map[string][]loc // further locations of multihashes stored more than once
	used        int64
	quarantined []Quarantine
}

// Open opens the store in dir, creating the directory layout if absent. It
// takes an exclusive flock on dir/LOCK for the life of the Store (the kernel
// drops it if the process dies, so a crash never leaves a stale lock); a
// second Open of the same dir, from this process or another, fails with
// ErrLocked. It checks dir/VERSION (ErrVersion if unknown or newer), deletes
// the temporary files of writers from a crashed run, and loads every shard's
// index into memory. A shard file that fails to load is moved to dir/corrupt/
// and listed by Quarantined; it does not make Open fail.
//
// Open reads every shard's index, so it takes time and memory in proportion
// to the number of stored blocks (doc.go gives the figures).
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	if err := flock(lf, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("open store %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open store %s: lock %s: %w", dir, lockFile, err)
	}
	s := &Store{
		dir:     dir,
		lock:    lf,
		bufSize: defaultBufSize,
		bufs:    make(chan []byte, pooledBufs),
		rbufs:   make(chan []byte, pooledBufs),
		shards:  make(map[string]*shard),
		index:   make(map[string]loc),
		dups:    make(map[string][]loc),
	}
	if err := s.init(); err != nil {
		lf.Close() // releases the flock
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	return s, nil
}

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), how)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// init runs under the lock: version, layout, cleanup, load.
func (s *Store) init() error {
	for _, d := range []string{shardsDir, tmpDir} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := s.checkVersion(); err != nil {
		return err
	}
	if err := s.clearTmp(); err != nil {
		return err
	}
	return s.load()
}

// checkVersion reads dir/VERSION, or writes it when the store is new.
func (s *Store) checkVersion() error {
	p := filepath.Join(s.dir, versionFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		ents, _ := os.ReadDir(filepath.Join(s.dir, shardsDir))
		if len(ents) > 0 {
			return fmt.Errorf("%s is missing but %s/ holds files: %w", versionFile, shardsDir, ErrVersion)
		}
		return writeFileSync(filepath.Join(s.dir, tmpDir), filepath.Join(s.dir, versionFile), []byte(versionLine(FormatVersion)))
	}
	if err != nil {
		return err
	}
	line, ok := strings.CutPrefix(string(b), versionPrefix)
	line, ok2 := strings.CutSuffix(line, "\n")
	v, err := strconv.Atoi(line)
	if !ok || !ok2 || err != nil || v < 1 || strconv.Itoa(v) != line {
		return fmt.Errorf("%s holds %q, not %q: %w", versionFile, b, versionLine(FormatVersion), ErrVersion)
	}
	if v != FormatVersion {
		return fmt.Errorf("format version %d is newer than the %d this build reads (upgrade shoal): %w", v, FormatVersion, ErrVersion)
	}
	return nil
}

func versionLine(v int) string { return versionPrefix + strconv.Itoa(v) + "\n" }

// writeFileSync writes data to path atomically and durably, through a
// temporary file in tmp (on the same filesystem, and emptied by Open).
func writeFileSync(tmp, path string, data []byte) error {
	f, err := os.CreateTemp(tmp, filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	err = f.Chmod(0o644)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	return durable.SyncDir(filepath.Dir(path))
}

// clearTmp removes what writers of an earlier run left in dir/tmp. Holding
// the lock, no live writer can own them.
func (s *Store) clearTmp() error {
	d := filepath.Join(s.dir, tmpDir)
	ents, err := os.ReadDir(d)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(d, e.Name())); err != nil {
			return fmt.Errorf("remove leftover %s: %w", e.Name(), err)
		}
	}
	return nil
}

// load registers every shard file, quarantining those that fail to load.
func (s *Store) load() error {
	d := filepath.Join(s.dir, shardsDir)
	ents, err := os.ReadDir(d)
	if err != nil {
		return err
	}
	moved := false
	for _, e := range ents {
		name := e.Name()
		key, ok := strings.CutSuffix(name, shardExt)
		if !ok || !e.Type().IsRegular() {
			continue // not ours: leave it alone
		}
		p := filepath.Join(d, name)
		sh, recs, err := loadShard(p, key)
		if err == nil && !validKey(key) {
			err = fmt.Errorf("file name %q is not a valid shard key", name)
		}
		if err != nil {
			dst, merr := s.quarantine(p, name)
			if merr != nil {
				return fmt.Errorf("move unreadable shard %s aside (%v): %w", p, err, merr)
			}
			s.quarantined = append(s.quarantined, Quarantine{Key: key, Path: dst, Err: err})
			moved = true
			continue
		}
		s.add(sh, recs)
	}
	if moved {
		if err := durable.SyncDir(d); err != nil {
			return err
		}
		return durable.SyncDir(filepath.Join(s.dir, corruptDir))
	}
	return nil
}

// loadShard reads a shard file's headers and index (or scans its sections
// if it has no usable index).
func loadShard(path, key string) (*shard, []rec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	l, err := readLayout(f, st.Size())
	if err != nil {
		return nil, nil, err
	}
	recs, err := readIndex(f, l)
	if errors.Is(err, errNoUsableIndex) {
		recs, err = scanSections(f, l)
	}
	if err != nil {
		return nil, nil, err
	}
	sh := &shard{
		info: ShardInfo{Key: key, Root: l.root, Size: l.size, Blocks: len(recs)},
		path: path,
	}
	return sh, recs, nil
}

// quarantine moves dir/shards/name to dir/corrupt/, never over another file.
func (s *Store) quarantine(src, name string) (string, error) {
	cd := filepath.Join(s.dir, corruptDir)
	if err := os.MkdirAll(cd, 0o755); err != nil {
		return "", err
	}
	dst := filepath.Join(cd, name)
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		dst = filepath.Join(cd, name+"."+strconv.Itoa(i))
	}
	return dst, os.Rename(src, dst)
}

// add registers a shard and its blocks. The caller holds s.mu or owns s.
func (s *Store) add(sh *shard, recs []rec) {
	s.shards[sh.info.Key] = sh
	s.used += sh.info.Size
	for _, r := range recs {
		l := loc{sh: sh, off: r.off, n: r.n}
		if _, ok := s.index[r.mh]; ok {
			s.dups[r.mh] = append(s.dups[r.mh], l)
			continue
		}
		s.index[r.mh] = l
	}
}

// remove unregisters a shard whose blocks' multihashes are mhs. The caller
// holds s.mu.
func (s *Store) remove(sh *shard, mhs []string) {
	delete(s.shards, sh.info.Key)
	s.used -= sh.info.Size
	for _, k := range mhs {
		s.dropLocs(k, sh)
	}
}

// dropLocs removes the locations of multihash k that lie in sh, promoting a
// duplicate from another shard if there is one.
func (s *Store) dropLocs(k string, sh *shard) {
	first, ok := s.index[k]
	if !ok {
		return
	}
	var keep []loc
	if first.sh != sh {
		keep = append(keep, first)
	}
	for _, l := range s.dups[k] {
		if l.sh != sh {
			keep = append(keep, l)
		}
	}
	delete(s.dups, k)
	if len(keep) == 0 {
		delete(s.index, k)
		return
	}
	s.index[k] = keep[0]
	if len(keep) > 1 {
		s.dups[k] = keep[1:]
	}
}

// Close releases the directory lock. Writers still open can no longer
// commit (their Commit fails with ErrClosed); they must still be ended with
// Commit or Abort to stop their goroutine. Close is idempotent.
func (s *Store) Close() error {
	// commitMu first: a Commit or Delete in progress finishes its rename or
	// removal before the lock is released to another process.
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.lock.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.dir, err)
	}
	return nil
}

// Quarantined returns the shard files Open moved to dir/corrupt/ because
// they failed to load, for the caller to log. The slice is a copy.
func (s *Store) Quarantined() []Quarantine {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]Quarantine(nil), s.quarantined...)
}

// Has reports whether a block with c's multihash is stored. Blocks match by
// multihash, whatever the CID's version and codec.
func (s *Store) Has(c cid.Cid) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.index[string(c.Hash())]
	return ok
}

// Locate returns the key of a shard that holds a block with c's
// multihash: the first one the index knew of, when several do.
func (s *Store) Locate(c cid.Cid) (key string, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l, ok := s.index[string(c.Hash())]
	if !ok {
		return "", false
	}
	return l.sh.info.Key, true
}

// Size returns the length of the data of the block with c's multihash,
// from the index, without reading it: the section's length less its
// varint and c's bytes (exact when the stored CID is c, as it is for
// every block shoal stores; a stored CID of another version or codec,
// matched by multihash, can differ by a few bytes).
func (s *Store) Size(c cid.Cid) (int, bool) {
	s.mu.RLock()
	l, ok := s.index[string(c.Hash())]
	s.mu.RUnlock()
	if !ok {
		return 0, false
	}
	// n = varint(body) + body, body = CID + data.
	for v := 1; v <= 10; v++ {
		if body := l.n - int64(v); body > 0 && varintLen(uint64(body)) == v {
			return max(int(body)-len(c.Bytes()), 0), true
		}
	}
	return 0, false
}

// varintLen is the length of x as an unsigned varint.
func varintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

// HasShard reports whether a committed shard has key.
func (s *Store) HasShard(key string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.shards[key]
	return ok
}

// Get returns the data of the block with c's multihash, read from disk and
// re-hashed against c: a mismatch returns a *CorruptError (ErrCorrupt)
// naming the shard and the CID; an unknown block returns ErrNotFound. The
// returned slice is the caller's. Identity CIDs are only found if stored.
func (s *Store) Get(c cid.Cid) ([]byte, error) { return s.get(c, true) }

// GetUnhashed is Get without the re-hash: the section is still checked to
// hold c's multihash. For a caller that hashes what it gets anyway (the
// read protocol's client does), so that a block is hashed once.
func (s *Store) GetUnhashed(c cid.Cid) ([]byte, error) { return s.get(c, false) }

func (s *Store) get(c cid.Cid, hash bool) ([]byte, error) {
	s.mu.RLock()
	l, ok := s.index[string(c.Hash())]
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return nil, fmt.Errorf("get block %s: %w", c, ErrClosed)
	}
	if !ok {
		return nil, fmt.Errorf("get block %s: %w", c, ErrNotFound)
	}
	data, err := l.read(c, hash)
	if errors.Is(err, fs.ErrNotExist) {
		// Deleted between the lookup and the open.
		return nil, fmt.Errorf("get block %s: %w", c, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get block %s: %w", c, err)
	}
	return data, nil
}

// read reads the section at l and checks that it holds c's multihash and,
// if hash, that its data hashes to it.
func (l loc) read(c cid.Cid, hash bool) ([]byte, error) {
	f, err := os.Open(l.sh.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readSection(f, l.sh.info.Key, l.off, l.n, c, hash)
}

// readSection reads the n-byte section at off of shard key from r, checks
// that it holds c's multihash and, if hash, that its data hashes to it,
// and returns the data.
func readSection(r io.ReaderAt, key string, off, n int64, c cid.Cid, hash bool) ([]byte, error) {
	bad := func(reason string) error {
		return &CorruptError{Key: key, CID: c, Offset: off, Reason: reason}
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, off); err != nil {
		return nil, bad("read section: " + errText(err))
	}
	got, data, err := parseSection(buf)
	if err != nil {
		return nil, bad(err.Error())
	}
	if !bytes.Equal(got.Hash(), c.Hash()) {
		return nil, bad("the index points at block " + got.String())
	}
	if !hash {
		return data, nil
	}
	if err := checkHash(got, data); err != nil {
		if errors.Is(err, errMismatch) {
			return nil, bad(err.Error())
		}
		return nil, fmt.Errorf("shard %s: %w", key, err)
	}
	return data, nil
}

// Shards lists the committed shards, sorted by key.
func (s *Store) Shards() []ShardInfo {
	s.mu.RLock()
	out := make([]ShardInfo, 0, len(s.shards))
	for _, sh := range s.shards {
		out = append(out, sh.info)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Count returns the number of committed shards.
func (s *Store) Count() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.shards)
}

// Used returns the bytes on disk of the committed shards.
func (s *Store) Used() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.used
}

// shard returns the registered shard of key.
func (s *Store) shard(key string) (*shard, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	sh, ok := s.shards[key]
	if !ok {
		return nil, ErrNotFound
	}
	return sh, nil
}

// Delete removes a shard and its blocks; blocks also stored in other shards
// stay available. Readers that already opened the shard finish reading it.
// An unknown key returns ErrNotFound.
func (s *Store) Delete(key string) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	sh, err := s.shard(key)
	if err != nil {
		return fmt.Errorf("delete shard %s: %w", key, err)
	}
	// The file is immutable and was read at registration, so reading its
	// index again gives the multihashes to drop without keeping a per-shard
	// list in memory. If it became unreadable since, sweep the whole index.
	var mhs []string
	if _, recs, err := loadShard(sh.path, key); err == nil {
		mhs = make([]string, len(recs))
		for i, r := range recs {
			mhs[i] = r.mh
		}
	}
	if err := os.Remove(sh.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete shard %s: %w", key, err)
	}
	s.mu.Lock()
	if mhs == nil {
		mhs = s.locsIn(sh)
	}
	s.remove(sh, mhs)
	s.mu.Unlock()
	if err := durable.SyncDir(filepath.Join(s.dir, shardsDir)); err != nil {
		return fmt.Errorf("delete shard %s: %w", key, err)
	}
	return nil
}

// validKey reports whether key can name a shard file: 1-200 bytes of
// [A-Za-z0-9._-], not starting with '.'. CID strings in base32 and base58
// qualify.
func validKey(key string) bool {
	if key == "" || len(key) > 200 || key[0] == '.' {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
