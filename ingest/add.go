package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/shoal-project/shoal/dag"
)

// Entry is one added file, symlink or directory, as `shoal add` reports it.
type Entry struct {
	// Name is the path as the user gave it, joined with the entry's path
	// below it (slash-separated); for stdin it is the root CID, as Kubo
	// prints it.
	Name string
	CID  cid.Cid
	// Size is the number of file bytes for a file, and the cumulative
	// size of the blocks below a directory.
	Size uint64
	Dir  bool
}

// AddOptions are the tree flags of `shoal add`.
type AddOptions struct {
	Recursive bool // -r: directories are allowed
	Hidden    bool // -H: include files whose name starts with a dot
	Wrap      bool // -w: wrap the added items in one directory
}

// ErrIsDir is returned for a directory given without -r.
var ErrIsDir = errors.New("is a directory; add it with -r")

// Add ingests the named paths in order. Directories are walked in name
// order, their entries before the directory itself; symlinks are stored as
// UnixFS symlinks and never followed, as Kubo does, so a symlink loop is
// stored as the links it is. onEntry, if not nil, is called on the calling
// goroutine for every file and directory once it is complete. The returned
// entry is the wrapping directory with -w, otherwise the last path's root.
func (in *Ingester) Add(ctx context.Context, paths []string, opts AddOptions, sink Sink, onEntry func(Entry)) (Entry, error) {
	if len(paths) == 0 {
		return Entry{}, errors.New("no path to add")
	}
	a := in.adder(sink, onEntry)
	var wrap uio.Directory
	if opts.Wrap {
		var err error
		if wrap, err = a.newDir(); err != nil {
			return Entry{}, err
		}
	}
	var last Entry
	for _, p := range paths {
		e, nd, err := a.addPath(ctx, p, filepath.ToSlash(filepath.Clean(p)), opts, true)
		if err != nil {
			return Entry{}, err
		}
		last = e
		if wrap != nil {
			if err := wrap.AddChild(ctx, path.Base(filepath.ToSlash(p)), nd); err != nil {
				return Entry{}, fmt.Errorf("wrap %s: %w", p, err)
			}
		}
	}
	if wrap == nil {
		return last, nil
	}
	return a.finishDir(ctx, wrap, "")
}

// AddReader ingests r (stdin) as one file. With opts.Wrap the file is
// wrapped in a directory under name, or under its own CID when name is "".
func (in *Ingester) AddReader(ctx context.Context, r io.Reader, name string, opts AddOptions, sink Sink, onEntry func(Entry)) (Entry, error) {
	a := in.adder(sink, onEntry)
	e, nd, err := a.addFile(ctx, r, name)
	if err != nil {
		return Entry{}, err
	}
	if !opts.Wrap {
		return e, nil
	}
	if name == "" {
		name = e.CID.String()
	}
	wrap, err := a.newDir()
	if err != nil {
		return Entry{}, err
	}
	if err := wrap.AddChild(ctx, name, nd); err != nil {
		return Entry{}, fmt.Errorf("wrap: %w", err)
	}
	return a.finishDir(ctx, wrap, "")
}

// adder holds the state of one Add: the sink, and the last block emitted,
// which is the root of whatever was just built. lastData aliases a pipeline
// buffer; it stays intact until the next File call, and rootNode copies it
// before that.
type adder struct {
	in       *Ingester
	sink     Sink
	onEntry  func(Entry)
	lastCID  cid.Cid
	lastData []byte
}

func (in *Ingester) adder(sink Sink, onEntry func(Entry)) *adder {
	if onEntry == nil {
		onEntry = func(Entry) {}
	}
	return &adder{in: in, sink: sink, onEntry: onEntry}
}

// Put records the block and passes it on; every block of an Add flows
// through here.
func (a *adder) Put(ctx context.Context, b dag.Block) error {
	if err := a.sink.Put(ctx, b); err != nil {
		return err
	}
	a.lastCID, a.lastData = b.CID, b.Data
	return nil
}

// rootNode turns the last emitted block into a node for a directory link.
func (a *adder) rootNode(c cid.Cid) (ipld.Node, error) {
	if !a.lastCID.Equals(c) {
		return nil, fmt.Errorf("internal error: root %s was not the last block", c)
	}
	blk, err := blocks.NewBlockWithCid(append([]byte(nil), a.lastData...), c)
	if err != nil {
		return nil, err
	}
	if c.Type() == cid.Raw {
		return mdag.NewRawNodeWPrefix(blk.RawData(), c.Prefix())
	}
	return mdag.DecodeProtobufBlock(blk)
}

func (a *adder) addFile(ctx context.Context, r io.Reader, name string) (Entry, ipld.Node, error) {
	root, err := a.in.File(ctx, r, a)
	if err != nil {
		return Entry{}, nil, err
	}
	nd, err := a.rootNode(root.CID)
	if err != nil {
		return Entry{}, nil, err
	}
	if name == "" {
		name = root.CID.String()
	}
	e := Entry{Name: name, CID: root.CID, Size: root.FileSize}
	a.onEntry(e)
	return e, nd, nil
}

func (a *adder) addPath(ctx context.Context, p, name string, opts AddOptions, top bool) (Entry, ipld.Node, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, nil, err
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return Entry{}, nil, fmt.Errorf("add %s: %w", p, unwrapPathError(err))
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return a.addSymlink(ctx, p, name)
	case fi.IsDir():
		if !opts.Recursive {
			return Entry{}, nil, fmt.Errorf("%s %w", p, ErrIsDir)
		}
		return a.addDir(ctx, p, name, opts)
	case !fi.Mode().IsRegular():
		return Entry{}, nil, fmt.Errorf("add %s: not a regular file, directory or symlink", p)
	}
	f, err := os.Open(p)
	if err != nil {
		return Entry{}, nil, fmt.Errorf("add %s: %w", p, unwrapPathError(err))
	}
	defer f.Close()
	e, nd, err := a.addFile(ctx, f, name)
	if err != nil {
		return Entry{}, nil, fmt.Errorf("add %s: %w", p, err)
	}
	return e, nd, nil
}

func (a *adder) addSymlink(ctx context.Context, p, name string) (Entry, ipld.Node, error) {
	target, err := os.Readlink(p)
	if err != nil {
		return Entry{}, nil, fmt.Errorf("add %s: %w", p, unwrapPathError(err))
	}
	data, err := ft.SymlinkData(target)
	if err != nil {
		return Entry{}, nil, err
	}
	nd := mdag.NodeWithData(data)
	nd.SetCidBuilder(a.builder())
	if err := a.Put(ctx, dag.Block{CID: nd.Cid(), Data: nd.RawData()}); err != nil {
		return Entry{}, nil, err
	}
	e := Entry{Name: name, CID: nd.Cid()}
	a.onEntry(e)
	return e, nd, nil
}

func (a *adder) addDir(ctx context.Context, p, name string, opts AddOptions) (Entry, ipld.Node, error) {
	ents, err := os.ReadDir(p) // sorted by name
	if err != nil {
		return Entry{}, nil, fmt.Errorf("add %s: %w", p, unwrapPathError(err))
	}
	dir, err := a.newDir()
	if err != nil {
		return Entry{}, nil, err
	}
	for _, de := range ents {
		if !opts.Hidden && strings.HasPrefix(de.Name(), ".") {
			continue
		}
		_, nd, err := a.addPath(ctx, filepath.Join(p, de.Name()), name+"/"+de.Name(), opts, false)
		if err != nil {
			return Entry{}, nil, err
		}
		if err := dir.AddChild(ctx, de.Name(), nd); err != nil {
			return Entry{}, nil, fmt.Errorf("add %s to directory %s: %w", de.Name(), p, err)
		}
	}
	e, err := a.finishDir(ctx, dir, name)
	if err != nil {
		return Entry{}, nil, err
	}
	nd, err := a.rootNode(e.CID)
	return e, nd, err
}

func (a *adder) newDir() (uio.Directory, error) {
	return uio.NewDirectory(dagService{a}, uio.WithCidBuilder(a.builder()))
}

// finishDir encodes the directory and emits its node unless the directory
// (a HAMT) already emitted it while encoding.
func (a *adder) finishDir(ctx context.Context, dir uio.Directory, name string) (Entry, error) {
	nd, err := dir.GetNode()
	if err != nil {
		return Entry{}, fmt.Errorf("encode directory %s: %w", name, err)
	}
	if !a.lastCID.Equals(nd.Cid()) {
		if err := a.Put(ctx, dag.Block{CID: nd.Cid(), Data: nd.RawData()}); err != nil {
			return Entry{}, err
		}
	}
	size, err := nd.Size()
	if err != nil {
		return Entry{}, err
	}
	if name == "" {
		name = nd.Cid().String()
	}
	e := Entry{Name: name, CID: nd.Cid(), Size: size, Dir: true}
	a.onEntry(e)
	return e, nil
}

// builder is the cid.Builder of directories and symlinks: the file
// encoder's CID version, hash and inlining.
func (a *adder) builder() cid.Builder { return cidBuilder{enc: a.in.enc, codec: cid.DagProtobuf} }

type cidBuilder struct {
	enc   dag.Encoder
	codec uint64
}

func (b cidBuilder) Sum(data []byte) (cid.Cid, error) { return b.enc.Sum(b.codec, data) }
func (b cidBuilder) GetCodec() uint64                 { return b.codec }
func (b cidBuilder) WithCodec(c uint64) cid.Builder   { return cidBuilder{enc: b.enc, codec: c} }

// dagService lets boxo's directory code emit HAMT shard nodes into the
// adder. It only ever writes: a directory being built never reads back.
type dagService struct{ a *adder }

var _ ipld.DAGService = dagService{}

func (d dagService) Add(ctx context.Context, nd ipld.Node) error {
	return d.a.Put(ctx, dag.Block{CID: nd.Cid(), Data: nd.RawData()})
}

func (d dagService) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		if err := d.Add(ctx, nd); err != nil {
			return err
		}
	}
	return nil
}

func (dagService) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}

func (dagService) GetMany(_ context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, len(cs))
	for _, c := range cs {
		ch <- &ipld.NodeOption{Err: ipld.ErrNotFound{Cid: c}}
	}
	close(ch)
	return ch
}

func (dagService) Remove(context.Context, cid.Cid) error       { return nil }
func (dagService) RemoveMany(context.Context, []cid.Cid) error { return nil }

// unwrapPathError drops the *PathError's repetition of the path, which the
// caller's message already names.
func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
