package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/bench"
)

type runner struct {
	o       options
	args    []string
	log     io.Writer
	self    string
	shoal   string
	data    string
	scratch string
	root    string // the root CID boxo printed; every shoal add must print it
	bad     []string

	refAdd, refCat bench.Path // boxo -> flatfs, boxo UnixFS reader over flatfs
	refCatCold     bench.Path // the same read with the flatfs files dropped from the page cache
	refDisk        bench.Path // the data file read with O_DIRECT: the disk's sequential read rate
	kuboAdd        bench.Path // real Kubo: `ipfs add` into a fresh repository
	kuboCat        bench.Path // `ipfs cat` of it, right after the add (its blocks in the page cache)
	kuboRange      bench.Path // `ipfs cat --offset --length` of -range bytes from the middle
	add1, cat1     bench.Path // rmin=rmax=1 cluster: 2/3 of a cat's shards on other peers
	range1         bench.Path // `shoal cat --offset --length` in that cluster, Kubo's range
	add2, cat2     bench.Path // rmin=rmax=2 cluster
	add3, cat3     bench.Path // rmin=rmax=3 (every peer): a cat with every shard local
	peerRSS1       []float64  // largest VmHWM of a peer per rmin=rmax=1 run, MiB
	peerRSS2       []float64
	catCPU         [4][]catCPU // by replication (1 to 3): the CPU time of each cat
	repairs        []repairRun
	big            *bigRun
	profiles       []profileSummary
	profileErr     error
	clusterErr     []string
	placements     []string // shards per peer after each add
}

// repairRun is one repair: the bytes of the shards the stopped peer held,
// copied to the other peers, how long from its SIGTERM until every shard
// had rmin live pinned holders again (took), and how much of that after
// the status first showed a new holder (copying: the repair's copies,
// without the detection that the ttl and grace settings decide).
type repairRun struct {
	victim  string
	bytes   uint64
	shards  int
	took    time.Duration
	copying time.Duration
	err     error
}

func (rr repairRun) rate() float64     { return float64(rr.bytes) / bench.MB / rr.took.Seconds() }
func (rr repairRun) copyRate() float64 { return float64(rr.bytes) / bench.MB / rr.copying.Seconds() }

// bigRun is the -big stdin sharded add.
type bigRun struct {
	res     bench.Result
	peerRSS []float64 // VmHWM of each peer, MiB
	err     error
}

func newRunner(o options, args []string) *runner {
	r := &runner{o: o, args: args, log: os.Stderr}
	for _, p := range []struct {
		p    *bench.Path
		name string
	}{
		{&r.refAdd, "boxo -> flatfs (file)"},
		{&r.refCat, "boxo UnixFS reader <- flatfs"},
		{&r.refCatCold, "boxo UnixFS reader <- flatfs, cold"},
		{&r.refDisk, "disk: O_DIRECT 1 MiB reads"},
		{&r.add1, "shoal add --shard, rmin=rmax=1"},
		{&r.cat1, "shoal cat, rmin=rmax=1 cluster"},
		{&r.add2, "shoal add --shard, rmin=rmax=2"},
		{&r.cat2, "shoal cat, rmin=rmax=2 cluster"},
		{&r.add3, "shoal add --shard, rmin=rmax=3"},
		{&r.cat3, "shoal cat, every shard local (r=3)"},
		{&r.kuboAdd, "Kubo ipfs add"},
		{&r.kuboCat, "Kubo ipfs cat"},
	} {
		p.p.Name, p.p.Bytes = p.name, o.size
	}
	r.kuboRange.Name, r.kuboRange.Bytes = "Kubo ipfs cat, range", o.rangeSize
	r.range1.Name, r.range1.Bytes = "shoal cat, range, rmin=rmax=1", o.rangeSize
	return r
}

func (r *runner) logf(format string, a ...any) { fmt.Fprintf(r.log, format+"\n", a...) }

func (r *runner) run(ctx context.Context) error {
	started := time.Now()
	load0 := bench.LoadAvg()
	var err error
	if r.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	if err := os.MkdirAll(r.o.dir, 0o755); err != nil {
		return err
	}
	r.logf("data file: %s seeded bytes in %s", bench.FormatSize(r.o.size), r.o.dir)
	if r.data, _, err = bench.DataFile(r.o.dir, r.o.size); err != nil {
		return err
	}
	if r.scratch, err = os.MkdirTemp(r.o.dir, "shard-"); err != nil {
		return err
	}
	defer func() {
		if r.o.keep {
			r.logf("kept %s", r.scratch)
			return
		}
		os.RemoveAll(r.scratch)
	}()
	r.shoal = r.o.shoal
	if r.shoal == "" {
		r.shoal = filepath.Join(r.scratch, "shoal")
		r.logf("building ./cmd/shoal")
		if err := bench.BuildShoal(ctx, r.shoal); err != nil {
			return err
		}
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()

	for run := range r.o.runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.logf("run %d of %d (load %s)", run+1, r.o.runs, bench.LoadAvg())
		if err := r.reference(ctx, run, devnull); err != nil {
			return err
		}
		if r.o.ipfs != "none" {
			if err := r.kubo(ctx, run, devnull); err != nil {
				return err
			}
		}
		if err := r.clusterRun(ctx, run, 1, devnull); err != nil {
			r.clusterErr = append(r.clusterErr, fmt.Sprintf("run %d rmin=rmax=1: %v", run+1, err))
			r.logf("  %v", err)
		}
		if err := r.clusterRun(ctx, run, 2, devnull); err != nil {
			r.clusterErr = append(r.clusterErr, fmt.Sprintf("run %d rmin=rmax=2: %v", run+1, err))
			r.logf("  %v", err)
		}
		if r.o.peers >= 3 {
			if err := r.clusterRun(ctx, run, 3, devnull); err != nil {
				r.clusterErr = append(r.clusterErr, fmt.Sprintf("run %d rmin=rmax=3: %v", run+1, err))
				r.logf("  %v", err)
			}
		}
	}
	if r.o.profile && ctx.Err() == nil {
		r.logf("profile run (untimed)")
		r.profileErr = r.profileRun(ctx, devnull)
		if r.profileErr != nil {
			r.logf("  %v", r.profileErr)
		}
	}
	if r.o.big && ctx.Err() == nil {
		r.logf("-big: %s through stdin", bench.FormatSize(r.o.bigSize))
		r.big = r.bigRun(ctx)
	}
	r.report(os.Stdout, started, load0)
	return nil
}

// prepare reads the data file into the page cache and flushes earlier
// runs' writes, untimed, before each timed add.
func (r *runner) prepare() error {
	if _, err := bench.Warm(r.data); err != nil {
		return err
	}
	syscall.Sync()
	return nil
}

// reference runs boxo -> flatfs on the data file, then reads the DAG back
// with boxo's UnixFS reader. The flatfs directories are kept until the end:
// ext4 creates files ~2x slower right after deleting thousands (PERF.md).
func (r *runner) reference(ctx context.Context, run int, devnull *os.File) error {
	repo := filepath.Join(r.scratch, fmt.Sprintf("flatfs-%d", run))
	if err := r.prepare(); err != nil {
		return err
	}
	res, err := bench.Run(ctx, bench.Cmd{Path: r.self, Args: []string{"child", "boxo-flatfs", "-repo", repo, r.data}})
	if err != nil {
		return err
	}
	r.refAdd.Runs = append(r.refAdd.Runs, res)
	root := strings.TrimSpace(string(res.Stdout))
	if r.root == "" {
		r.root = root
	} else if root != r.root {
		r.bad = append(r.bad, fmt.Sprintf("boxo run %d printed %s, not %s", run+1, root, r.root))
	}
	r.logf("  %-34s %6.0f MB/s", r.refAdd.Name, rate(res, r.o.size))
	syscall.Sync()
	res, err = bench.Run(ctx, bench.Cmd{Path: r.self, Args: []string{"child", "boxo-cat", "-repo", repo, root}, Stdout: devnull})
	if err != nil {
		return err
	}
	r.refCat.Runs = append(r.refCat.Runs, res)
	r.logf("  %-34s %6.0f MB/s", r.refCat.Name, rate(res, r.o.size))
	if err := bench.DropCache(repo); err != nil {
		return err
	}
	res, err = bench.Run(ctx, bench.Cmd{Path: r.self, Args: []string{"child", "boxo-cat", "-repo", repo, root}, Stdout: devnull})
	if err != nil {
		return err
	}
	r.refCatCold.Runs = append(r.refCatCold.Runs, res)
	r.logf("  %-34s %6.0f MB/s", r.refCatCold.Name, rate(res, r.o.size))
	res, err = bench.Run(ctx, bench.Cmd{Path: r.self, Args: []string{"child", "direct-read", r.data}})
	if err != nil {
		return err
	}
	r.refDisk.Runs = append(r.refDisk.Runs, res)
	r.logf("  %-34s %6.0f MB/s", r.refDisk.Name, rate(res, r.o.size))
	return nil
}

// kubo adds the data file to a fresh repository of real Kubo (its
// default configuration, no daemon: the commands open the repository
// themselves), then reads it back whole and a range of it, as a Kubo user
// would on one machine.
func (r *runner) kubo(ctx context.Context, run int, devnull *os.File) error {
	repo := filepath.Join(r.scratch, fmt.Sprintf("kubo-%d", run))
	env := []string{"IPFS_PATH=" + repo}
	if _, err := bench.Run(ctx, bench.Cmd{Path: r.o.ipfs, Args: []string{"init", "--empty-repo"}, Env: env}); err != nil {
		return fmt.Errorf("ipfs init: %w", err)
	}
	if err := r.prepare(); err != nil {
		return err
	}
	res, err := bench.Run(ctx, bench.Cmd{Path: r.o.ipfs, Args: []string{"add", "-Q", "--progress=false", r.data}, Env: env})
	if err != nil {
		return err
	}
	r.kuboAdd.Runs = append(r.kuboAdd.Runs, res)
	if root := strings.TrimSpace(string(res.Stdout)); root != r.root {
		r.bad = append(r.bad, fmt.Sprintf("Kubo run %d printed %s, not boxo's %s", run+1, root, r.root))
	}
	r.logf("  %-34s %6.0f MB/s", r.kuboAdd.Name, rate(res, r.o.size))
	syscall.Sync()
	res, err = bench.Run(ctx, bench.Cmd{Path: r.o.ipfs, Args: []string{"cat", r.root}, Env: env, Stdout: devnull})
	if err != nil {
		return err
	}
	r.kuboCat.Runs = append(r.kuboCat.Runs, res)
	r.logf("  %-34s %6.0f MB/s", r.kuboCat.Name, rate(res, r.o.size))
	off, n := r.rangeArgs()
	res, err = bench.Run(ctx, bench.Cmd{Path: r.o.ipfs, Args: []string{"cat", "--offset", off, "--length", n, r.root}, Env: env, Stdout: devnull})
	if err != nil {
		return err
	}
	r.kuboRange.Runs = append(r.kuboRange.Runs, res)
	r.logf("  %-34s %6.0f MB/s", r.kuboRange.Name, rate(res, r.o.rangeSize))
	return nil
}

// rangeArgs are the --offset and --length of the range cats: -range bytes
// centred in the file.
func (r *runner) rangeArgs() (offset, length string) {
	return fmt.Sprint((r.o.size - r.o.rangeSize) / 2), fmt.Sprint(r.o.rangeSize)
}

func rate(res bench.Result, size int64) float64 { return float64(size) / bench.MB / res.Wall.Seconds() }

// fastHealth makes a stopped peer count as down, and its shards repaired,
// within about two seconds.
var fastHealth = map[string]any{"heartbeat_interval": "200ms", "heartbeat_ttl": "1s", "repair_grace": "1s"}

func (r *runner) startCluster(ctx context.Context, name string, peers int, health map[string]any) (*bench.Cluster, string, error) {
	dir := filepath.Join(r.scratch, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	c, err := bench.StartCluster(ctx, bench.ClusterConfig{Shoal: r.shoal, Dir: dir, Peers: peers, Health: health})
	if err != nil {
		return nil, dir, fmt.Errorf("start cluster %s: %w", name, err)
	}
	return c, dir, nil
}

func (r *runner) closeCluster(c *bench.Cluster, dir string) {
	if c != nil {
		if err := c.Close(); err != nil {
			r.logf("  stop %s: %v", dir, err)
		}
	}
	if !r.o.keep && dir != "" {
		os.RemoveAll(dir)
	}
}

// addArgs is `shoal add --shard` of the data file (or stdin, "-") through
// the API of d.
func (r *runner) addArgs(d *bench.Daemon, repl int, path string) []string {
	args := []string{"--api", d.API, "add", "--shard", "--rmin", fmt.Sprint(repl), "--rmax", fmt.Sprint(repl), "-Q", "--no-progress"}
	if r.o.shardSize != "" {
		args = append(args, "--shard-size", r.o.shardSize)
	}
	return append(args, path)
}

// clusterRun starts a fresh cluster, adds the data file sharded with
// rmin=rmax=repl through the first peer's API, reads it back through the
// same API to /dev/null, and with repl 2 stops a holder and times the
// repair.
func (r *runner) clusterRun(ctx context.Context, run, repl int, devnull *os.File) error {
	addP, catP := &r.add1, &r.cat1
	peers, health := r.o.peers, map[string]any(nil)
	switch repl {
	case 2:
		addP, catP = &r.add2, &r.cat2
		peers, health = r.o.repairPeers, fastHealth
	case 3:
		addP, catP = &r.add3, &r.cat3
	}
	c, dir, err := r.startCluster(ctx, fmt.Sprintf("r%d-%d", repl, run), peers, health)
	keepLogs := false
	defer func() {
		if keepLogs {
			r.keepLogs(c, dir)
		}
		r.closeCluster(c, dir)
	}()
	if err != nil {
		return err
	}
	d := c.Peers[0]
	if err := r.prepare(); err != nil {
		return err
	}
	res, _, err := r.runWith(ctx, c, bench.Cmd{Path: r.shoal, Args: r.addArgs(d, repl, r.data)})
	if err != nil {
		return err
	}
	addP.Runs = append(addP.Runs, res)
	root := strings.TrimSpace(string(res.Stdout))
	if root != r.root {
		r.bad = append(r.bad, fmt.Sprintf("%s run %d printed %s, not boxo's %s", addP.Name, run+1, root, r.root))
	}
	r.logf("  %-34s %6.0f MB/s (others %.0f%%)", addP.Name, rate(res, r.o.size), 100*res.OthersShare())
	if st, err := d.Client.Status(ctx, root, false); err == nil {
		r.placements = append(r.placements, fmt.Sprintf("run %d rmin=rmax=%d: %s", run+1, repl, placement(c, st)))
		r.logf("  shards per peer: %s", placement(c, st))
	}
	var hwm float64
	for _, p := range c.Peers {
		if u, err := p.Usage(); err == nil {
			hwm = max(hwm, float64(u.MaxRSS)/bench.MiB)
		}
	}
	switch repl {
	case 1:
		r.peerRSS1 = append(r.peerRSS1, hwm)
	case 2:
		r.peerRSS2 = append(r.peerRSS2, hwm)
	}
	syscall.Sync()
	res, daemons, err := r.runWith(ctx, c, bench.Cmd{Path: r.shoal, Args: []string{"--api", d.API, "cat", root}, Stdout: devnull})
	if err != nil {
		return err
	}
	r.catCPU[repl] = append(r.catCPU[repl], catCPU{cli: res.CPU, daemons: daemons})
	catP.Runs = append(catP.Runs, res)
	r.logf("  %-34s %6.0f MB/s (others %.0f%%)", catP.Name, rate(res, r.o.size), 100*res.OthersShare())
	if repl == 1 {
		off, n := r.rangeArgs()
		res, _, err := r.runWith(ctx, c, bench.Cmd{Path: r.shoal, Args: []string{"--api", d.API, "cat", "--offset", off, "--length", n, root}, Stdout: devnull})
		if err != nil {
			return err
		}
		r.range1.Runs = append(r.range1.Runs, res)
		r.logf("  %-34s %6.0f MB/s", r.range1.Name, rate(res, r.o.rangeSize))
	}
	if repl == 2 {
		rr := r.repair(ctx, c, root, repl)
		r.repairs = append(r.repairs, rr)
		if rr.err != nil {
			keepLogs = true
			r.logf("  repair: %v", rr.err)
		} else {
			r.logf("  repair of %s's %d shards, %.0f MB: %s, %.0f MB/s; copies %s, %.0f MB/s", rr.victim, rr.shards, float64(rr.bytes)/bench.MB,
				rr.took.Round(time.Millisecond), rr.rate(), rr.copying.Round(time.Millisecond), rr.copyRate())
		}
	}
	return nil
}

// catCPU is the CPU time a cat took: the CLI's and the daemons'.
type catCPU struct{ cli, daemons time.Duration }

// runWith runs cmd against cluster c, counting the daemons' CPU time as
// the run's own rather than as others': it returns that time too.
func (r *runner) runWith(ctx context.Context, c *bench.Cluster, cmd bench.Cmd) (bench.Result, time.Duration, error) {
	cpu := func() time.Duration {
		var t time.Duration
		for _, p := range c.Peers {
			if u, err := p.Usage(); err == nil {
				t += u.CPU
			}
		}
		return t
	}
	before := cpu()
	res, err := bench.Run(ctx, cmd)
	daemons := cpu() - before
	if res.Others >= 0 {
		res.Others = max(0, res.Others-daemons)
	}
	return res, daemons, err
}

// repair stops the peer holding the most shards other than the first
// (whose API the runner asks)
// with SIGTERM and polls the first peer's status of root until every shard
// has repl pinned holders other than the stopped peer.
func (r *runner) repair(ctx context.Context, c *bench.Cluster, root string, repl int) repairRun {
	d := c.Peers[0]
	st, err := d.Client.Status(ctx, root, false)
	if err != nil {
		return repairRun{err: fmt.Errorf("status %s: %w", root, err)}
	}
	// The victim: the peer other than the first holding the most shard
	// bytes (the default allocator puts every shard on the same peers).
	var victim *bench.Daemon
	var rr repairRun
	for _, p := range c.Peers[1:] {
		var cand repairRun
		for _, sh := range st.Shards {
			if slices.Contains(sh.Allocations, p.ID) {
				cand.bytes += sh.Size
				cand.shards++
			}
		}
		if cand.bytes > rr.bytes {
			victim, rr = p, cand
		}
	}
	if victim == nil {
		rr.err = fmt.Errorf("no peer but %s holds a shard of %s", d.Name, root)
		return rr
	}
	rr.victim = victim.Name
	before := map[string][]string{}
	for _, sh := range st.Shards {
		before[sh.CID] = sh.Allocations
	}
	start := time.Now()
	// copyStart: the first poll that showed a new holder; lastPoll: the
	// latest poll before it, when the copies may already have begun.
	var copyStart, lastPoll time.Time
	stopped := make(chan error, 1)
	go func() { stopped <- victim.Stop() }()
	deadline := start.Add(r.o.repairWait)
	var last api.PinStatus
	for {
		polled := time.Now()
		st, err := d.Client.Status(ctx, root, false)
		if err == nil {
			last = st
			if copyStart.IsZero() && newHolder(st, before) {
				copyStart = polled
			}
			if repaired(st, victim.ID, repl) {
				rr.took = time.Since(start)
				if copyStart.IsZero() {
					// Began and ended between two polls: count from the
					// one before, which makes the copies look slower, not
					// faster.
					copyStart = lastPoll
				}
				rr.copying = time.Since(copyStart)
				break
			}
			if copyStart.IsZero() {
				lastPoll = polled
			}
		}
		if time.Now().After(deadline) {
			rr.err = fmt.Errorf("not repaired %s after stopping %s: %s%s", r.o.repairWait, victim.Name, last.Summary, lastRepairLine(c))
			break
		}
		if ctx.Err() != nil {
			rr.err = ctx.Err()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-stopped; err != nil {
		r.logf("  stop %s: %v", victim.Name, err)
	}
	return rr
}

// newHolder says whether some shard of st shows a peer that its
// allocations before the repair (by shard CID) did not name.
func newHolder(st api.PinStatus, before map[string][]string) bool {
	for _, sh := range st.Shards {
		for p := range sh.Peers {
			if !slices.Contains(before[sh.CID], p) {
				return true
			}
		}
	}
	return false
}

// repaired says whether every shard of st has at least repl pinned
// holders other than gone.
func repaired(st api.PinStatus, gone string, repl int) bool {
	if len(st.Shards) == 0 {
		return false
	}
	for _, sh := range st.Shards {
		n := 0
		for p, s := range sh.Peers {
			if p != gone && s == "pinned" {
				n++
			}
		}
		if n < repl {
			return false
		}
	}
	return true
}

// profileRun adds the file to a fresh rmin=rmax=1 cluster whose daemons
// record CPU profiles, stops them (which writes the profiles), starts them
// again with fresh profiles and reads the file back, then summarises the
// ingesting (first) peer's add profile and the read profiles.
func (r *runner) profileRun(ctx context.Context, devnull *os.File) error {
	c, dir, err := r.startClusterProfiled(ctx, "profile", "add")
	defer func() { r.closeCluster(c, dir) }()
	if err != nil {
		return err
	}
	if err := r.prepare(); err != nil {
		return err
	}
	res, err := bench.Run(ctx, bench.Cmd{Path: r.shoal, Args: r.addArgs(c.Peers[0], 1, r.data)})
	if err != nil {
		return err
	}
	root := strings.TrimSpace(string(res.Stdout))
	if err := c.Close(); err != nil {
		return err
	}
	for i, p := range c.Peers {
		s, err := summarise(ctx, r.shoal, filepath.Join(dir, fmt.Sprintf("peer%d-add.pprof", i)))
		if err != nil {
			return err
		}
		s.title = fmt.Sprintf("%s during `shoal add --shard` rmin=rmax=1 (%.0f MB/s under the profiler)", p.Name, rate(res, r.o.size))
		if i == 0 {
			s.title = "ingesting " + s.title
		}
		r.profiles = append(r.profiles, s)
	}
	// Restart with fresh profiles for the read.
	for i, p := range c.Peers {
		p.Env = []string{"SHOAL_CPUPROFILE=" + filepath.Join(dir, fmt.Sprintf("peer%d-cat.pprof", i))}
		var args []string
		if i > 0 {
			args = []string{"--bootstrap", c.Peers[0].Addr}
		}
		if err := p.Start(ctx, args...); err != nil {
			return err
		}
	}
	if err := waitPinned(ctx, c, root); err != nil {
		return err
	}
	res, err = bench.Run(ctx, bench.Cmd{Path: r.shoal, Args: []string{"--api", c.Peers[0].API, "cat", root}, Stdout: devnull})
	if err != nil {
		return err
	}
	if err := c.Close(); err != nil {
		return err
	}
	for i, p := range c.Peers {
		s, err := summarise(ctx, r.shoal, filepath.Join(dir, fmt.Sprintf("peer%d-cat.pprof", i)))
		if err != nil {
			return err
		}
		s.title = fmt.Sprintf("%s during `shoal cat` through %s's API (%.0f MB/s under the profiler)", p.Name, c.Peers[0].Name, rate(res, r.o.size))
		r.profiles = append(r.profiles, s)
	}
	return nil
}

func (r *runner) startClusterProfiled(ctx context.Context, name, phase string) (*bench.Cluster, string, error) {
	dir := filepath.Join(r.scratch, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	c, err := bench.StartCluster(ctx, bench.ClusterConfig{Shoal: r.shoal, Dir: dir, Peers: r.o.peers,
		Env: func(i int) []string {
			return []string{"SHOAL_CPUPROFILE=" + filepath.Join(dir, fmt.Sprintf("peer%d-%s.pprof", i, phase))}
		}})
	if err != nil {
		return nil, dir, fmt.Errorf("start cluster %s: %w", name, err)
	}
	return c, dir, nil
}

// waitPinned waits until the first peer reports root pinned on every
// allocated peer (after a restart).
func waitPinned(ctx context.Context, c *bench.Cluster, root string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := c.Peers[0].Client.Status(ctx, root, false)
		if err == nil && st.Status == api.OverallPinned && repaired(st, "", 1) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not pinned a minute after the restart: %v %s", root, err, st.Summary)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// bigRun streams -big-size bytes through a sharded add's stdin into a
// fresh rmin=rmax=1 cluster and reads every peak RSS.
func (r *runner) bigRun(ctx context.Context) *bigRun {
	br := &bigRun{}
	c, dir, err := r.startCluster(ctx, "big", r.o.peers, nil)
	defer r.closeCluster(c, dir)
	if err != nil {
		br.err = err
		return br
	}
	f, err := os.Open(r.data)
	if err != nil {
		br.err = err
		return br
	}
	defer f.Close()
	br.res, _, br.err = r.runWith(ctx, c, bench.Cmd{Path: r.shoal, Args: r.addArgs(c.Peers[0], 1, "-"),
		Stdin: bench.Stretch(f, r.o.size, r.o.bigSize)})
	for _, p := range c.Peers {
		u, err := p.Usage()
		if err != nil {
			br.err = errors.Join(br.err, err)
			continue
		}
		br.peerRSS = append(br.peerRSS, float64(u.MaxRSS)/bench.MiB)
	}
	if br.err == nil {
		r.logf("  %.0f MB/s, client peak RSS %.0f MiB, peers %.0f MiB", rate(br.res, r.o.bigSize), float64(br.res.MaxRSS)/bench.MiB, br.peerRSS)
	}
	return br
}

// placement says how many shards each peer was allocated.
func placement(c *bench.Cluster, st api.PinStatus) string {
	var parts []string
	for _, p := range c.Peers {
		n := 0
		for _, sh := range st.Shards {
			if slices.Contains(sh.Allocations, p.ID) {
				n++
			}
		}
		parts = append(parts, fmt.Sprintf("%s %d", p.Name, n))
	}
	return strings.Join(parts, ", ")
}

// lastRepairLine is the last line about repairs in the running daemons'
// logs, to say why a repair did not finish.
func lastRepairLine(c *bench.Cluster) string {
	for _, p := range c.Peers {
		if !p.Running() {
			continue
		}
		b, err := os.ReadFile(p.Log)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if strings.Contains(lines[i], "repair") {
				return fmt.Sprintf("; %s's log: %s", p.Name, lines[i])
			}
		}
	}
	return ""
}

// keepLogs copies the daemons' logs of a failed run next to the data
// file (the cluster's directory is removed), and says where.
func (r *runner) keepLogs(c *bench.Cluster, dir string) {
	if c == nil {
		return
	}
	for _, p := range c.Peers {
		b, err := os.ReadFile(p.Log)
		if err != nil {
			continue
		}
		dst := filepath.Join(r.o.dir, fmt.Sprintf("failed-%s-%s-%s.log", time.Now().Format("150405"), filepath.Base(dir), p.Name))
		if os.WriteFile(dst, b, 0o644) == nil {
			r.logf("  kept %s", dst)
		}
	}
}
