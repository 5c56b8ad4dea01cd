package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/bench"
)

const peers = 3

type runner struct {
	o       options
	args    []string
	log     io.Writer
	shoal   []variant // what is measured; the first builds the large pinset
	scratch string
	seq     int
}

func newRunner(o options, args []string) *runner {
	return &runner{o: o, args: args, log: os.Stderr}
}

func (r *runner) logf(format string, a ...any) { fmt.Fprintf(r.log, format+"\n", a...) }

// row is one line of the throughput table: a replication mode and a
// client count, measured over several runs.
type row struct {
	shoal   variant
	mode    mode
	clients int
	runs    []pinRun
	err     error
}

type pinRun struct {
	pinResult
	phase
	leader string
}

// stateResult is the large-pinset part.
type stateResult struct {
	err        error
	want, pins int           // pins asked for and committed
	build      time.Duration // time to commit them
	rates      []string      // pins/s per stretch, as built
	idle       phase         // the daemons' CPU over idleFor, once built
	usage      []bench.Usage // each daemon's memory, once built
	status     []time.Duration
	statusErrs int
	statusErr  error
	// restart of a follower with the pinset: API up, then serving the
	// last pin.
	restartAPI, restartServing time.Duration
	restartErr                 error
	restartUsage               bench.Usage
	stopTook                   time.Duration // SIGTERM to exit
	stopErr                    error         // it did not exit in time and was killed
}

// snapResult is consensus's SnapshotRestore1M benchmark.
type snapResult struct {
	err                             error
	persist, restore, rssMiB, bytes float64
	line                            string
}

func (r *runner) run(ctx context.Context) error {
	started := time.Now()
	load0 := bench.LoadAvg()
	if err := os.MkdirAll(r.o.dir, 0o755); err != nil {
		return err
	}
	var err error
	if r.scratch, err = os.MkdirTemp(r.o.dir, "run-"); err != nil {
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
	if len(r.shoal) == 0 {
		r.shoal = []variant{{name: "shoal", path: filepath.Join(r.scratch, "shoal")}}
		r.logf("building ./cmd/shoal")
		if err := bench.BuildShoal(ctx, r.shoal[0].path); err != nil {
			return err
		}
	}

	var rows []*row
	for _, m := range r.o.modes {
		if r.o.runs == 0 {
			break
		}
		for _, c := range r.o.clients {
			for _, v := range r.shoal {
				rows = append(rows, &row{shoal: v, mode: m, clients: c})
			}
		}
	}
	// Interleaved, as the ingest runner does: drift in the machine's load
	// spreads over the rows.
	for run := 1; run <= r.o.runs; run++ {
		for _, rw := range rows {
			if rw.err != nil {
				continue
			}
			res, err := r.throughputRun(ctx, rw, run)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				rw.err = err
				r.logf("  %v", err)
				continue
			}
			rw.runs = append(rw.runs, res)
		}
	}

	var st *stateResult
	if r.o.state > 0 {
		st = r.stateRun(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	var snap *snapResult
	if r.o.snapBench {
		snap = r.snapshotBench(ctx)
	}
	r.report(os.Stdout, rows, st, snap, started, load0)
	return nil
}

func (r *runner) newCluster(ctx context.Context, name string, v variant) (*bench.Cluster, error) {
	r.seq++
	dir := filepath.Join(r.scratch, fmt.Sprintf("%02d-%s", r.seq, name))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return bench.StartCluster(ctx, bench.ClusterConfig{Shoal: v.path, Dir: dir, Peers: peers, Consensus: r.o.consensus})
}

// closeCluster stops the daemons and removes their directories, but keeps
// the logs, in -dir, when one of them had to be killed (its goroutine dump
// is there) or stopped late earlier (see restart).
func (r *runner) closeCluster(c *bench.Cluster, keepLogs bool) {
	if err := c.Close(); err != nil {
		r.logf("  stop cluster: %v", err)
		keepLogs = true
	}
	dir := filepath.Dir(c.Peers[0].Repo)
	if keepLogs && !r.o.keep {
		dst := filepath.Join(r.o.dir, "logs-"+time.Now().UTC().Format("20060102-150405"))
		if err := os.MkdirAll(dst, 0o755); err == nil {
			for _, d := range c.Peers {
				_ = os.Rename(d.Log, filepath.Join(dst, filepath.Base(d.Log)))
			}
			r.logf("  daemon logs kept in %s", dst)
		}
	}
	if !r.o.keep {
		os.RemoveAll(dir)
	}
}

// warmup is the untimed pin adds before each timed run, per client: they
// open the HTTP connections and the libp2p streams the timed ones reuse.
const warmup = 3

func (r *runner) throughputRun(ctx context.Context, rw *row, run int) (pinRun, error) {
	name := fmt.Sprintf("%s, %d clients", rw.mode.name, rw.clients)
	if len(r.shoal) > 1 {
		name = rw.shoal.name + ", " + name
	}
	r.logf("%s: run %d/%d: starting %d daemons", name, run, r.o.runs, peers)
	c, err := r.newCluster(ctx, "pins", rw.shoal)
	if err != nil {
		return pinRun{}, fmt.Errorf("%s: %w", name, err)
	}
	defer r.closeCluster(c, false)
	clients, err := loadClients(c, rw.clients)
	if err != nil {
		return pinRun{}, err
	}
	seed := uint64(r.seq)
	w := pinAll(ctx, clients, testCIDs(seed, 0, warmup*rw.clients), rw.clients, rw.mode)
	if w.errs > 0 {
		return pinRun{}, fmt.Errorf("%s: warm-up: %d of %d failed: %w", name, w.errs, warmup*rw.clients, w.firstErr)
	}
	cids := testCIDs(seed, warmup*rw.clients, r.o.pins)
	var stopPerf func()
	if r.o.perf != "" && run == 1 {
		out := fmt.Sprintf("%s-%s-%d-%d.data", r.o.perf, rw.shoal.name, rw.mode.rmin, rw.clients)
		if stopPerf, err = startPerf(c, out); err != nil {
			return pinRun{}, err
		}
		r.logf("  recording the daemons into %s", out)
	}
	u0 := sampleUsage(c)
	res := pinAll(ctx, clients, cids, rw.clients, rw.mode)
	u1 := sampleUsage(c)
	if stopPerf != nil {
		stopPerf()
	}
	out := pinRun{pinResult: res, phase: between(u0, u1)}
	if l := c.Leader(ctx); l != nil {
		out.leader = l.Name
	}
	r.logf("  %d pins in %s: %.0f/s, p50 %s, p99 %s, %d errors; daemons' CPU %s (%.2f ms/pin), clients' %s, others' %s",
		res.ok, res.wall.Round(time.Millisecond), res.rate(), bench.Percentile(res.lat, 50).Round(10*time.Microsecond),
		bench.Percentile(res.lat, 99).Round(10*time.Microsecond), res.errs, out.daemonCPU().Round(time.Millisecond),
		msPer(out.daemonCPU(), res.ok), out.self.Round(time.Millisecond), out.others.Round(time.Millisecond))
	if res.errs > 0 {
		r.logf("  first error: %v", res.firstErr)
	}
	return out, nil
}

func msPer(d time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / 1000 / float64(n)
}

// Building the large pinset goes in stretches of this many pins, each
// logged with its rate, so that a slowdown as the pinset grows shows.
const stretch = 20_000

// idleFor is how long the daemons' CPU use is sampled once the pinset is
// built and no client is active.
const idleFor = 10 * time.Second

func (r *runner) stateRun(ctx context.Context) *stateResult {
	st := &stateResult{want: r.o.state}
	r.logf("large pinset: starting %d daemons, then %d pin adds (rmin=rmax=-1) from %d clients, for at most %s",
		peers, r.o.state, r.o.stateClients, r.o.stateTimeout)
	c, err := r.newCluster(ctx, "state", r.shoal[0])
	if err != nil {
		st.err = err
		return st
	}
	defer func() { r.closeCluster(c, st.stopErr != nil) }()
	clients, err := loadClients(c, r.o.stateClients)
	if err != nil {
		st.err = err
		return st
	}
	seed := uint64(1_000_000 + r.seq)
	start := time.Now()
	var last string
	for st.pins < r.o.state && time.Since(start) < r.o.stateTimeout && ctx.Err() == nil {
		n := min(stretch, r.o.state-st.pins)
		cids := testCIDs(seed, st.pins, n)
		res := pinAll(ctx, clients, cids, r.o.stateClients, modes["-1"])
		if res.errs > 0 {
			r.logf("  %d of %d failed; first: %v", res.errs, n, res.firstErr)
		}
		if res.ok > 0 {
			// The last pin of the stretch that succeeded: found by
			// asking, since failures are spread.
			last = cids[len(cids)-1]
		}
		st.pins += res.ok
		rate := fmt.Sprintf("%.0f", res.rate())
		st.rates = append(st.rates, rate)
		r.logf("  %d pins after %s (this stretch %s/s, p50 %s, p99 %s)", st.pins, time.Since(start).Round(time.Second),
			rate, bench.Percentile(res.lat, 50).Round(10*time.Microsecond), bench.Percentile(res.lat, 99).Round(10*time.Microsecond))
		if res.ok == 0 {
			st.err = fmt.Errorf("no pin of a stretch succeeded: %w", res.firstErr)
			return st
		}
	}
	st.build = time.Since(start)
	if ctx.Err() != nil {
		return st
	}

	u0 := sampleUsage(c)
	if err := sleepCtx(ctx, idleFor); err != nil {
		return st
	}
	st.idle = between(u0, sampleUsage(c))
	for _, d := range c.Peers {
		u, _ := d.Usage()
		st.usage = append(st.usage, u)
	}
	r.logf("  idle for %s: daemons' CPU %s; RSS %s", idleFor, st.idle.daemonCPU().Round(time.Millisecond), rssList(st.usage))

	// status CID of random pins, one request at a time, over the peers.
	all := testCIDs(seed, 0, st.pins)
	rng := rand.New(rand.NewPCG(seed, 2))
	for i := range r.o.samples {
		cl := c.Peers[i%len(c.Peers)].Client
		id := all[rng.IntN(len(all))]
		t0 := time.Now()
		_, err := cl.Status(ctx, id, false)
		if err != nil {
			st.statusErrs++
			if st.statusErr == nil {
				st.statusErr = fmt.Errorf("status %s: %w", id, err)
			}
			continue
		}
		st.status = append(st.status, time.Since(t0))
	}
	slices.Sort(st.status)
	r.logf("  status CID: p50 %s, p99 %s over %d requests (%d errors)", bench.Percentile(st.status, 50),
		bench.Percentile(st.status, 99), len(st.status), st.statusErrs)

	// Restart a follower: it restores its snapshot and replays the log.
	r.restart(ctx, c, st, last)
	return st
}

func (r *runner) restart(ctx context.Context, c *bench.Cluster, st *stateResult, last string) {
	leader := c.Leader(ctx)
	var f *bench.Daemon
	for _, d := range c.Peers {
		if d != leader {
			f = d
			break
		}
	}
	if f == nil || last == "" {
		st.restartErr = fmt.Errorf("no follower to restart")
		return
	}
	stopStart := time.Now()
	if err := f.Stop(); err != nil {
		// Killed: the restart below recovers from a crash instead.
		st.stopErr = err
		r.logf("  %v", err)
	}
	st.stopTook = time.Since(stopStart)
	start := time.Now()
	if err := f.Start(ctx); err != nil {
		st.restartErr = err
		return
	}
	st.restartAPI = time.Since(start)
	for {
		if _, err := f.Client.Status(ctx, last, true); err == nil {
			break
		} else if !isNotFound(err) || time.Since(start) > 5*time.Minute {
			st.restartErr = fmt.Errorf("status of the last pin on %s after restart: %w", f.Name, err)
			return
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return
		}
	}
	st.restartServing = time.Since(start)
	st.restartUsage, _ = f.Usage()
	r.logf("  restart of %s with %d pins: API up after %s, serving the last pin after %s, RSS %s",
		f.Name, st.pins, st.restartAPI.Round(time.Millisecond), st.restartServing.Round(time.Millisecond),
		rssList([]bench.Usage{st.restartUsage}))
}

func isNotFound(err error) bool { return errors.Is(err, api.ErrNotFound) }

func rssList(us []bench.Usage) string {
	var s []string
	for _, u := range us {
		s = append(s, fmt.Sprintf("%.0f MiB (peak %.0f)", float64(u.RSS)/bench.MiB, float64(u.MaxRSS)/bench.MiB))
	}
	return strings.Join(s, ", ")
}

var benchLine = regexp.MustCompile(`^BenchmarkSnapshotRestore1M\S*\s+\d+\s+.*$`)

// snapshotBench runs package consensus's benchmark of a 10^6-pin snapshot
// persisted through raft's file store and restored, in its own process.
func (r *runner) snapshotBench(ctx context.Context) *snapResult {
	s := &snapResult{}
	root, err := bench.ModuleRoot(ctx)
	if err != nil {
		s.err = err
		return s
	}
	r.logf("go test ./consensus -run '^$' -bench SnapshotRestore1M -benchtime 1x")
	cmd := exec.CommandContext(ctx, "go", "test", "./consensus", "-run", "^$", "-bench", "SnapshotRestore1M", "-benchtime", "1x")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.err = fmt.Errorf("go test -bench SnapshotRestore1M: %w: %s", err, strings.TrimSpace(string(out)))
		return s
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if !benchLine.MatchString(sc.Text()) {
			continue
		}
		s.line = strings.Join(strings.Fields(sc.Text()), " ")
		f := strings.Fields(sc.Text())
		for i := 1; i < len(f); i++ {
			v, err := strconv.ParseFloat(f[i-1], 64)
			if err != nil {
				continue
			}
			switch f[i] {
			case "persist-s":
				s.persist = v
			case "restore-s":
				s.restore = v
			case "peak-RSS-MiB":
				s.rssMiB = v
			case "bytes/pin":
				s.bytes = v
			}
		}
	}
	if s.line == "" {
		s.err = fmt.Errorf("no benchmark line in: %s", strings.TrimSpace(string(out)))
	}
	r.logf("  %s", s.line)
	return s
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// startPerf runs perf record on every daemon until the returned function
// is called.
func startPerf(c *bench.Cluster, out string) (func(), error) {
	var pids []string
	for _, d := range c.Peers {
		pids = append(pids, strconv.Itoa(d.Pid()))
	}
	cmd := exec.Command("perf", "record", "-q", "-F", "999", "-g", "-o", out, "-p", strings.Join(pids, ","))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	time.Sleep(200 * time.Millisecond) // let it attach
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}, nil
}
