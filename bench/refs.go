package bench

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"

	blockservice "github.com/ipfs/boxo/blockservice"
	blockstore "github.com/ipfs/boxo/blockstore"
	chunk "github.com/ipfs/boxo/chunker"
	offline "github.com/ipfs/boxo/exchange/offline"
	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	h "github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/go-cid"
	flatfs "github.com/ipfs/go-ds-flatfs"
	ipld "github.com/ipfs/go-ipld-format"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// HashPiece is the size of the pieces SHA256 hashes one by one: the
// default chunk, so that the figure is what hashing leaves can reach.
const HashPiece = 256 << 10

// SHA256 hashes the file's bytes in HashPiece pieces, each piece on its
// own (as leaves are), with the given number of goroutines, each reading
// its own contiguous range with pread into its own buffer. From a warm
// page cache the reads are memory copies (14-19 GB/s here, PERF.md), so the
// result is the machine's SHA-256 rate plus one copy, which the ingest
// pays too. It returns the XOR of the pieces' digests, the same for any
// number of goroutines.
func SHA256(ctx context.Context, path string, workers int) ([sha256.Size]byte, error) {
	var all [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return all, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return all, err
	}
	pieces := (fi.Size() + HashPiece - 1) / HashPiece
	per := (pieces + int64(workers) - 1) / int64(workers)
	sums := make([][sha256.Size]byte, workers)
	g, ctx := errgroup.WithContext(ctx)
	for w := range int64(workers) {
		g.Go(func() error {
			buf := make([]byte, HashPiece)
			var acc [sha256.Size]byte
			for p := w * per; p < min((w+1)*per, pieces); p++ {
				if p%64 == 0 && ctx.Err() != nil {
					return ctx.Err()
				}
				n, err := f.ReadAt(buf, p*HashPiece)
				if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
					return fmt.Errorf("read %s at %d: %w", path, p*HashPiece, err)
				}
				xor(&acc, sha256.Sum256(buf[:n]))
			}
			sums[w] = acc
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return all, err
	}
	for _, s := range sums {
		xor(&all, s)
	}
	return all, nil
}

func xor(acc *[sha256.Size]byte, s [sha256.Size]byte) {
	for i := range acc {
		acc[i] ^= s[i]
	}
}

// BoxoParams are `ipfs add`'s defaults (Kubo v0.43): 256 KiB fixed-size
// chunks, balanced layout with 174 links per node, CIDv0, dag-pb leaves.
func BoxoParams(ds ipld.DAGService) h.DagBuilderParams {
	return h.DagBuilderParams{
		Maxlinks:   h.DefaultLinksPerBlock,
		CidBuilder: mdag.V0CidPrefix(),
		Dagserv:    ds,
	}
}

// BoxoImport runs boxo's importer with Kubo's default options over r into
// ds and returns the root CID: the code `ipfs add` runs for one file.
func BoxoImport(r io.Reader, ds ipld.DAGService) (cid.Cid, error) {
	p := BoxoParams(ds)
	db, err := p.New(chunk.NewSizeSplitter(r, chunk.DefaultBlockSize))
	if err != nil {
		return cid.Undef, err
	}
	nd, err := balanced.Layout(db)
	if err != nil {
		return cid.Undef, err
	}
	return nd.Cid(), nil
}

// BoxoFlatfs imports r the way `ipfs add` stores a file in a default Kubo
// repo: into a go-ds-flatfs datastore at dir (next-to-last/2 sharding, sync
// off as Kubo v0.43 configures it), through boxo's blockstore (write-through,
// Kubo's default Datastore.WriteThrough), an offline blockservice, a
// merkledag DAGService and the BufferedDAG Kubo's adder puts in front of
// it. Kubo's caches, metrics and GC locks around the blockstore are left
// out: they cost little on a fresh write-only import.
func BoxoFlatfs(ctx context.Context, r io.Reader, dir string) (cid.Cid, error) {
	fs, err := flatfs.CreateOrOpen(dir, flatfs.NextToLast(2), false)
	if err != nil {
		return cid.Undef, fmt.Errorf("open flatfs %s: %w", dir, err)
	}
	// Kubo mounts flatfs at /blocks, so flatfs sees keys without that
	// prefix: NoPrefix gives it the same keys.
	bs := blockstore.NewBlockstore(fs, blockstore.NoPrefix(), blockstore.WriteThrough(true))
	bsvc := blockservice.New(bs, offline.Exchange(bs), blockservice.WriteThrough(true))
	buffered := ipld.NewBufferedDAG(ctx, mdag.NewDAGService(bsvc))
	root, err := BoxoImport(r, buffered)
	if err == nil {
		err = buffered.Commit()
	}
	if cerr := bsvc.Close(); err == nil {
		err = cerr
	}
	if cerr := fs.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return cid.Undef, fmt.Errorf("import into flatfs %s: %w", dir, err)
	}
	return root, nil
}

// Discard is a DAGService that keeps nothing: the hashing-only reference.
// Get never finds a node; the importer never asks.
type Discard struct{}

var _ ipld.DAGService = Discard{}

func (Discard) Get(context.Context, cid.Cid) (ipld.Node, error) { return nil, ipld.ErrNotFound{} }
func (Discard) GetMany(context.Context, []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption)
	close(ch)
	return ch
}
func (Discard) Add(context.Context, ipld.Node) error        { return nil }
func (Discard) AddMany(context.Context, []ipld.Node) error  { return nil }
func (Discard) Remove(context.Context, cid.Cid) error       { return nil }
func (Discard) RemoveMany(context.Context, []cid.Cid) error { return nil }

// DirectBlock is the size of the O_DIRECT writes: large enough that the
// per-request cost vanishes (PERF.md measured 1.0-1.2 GB/s with it).
const DirectBlock = 4 << 20

// DirectWrite writes size bytes to a new file at path, sequentially with
// O_DIRECT in DirectBlock aligned writes, then fdatasyncs: the disk's
// sequential write rate, the ceiling of any store. size is rounded up to a
// whole block. The bytes are random, each block distinct, so that neither
// compression nor deduplication below the file system can help.
func DirectWrite(ctx context.Context, path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_DIRECT, 0o644)
	if err != nil {
		return fmt.Errorf("open %s with O_DIRECT: %w", path, err)
	}
	defer f.Close()
	// mmap'd memory is page aligned, as O_DIRECT requires.
	buf, err := syscall.Mmap(-1, 0, DirectBlock, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("allocate aligned buffer: %w", err)
	}
	defer syscall.Munmap(buf)
	_, _ = rand.NewChaCha8(Seed).Read(buf)
	for i := int64(0); i*DirectBlock < size; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		binary.LittleEndian.PutUint64(buf, uint64(i))
		if _, err := f.Write(buf); err != nil {
			return fmt.Errorf("write %s at %d: %w", path, i*DirectBlock, err)
		}
	}
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", path, err)
	}
	return f.Close()
}

// DirectReadBlock is the size of DirectRead's reads: what shoal's store
// reads shards in (store.readBufSizeDirect), and what `dd bs=1M
// iflag=direct` reads.
const DirectReadBlock = 1 << 20

// DirectRead reads the file at path sequentially with O_DIRECT, in
// DirectReadBlock aligned reads, and returns its size: the disk's
// sequential read rate, the ceiling of any read of data that is not in
// the page cache, as shoal's shards never are (its store reads and
// writes them with O_DIRECT). Pages of the file in the page cache do not
// help it.
func DirectRead(ctx context.Context, path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s with O_DIRECT: %w", path, err)
	}
	defer f.Close()
	buf, err := syscall.Mmap(-1, 0, DirectReadBlock, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return 0, fmt.Errorf("allocate aligned buffer: %w", err)
	}
	defer syscall.Munmap(buf)
	var total int64
	for ctx.Err() == nil {
		n, err := f.Read(buf)
		total += int64(n)
		if err == io.EOF || (err == nil && n < len(buf)) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("read %s at %d: %w", path, total, err)
		}
	}
	return total, ctx.Err()
}

// BoxoCat writes the file under root, stored in the go-ds-flatfs datastore
// at dir (as BoxoFlatfs leaves it), to w the way `ipfs cat` reads it on a
// single node: boxo's blockstore over flatfs, an offline blockservice, a
// merkledag DAGService and boxo's UnixFS DagReader. It returns the bytes
// written.
func BoxoCat(ctx context.Context, dir string, root cid.Cid, w io.Writer) (int64, error) {
	fs, err := flatfs.Open(dir, false)
	if err != nil {
		return 0, fmt.Errorf("open flatfs %s: %w", dir, err)
	}
	defer fs.Close()
	bs := blockstore.NewBlockstore(fs, blockstore.NoPrefix())
	bsvc := blockservice.New(bs, offline.Exchange(bs))
	defer bsvc.Close()
	ds := mdag.NewDAGService(bsvc)
	nd, err := ds.Get(ctx, root)
	if err != nil {
		return 0, fmt.Errorf("get %s from flatfs %s: %w", root, dir, err)
	}
	r, err := uio.NewDagReader(ctx, nd, ds)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", root, err)
	}
	defer r.Close()
	n, err := io.Copy(w, r)
	if err != nil {
		return n, fmt.Errorf("read %s from flatfs %s: %w", root, dir, err)
	}
	return n, nil
}

// DropCache asks the kernel to drop every file under dir from the page
// cache (posix_fadvise DONTNEED; dirty pages stay, so sync first), so that
// a read of them comes from the device, as a read of shoal's store does:
// shoal writes its shards with O_DIRECT, past the page cache.
func DropCache(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
}
