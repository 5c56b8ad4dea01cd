package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/cluster"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ingest"
	"github.com/shoal-project/shoal/store"
)

type addFlags struct {
	dag        dag.Options
	tree       ingest.AddOptions
	onlyHash   bool
	quiet      bool
	quieter    bool
	progress   bool
	noProgress bool
	repo       string
	stdinName  string
	name       string
	rmin, rmax int
	shard      bool
	shardSize  string
	json       bool
}

func newAddCmd(g *apiFlags) *cobra.Command {
	var f addFlags
	cmd := &cobra.Command{
		Use:   "add [PATH...|-]",
		Short: "Chunk files or stdin into a UnixFS DAG (the same CIDs as ipfs add)",
		Long: `Add chunks files, directories (with -r) or stdin (no path, or -) into a UnixFS
DAG whose root CID is the one Kubo's "ipfs add" prints for the same options.

By default the bytes stream to the daemon's API (--api), which chunks them
with the same flags, stores the DAG and pins it on rmin..rmax peers. With
-n/--only-hash nothing is stored and no daemon is needed. With --repo DIR the
blocks are written into the store of that peer directory (shoal init), durably,
before the command returns; its daemon must be stopped. The daemon keeps them
as an unknown shard (shoal state prune lists them) until a pin of the printed
CID allocates them there: "shoal pin add CID" then moves no data.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			f.dag.CIDVersionSet = fl.Changed("cid-version")
			f.dag.RawLeavesSet = fl.Changed("raw-leaves")
			if !f.onlyHash && f.repo == "" {
				return runAddAPI(cmd.Context(), cmd.OutOrStdout(), g, args, f)
			}
			if f.shard || f.shardSize != "" {
				return errors.New("--shard spreads a file over the cluster; it does not go with --only-hash or --repo")
			}
			if f.json {
				return errors.New("--json reports what the cluster stored; it does not go with --only-hash or --repo")
			}
			return runAdd(cmd.Context(), cmd.OutOrStdout(), args, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.dag.Chunker, "chunker", "s", "size-262144", "chunker: size-N, rabin, rabin-AVG, rabin-MIN-AVG-MAX or buzhash")
	fl.BoolVar(&f.dag.AllowBigBlock, "allow-big-block", false, "allow chunks above the 1 MiB block limit (peers may refuse them)")
	fl.BoolVar(&f.dag.Trickle, "trickle", false, "use the trickle DAG layout instead of balanced")
	fl.IntVar(&f.dag.CIDVersion, "cid-version", 0, "CID version: 0, or 1 (implies --raw-leaves)")
	fl.BoolVar(&f.dag.RawLeaves, "raw-leaves", false, "store leaves as raw blocks (default with CIDv1)")
	fl.StringVar(&f.dag.Hash, "hash", "sha2-256", "hash function: sha2-256, sha2-512 or blake3 (other than sha2-256 implies CIDv1)")
	fl.BoolVar(&f.dag.Inline, "inline", false, "inline blocks up to --inline-limit bytes into their CIDs")
	fl.IntVar(&f.dag.InlineLimit, "inline-limit", dag.DefaultInlineLimit, "largest block to inline, in bytes")
	fl.BoolVarP(&f.tree.Recursive, "recursive", "r", false, "add directories recursively")
	fl.BoolVarP(&f.tree.Wrap, "wrap-with-directory", "w", false, "wrap the added items in a directory")
	fl.BoolVarP(&f.tree.Hidden, "hidden", "H", false, "include files whose names start with a dot")
	fl.StringVar(&f.stdinName, "stdin-name", "", "name of the file read from stdin (with -w; default its CID)")
	fl.BoolVarP(&f.onlyHash, "only-hash", "n", false, "only compute the CIDs; store nothing")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "print only the CID of each added item")
	fl.BoolVarP(&f.quieter, "quieter", "Q", false, "print only the root CID")
	fl.BoolVar(&f.progress, "progress", false, "show a progress bar on stderr even when it is not a terminal")
	fl.BoolVar(&f.noProgress, "no-progress", false, "never show a progress bar")
	fl.StringVar(&f.repo, "repo", "", "write into the store of this peer directory, whose daemon is stopped")
	fl.StringVar(&f.name, "name", "", "pin name (cluster adds)")
	fl.IntVar(&f.rmin, "rmin", 0, "replication minimum (cluster adds; default from the peer's config)")
	fl.IntVar(&f.rmax, "rmax", 0, "replication maximum (cluster adds; default from the peer's config)")
	fl.BoolVar(&f.shard, "shard", false, "cut the DAG into shards sized to what peers can hold, each allocated on its own")
	fl.StringVar(&f.shardSize, "shard-size", "", "largest shard, e.g. 100MiB, 1GiB or 1048576 (default 100MiB; with --shard)")
	fl.BoolVar(&f.json, "json", false, "print one JSON object a line: each shard as its peers confirm it (with --shard), then the root")
	fl.IntVar(&f.rmin, "replication-min", 0, "same as --rmin")
	fl.IntVar(&f.rmax, "replication-max", 0, "same as --rmax")
	return cmd
}

func runAdd(ctx context.Context, stdout io.Writer, args []string, f addFlags) error {
	params, err := f.dag.Params()
	if err != nil {
		return err
	}
	if f.progress && f.noProgress {
		return errors.New("--progress and --no-progress contradict each other")
	}
	useStdin, total, err := addInput(args)
	if err != nil {
		return err
	}
	bar := newProgress(f.progressMode(), total)
	defer bar.finish()
	cfg := ingest.Config{Params: params}
	if bar != nil {
		cfg.Progress = func(n int) { bar.bar.Add(n) }
	}
	in, err := ingest.New(cfg)
	if err != nil {
		return err
	}

	sink := ingest.Discard
	var commit func(root dag.Link) error
	if !f.onlyHash {
		// The daemon's own store, under the daemon's lock: refused
		// while it runs.
		peer, err := cluster.OpenOffline(f.repo)
		if err != nil {
			return err
		}
		defer peer.Close()
		st, err := peer.Store()
		if err != nil {
			return err
		}
		w, err := st.Create(ctx)
		if err != nil {
			return err
		}
		defer w.Abort()
		sink = storeSink{w}
		commit = func(root dag.Link) error {
			key := root.CID.String()
			if _, err := w.Commit(ctx, key, root.CID); err != nil {
				return err
			}
			return peer.KeepUnknown(key)
		}
	}

	// Entries are printed only once the whole add succeeded, so that a
	// failed add reports nothing as added.
	var entries []ingest.Entry
	onEntry := func(e ingest.Entry) { entries = append(entries, e) }
	var root ingest.Entry
	if useStdin {
		stdin, restore := interruptibleStdin(ctx)
		defer restore()
		root, err = in.AddReader(ctx, stdin, f.stdinName, f.tree, sink, onEntry)
	} else {
		root, err = in.Add(ctx, args, f.tree, sink, onEntry)
	}
	if err == nil && commit != nil {
		err = commit(dag.Link{CID: root.CID})
	}
	bar.finish()
	if err != nil {
		return err
	}
	out := bufio.NewWriter(stdout)
	switch {
	case f.quieter:
		fmt.Fprintln(out, root.CID)
	case f.quiet:
		for _, e := range entries {
			fmt.Fprintln(out, e.CID)
		}
	default:
		for _, e := range entries {
			fmt.Fprintf(out, "added %s %s\n", e.CID, e.Name)
		}
	}
	return out.Flush()
}

// addInput says whether args mean stdin, checks it, and returns the size
// of the input when it is one regular file (-1 otherwise).
func addInput(args []string) (stdin bool, total int64, err error) {
	stdin = len(args) == 0 || (len(args) == 1 && args[0] == "-")
	for _, a := range args {
		if a == "-" && !stdin {
			return false, 0, errors.New("stdin (-) cannot be combined with paths")
		}
	}
	total = -1
	if stdin {
		return true, total, checkStdin()
	}
	if len(args) == 1 {
		if fi, err := os.Stat(args[0]); err == nil && fi.Mode().IsRegular() {
			total = fi.Size()
		}
	}
	return false, total, nil
}

func (f addFlags) progressMode() string {
	switch {
	case f.progress:
		return "on"
	case f.noProgress:
		return "off"
	}
	return "auto"
}

// runAddAPI streams one file, or stdin, to the daemon, which chunks it with
// the same DAG flags and pins the root.
func runAddAPI(ctx context.Context, stdout io.Writer, g *apiFlags, args []string, f addFlags) error {
	if _, err := f.dag.Params(); err != nil {
		return err
	}
	if f.progress && f.noProgress {
		return errors.New("--progress and --no-progress contradict each other")
	}
	if f.tree.Recursive || f.tree.Hidden || len(args) > 1 {
		return errors.New("the cluster takes one file or stdin per add for now; add directories with --only-hash or --repo")
	}
	useStdin, total, err := addInput(args)
	if err != nil {
		return err
	}
	var in io.Reader
	filename := f.stdinName
	if useStdin {
		stdin, restore := interruptibleStdin(ctx)
		defer restore()
		in = stdin
	} else {
		fi, err := os.Stat(args[0])
		if err != nil {
			return fmt.Errorf("add %s: %w", args[0], unwrapPathErr(err))
		}
		if fi.IsDir() {
			return fmt.Errorf("%s is a directory; the cluster takes one file per add for now", args[0])
		}
		file, err := os.Open(args[0])
		if err != nil {
			return fmt.Errorf("add %s: %w", args[0], unwrapPathErr(err))
		}
		defer file.Close()
		in, filename = file, filepath.Base(args[0])
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	p := api.AddParams{Chunker: f.dag.Chunker, AllowBigBlock: f.dag.AllowBigBlock, Trickle: f.dag.Trickle,
		Hash: f.dag.Hash, Inline: f.dag.Inline, InlineLimit: f.dag.InlineLimit, Wrap: f.tree.Wrap,
		Name: f.name, RMin: f.rmin, RMax: f.rmax, Shard: f.shard}
	if f.shardSize != "" {
		if !f.shard {
			return errors.New("--shard-size needs --shard")
		}
		n, err := config.ParseSize(f.shardSize)
		if err != nil {
			return fmt.Errorf("--shard-size: %w", err)
		}
		if n == 0 {
			return errors.New("--shard-size must be above 0")
		}
		p.ShardSize = n
	}
	if p.Name == "" {
		p.Name = filename
	}
	if f.dag.CIDVersionSet {
		p.CIDVersion = &f.dag.CIDVersion
	}
	if f.dag.RawLeavesSet {
		p.RawLeaves = &f.dag.RawLeaves
	}
	if f.json && (f.quiet || f.quieter) {
		return errors.New("--json prints the CIDs already; it does not go with -q or -Q")
	}
	bar := newProgress(f.progressMode(), total)
	var res api.AddResult
	if f.shard || f.json {
		// The events report each shard as soon as it is safe: printed
		// with --json, shown on the bar.
		out := bufio.NewWriter(stdout)
		label := func(s string) {
			if f.shard {
				bar.label(s)
			}
		}
		label("shard 0")
		res, err = c.AddEvents(ctx, bar.reader(in), filename, p, func(sh api.ShardStatus) error {
			label(fmt.Sprintf("shard %d", sh.Index+1))
			if !f.json {
				return nil
			}
			return printLine(out, addShardLine{Type: api.AddEventShard, Index: sh.Index, CID: sh.CID, Size: sh.Size,
				Blocks: sh.Blocks, Offset: sh.Offset, Length: sh.Length, Peers: nonNilStrings(sh.Allocations)})
		})
		if err == nil {
			label(fmt.Sprintf("%d shards", len(res.Shards)))
		}
		bar.finish()
		if err != nil {
			out.Flush()
			return explain(err)
		}
		if f.json {
			return printLine(out, addRootLine{Type: api.AddEventRoot, CID: res.CID, Name: res.Name, Size: res.Size,
				Shards: len(res.Shards), ClusterDAG: res.ClusterDAG, Peers: nonNilStrings(res.Pin.Allocations)})
		}
	} else {
		res, err = c.Add(ctx, bar.reader(in), filename, p)
		bar.finish()
		if err != nil {
			return explain(err)
		}
	}
	switch {
	case f.quieter, f.quiet:
		_, err = fmt.Fprintln(stdout, res.CID)
	default:
		name := res.Name
		if useStdin && f.stdinName == "" {
			name = res.CID
		} else if !useStdin {
			name = args[0]
		}
		_, err = fmt.Fprintf(stdout, "added %s %s\n", res.CID, name)
	}
	return err
}

// addShardLine and addRootLine are the lines `add --json` prints: one per
// shard as its peers confirm it, then the root. Peers are a shard's
// holders, and the holders of the cluster-DAG (the list of a sharded
// file's shards) or of a plain file.
type addShardLine struct {
	Type   string   `json:"type"`
	Index  int      `json:"index"`
	CID    string   `json:"cid"`
	Size   uint64   `json:"size"`
	Blocks uint64   `json:"blocks"`
	Offset uint64   `json:"offset"`
	Length uint64   `json:"length"`
	Peers  []string `json:"peers"`
}

type addRootLine struct {
	Type       string   `json:"type"`
	CID        string   `json:"cid"`
	Name       string   `json:"name"`
	Size       uint64   `json:"size"`
	Shards     int      `json:"shards"`
	ClusterDAG string   `json:"cluster_dag,omitempty"`
	Peers      []string `json:"peers"`
}

// printLine writes v as one line of JSON and flushes it, so that a reader
// of a stream sees each line as it happens.
func printLine(w *bufio.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return err
	}
	return w.Flush()
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// storeSink adapts a store writer to the ingest pipeline.
type storeSink struct{ w *store.Writer }

func (s storeSink) Put(_ context.Context, b dag.Block) error { return s.w.Put(b) }

// checkStdin refuses a terminal (the user forgot the path; reading would
// hang) and a closed descriptor.
func checkStdin() error {
	fi, err := os.Stdin.Stat()
	if err != nil || stdinWasClosed(fi) {
		return errors.New("stdin is closed; give a path or pipe data in")
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		return errors.New("stdin is a terminal; give a path, or pipe data in and use -")
	}
	return nil
}

// stdinWasClosed recognises the /dev/null that the Go runtime opens, read
// and write, in place of a descriptor 0 that was closed when the process
// started. A user's own "</dev/null" opens it read-only, and reads as an
// empty file.
func stdinWasClosed(fi os.FileInfo) bool {
	null, err := os.Stat(os.DevNull)
	if err != nil || !os.SameFile(fi, null) {
		return false
	}
	fl, err := unix.FcntlInt(os.Stdin.Fd(), unix.F_GETFL, 0)
	return err == nil && fl&unix.O_ACCMODE == unix.O_RDWR
}

// interruptibleStdin returns stdin as a file whose reads stop when ctx is
// cancelled: a pipe read otherwise blocks until the writer closes it, and
// the ingest waits for its reader. It puts a pipe in non-blocking mode so
// that Go's poller owns it; restore puts it back.
func interruptibleStdin(ctx context.Context) (io.Reader, func()) {
	fi, err := os.Stdin.Stat()
	if err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		return os.Stdin, func() {}
	}
	enlargePipe(os.Stdin)
	fd := int(os.Stdin.Fd())
	if err := unix.SetNonblock(fd, true); err != nil {
		return os.Stdin, func() {}
	}
	f := os.NewFile(uintptr(fd), "/dev/stdin")
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	return f, func() {
		stop()
		_ = unix.SetNonblock(fd, false)
	}
}

// enlargePipe grows a stdin pipe to 1 MiB: PERF.md measured 0.84-1.0 GB/s
// through the default 64 KiB pipe and 3.0-3.3 GB/s through a 1 MiB one.
// Failure (not a pipe, or a lower limit) is harmless.
func enlargePipe(f *os.File) {
	if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
		_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20)
	}
}
