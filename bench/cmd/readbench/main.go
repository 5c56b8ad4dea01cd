// Command readbench measures what a consistent API read costs over a stale
// one, in the same run: on a three-peer shoal cluster on loopback (its own
// `shoal daemon` processes, shoal's default consensus settings unless
// -consensus says otherwise) holding -pins small added files, -clients
// goroutines send GET /status/CID of random pins (the Go API client's
// Status, the whole cluster's view) to the leader or to a follower for
// -duration, once with the default consistency, which waits for
// consensus.ReadBarrier (a follower asks the leader for its commit index, the
// leader confirms its leadership with a heartbeat round, the reader waits
// until it applied that index), and once with ?consistency=stale, which
// answers at once; with -writes, each such row again while one goroutine
// adds files through the leader, so that consistent reads wait for
// in-flight commits. The two modes alternate, run for run; it prints the
// medians over -runs of each run's p50, p99, reads/s and the daemons' CPU
// per read, and what consistent reads cost over stale ones, each run
// against the stale run next to it. Run from the module root:
//
//	go run ./bench/cmd/readbench [-clients 1,16] [-duration 5s] [-runs 3] [-pins 300] [-writes=true]
//
// It takes about five minutes at the defaults.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
	"github.com/shoal-project/shoal/bench"
)

const peers = 3

type options struct {
	clients   []int // concurrent readers, one row each
	duration  time.Duration
	runs      int
	pins      int
	writes    bool   // also measure every row under a write load
	shoal     string // a prebuilt binary; "": build ./cmd/shoal
	keep      bool
	consensus map[string]any
}

func main() { bench.Main("readbench", run, nil) }

func run(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("readbench", flag.ContinueOnError)
	var o options
	clients := fl.String("clients", "1,16", "concurrent readers; a comma-separated list runs each")
	fl.DurationVar(&o.duration, "duration", 5*time.Second, "length of each timed run")
	fl.IntVar(&o.runs, "runs", 3, "runs per row and mode, the modes interleaved; medians are reported")
	fl.IntVar(&o.pins, "pins", 300, "small files added before the reads, the pins they read")
	fl.BoolVar(&o.writes, "writes", true, "also measure every row while one goroutine adds files through the leader")
	fl.StringVar(&o.shoal, "shoal", "", "use this shoal `BINARY` instead of building ./cmd/shoal")
	fl.BoolVar(&o.keep, "keep", false, "keep the peers' repositories and logs")
	cons := fl.String("consensus", "", "overrides of config.json's consensus settings, as key=value,... (e.g. heartbeat_timeout=300ms)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	var err error
	if o.clients, err = bench.ParseCounts("clients", *clients); err != nil {
		return err
	}
	if o.consensus, err = bench.ParseOverrides("consensus", *cons); err != nil {
		return err
	}
	if o.runs < 1 || o.pins < 1 || o.duration <= 0 {
		return errors.New("-runs and -pins must be at least 1, -duration positive")
	}
	if o.shoal != "" {
		abs, err := filepath.Abs(o.shoal)
		if err != nil {
			return err
		}
		o.shoal = abs
	}
	return (&runner{o: o, args: args}).run(ctx)
}

// The two modes, the index of a cell's runs.
var modes = [2]string{api.ConsistencyConsistent, api.ConsistencyStale}

// cell is a pair of table rows: the same reads of the same peer in each
// mode.
type cell struct {
	role    string // "leader" or "follower"
	writes  bool
	clients int
	runs    [2][]readRun // by mode
}

type runner struct {
	o       options
	args    []string
	c       *bench.Cluster
	readers [peers][2]*client.Client // by peer and mode
	cids    []string
	leaders []string // the leader at the first run, then at each change
	seq     uint64   // seeds the readers and the written content
}

func logf(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }

func (r *runner) run(ctx context.Context) (err error) {
	started, load0 := time.Now(), bench.LoadAvg()
	dir, err := os.MkdirTemp("", "shoal-readbench-")
	if err != nil {
		return err
	}
	defer func() {
		if r.o.keep || err != nil && ctx.Err() == nil {
			logf("kept %s (repositories and daemon logs)", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	shoal := r.o.shoal
	if shoal == "" {
		shoal = filepath.Join(dir, "shoal")
		logf("building ./cmd/shoal")
		if err := bench.BuildShoal(ctx, shoal); err != nil {
			return err
		}
	}
	logf("starting %d daemons", peers)
	if r.c, err = bench.StartCluster(ctx, bench.ClusterConfig{Shoal: shoal, Dir: dir, Peers: peers, Consensus: r.o.consensus}); err != nil {
		return err
	}
	defer func() {
		if cerr := r.c.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	maxConc := 0
	for _, n := range r.o.clients {
		maxConc = max(maxConc, n)
	}
	for i, d := range r.c.Peers {
		for m, mode := range modes {
			if r.readers[i][m], err = newClient(d.API, maxConc, mode); err != nil {
				return err
			}
		}
	}
	if err := r.addPins(ctx); err != nil {
		return err
	}

	var cells []*cell
	for _, w := range []bool{false, true} {
		for _, role := range []string{"leader", "follower"} {
			for _, n := range r.o.clients {
				if !w || r.o.writes {
					cells = append(cells, &cell{role: role, writes: w, clients: n})
				}
			}
		}
	}
	for run := 1; run <= r.o.runs; run++ {
		for i, cl := range cells {
			// Which mode goes first alternates, so that neither always
			// follows the other (or the previous cell's write load).
			order := []int{0, 1}
			if (run+i)%2 == 0 {
				order = []int{1, 0}
			}
			for _, m := range order {
				res, err := r.measure(ctx, cl, m)
				if err != nil {
					return err
				}
				cl.runs[m] = append(cl.runs[m], res)
				logf("run %d/%d: %s, %s, %d clients, %s (%s): %d reads, %.0f/s, p50 %s, p99 %s, %d errors%s",
					run, r.o.runs, cl.role, writesName(cl.writes), cl.clients, modes[m], res.target, len(res.lat), res.rate(),
					bench.Percentile(res.lat, 50).Round(time.Microsecond), bench.Percentile(res.lat, 99).Round(time.Microsecond),
					res.errs, errSuffix(res.firstErr))
			}
		}
	}
	r.report(os.Stdout, cells, started, load0)
	return nil
}

// addPins adds r.o.pins small distinct files, spread over the peers from
// a few goroutines, and waits until every peer has applied them and their
// pins are pinned, so that the reads find them and the reconcilers are
// quiet.
func (r *runner) addPins(ctx context.Context) error {
	logf("adding %d files", r.o.pins)
	var err error
	if r.cids, err = addFiles(ctx, r.c, r.o.pins); err != nil {
		return err
	}
	for _, d := range r.c.Peers {
		pins, err := d.Client.Pins(ctx) // consistent: d has applied every add
		if err != nil {
			return fmt.Errorf("list pins on %s: %w", d.Name, err)
		}
		if len(pins) < r.o.pins {
			return fmt.Errorf("%s lists %d pins after %d adds", d.Name, len(pins), r.o.pins)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		sts, err := r.c.Peers[0].Client.StatusAll(ctx, false)
		if err != nil {
			return fmt.Errorf("status of every pin on %s: %w", r.c.Peers[0].Name, err)
		}
		pinned := 0
		for _, st := range sts {
			if st.Status == api.OverallPinned {
				pinned++
			}
		}
		if pinned == len(sts) {
			return nil
		}
		if time.Now().After(deadline) {
			logf("  %d of %d pins pinned after a minute; measuring anyway", pinned, len(sts))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// measure runs the reads of cl in mode m once, against the peer that has
// cl's role now.
func (r *runner) measure(ctx context.Context, cl *cell, m int) (readRun, error) {
	leader := r.c.Leader(ctx)
	if leader == nil {
		return readRun{}, errors.New("no peer names a leader")
	}
	if len(r.leaders) == 0 || r.leaders[len(r.leaders)-1] != leader.Name {
		r.leaders = append(r.leaders, leader.Name)
	}
	target := 0
	for i, d := range r.c.Peers {
		if (d == leader) == (cl.role == "leader") {
			target = i
			break
		}
	}
	r.seq++
	var stop func() writeLoad
	if cl.writes {
		stop = startWrites(ctx, leader.Client, r.seq)
	}
	u0 := sampleUsage(r.c)
	res := readFor(ctx, r.readers[target][m], r.cids, cl.clients, r.o.duration, r.seq)
	res.usage = between(u0, sampleUsage(r.c))
	if stop != nil {
		res.writes = stop()
		if res.writes.errs > 0 {
			logf("  %d adds failed: %v", res.writes.errs, res.writes.first)
		}
	}
	res.target = r.c.Peers[target].Name
	return res, ctx.Err()
}
