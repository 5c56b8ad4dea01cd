// Command clusterbench measures a three-peer shoal cluster on loopback,
// each peer its own `shoal daemon` process: pin adds through consensus
// (pins/s, p50/p99 latency, from concurrent clients) and a large pinset
// (`status CID` latency and daemon RSS with many pins, a restart with
// them, and the 10^6-pin snapshot and restore benchmark of package
// consensus), and prints PASS/MISS against the targets. Run from the
// module root:
//
//	go run ./bench/cmd/clusterbench [-pins 10000] [-clients 8,32,128] [-runs 3] [-state 1000000]
//
// See package bench's doc for what each figure means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoal-project/shoal/bench"
)

type options struct {
	pins    int   // timed pin adds per throughput run
	clients []int // concurrent clients, one throughput row each
	runs    int
	modes   []mode
	// state is the pinset size of the status/RSS part; 0 skips it.
	state        int
	stateClients int
	stateTimeout time.Duration
	samples      int  // status CID requests
	snapBench    bool // run consensus's SnapshotRestore1M benchmark
	dir          string
	shoal        []variant // prebuilt binaries; none: build ./cmd/shoal
	keep         bool      // keep the cluster directories
	perf         string    // record the daemons with perf during the first run of each row
	consensus    map[string]any
}

// variant is a shoal binary under test.
type variant struct{ name, path string }

// mode is a replication factor pair: rmin=rmax=1 makes the daemon allocate
// the pin (surveying every peer); -1 (everywhere) skips allocation.
type mode struct {
	name       string
	rmin, rmax int
}

var modes = map[string]mode{
	"1":  {"rmin=rmax=1", 1, 1},
	"-1": {"rmin=rmax=-1", -1, -1},
}

func main() { bench.Main("clusterbench", run, nil) }

func run(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("clusterbench", flag.ContinueOnError)
	var o options
	fl.IntVar(&o.pins, "pins", 10000, "timed pin adds per throughput run")
	clients := fl.String("clients", "8,32,128", "concurrent API clients, spread over the peers; a comma-separated list runs each")
	fl.IntVar(&o.runs, "runs", 3, "throughput runs per row, each on a fresh cluster; medians are reported (0 skips them)")
	modeList := fl.String("modes", "1,-1", "replication factors to pin with: 1 (rmin=rmax=1, the daemon allocates) and/or -1 (everywhere, no allocation)")
	fl.IntVar(&o.state, "state", 1_000_000, "pins to build up for the status and RSS figures (0 skips them)")
	fl.IntVar(&o.stateClients, "state-clients", 64, "concurrent clients building the large pinset")
	fl.DurationVar(&o.stateTimeout, "state-timeout", 20*time.Minute, "stop building the pinset after this long and measure at the size reached")
	fl.IntVar(&o.samples, "samples", 300, "status CID requests timed on the large pinset")
	fl.BoolVar(&o.snapBench, "snapshot-bench", true, "run go test ./consensus -bench SnapshotRestore1M for the snapshot and restore figures")
	fl.StringVar(&o.dir, "dir", filepath.Join(os.TempDir(), "shoal-clusterbench"), "directory for the peers' repositories (removed at the end unless -keep)")
	shoal := fl.String("shoal", "", "use this shoal `BINARY` instead of building ./cmd/shoal; NAME=BINARY,NAME=BINARY,... compares binaries, run for run (the large pinset uses the first)")
	fl.BoolVar(&o.keep, "keep", false, "keep the peers' repositories and logs")
	fl.StringVar(&o.perf, "perf", "", "record the daemons with `perf record -g` during the first timed run of each row, into PREFIX-MODE-CLIENTS.data")
	cons := fl.String("consensus", "", "overrides of config.json's consensus settings, as key=value,... (e.g. commit_timeout=10ms)")
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
	for _, s := range strings.Split(*modeList, ",") {
		m, ok := modes[strings.TrimSpace(s)]
		if !ok {
			return fmt.Errorf("-modes %q: want 1 and/or -1", *modeList)
		}
		o.modes = append(o.modes, m)
	}
	if *shoal != "" {
		for _, s := range strings.Split(*shoal, ",") {
			name, path, ok := strings.Cut(s, "=")
			if !ok {
				name, path = filepath.Base(s), s
			}
			abs, err := filepath.Abs(path)
			if err != nil {
				return err
			}
			o.shoal = append(o.shoal, variant{name: name, path: abs})
		}
	}
	if o.consensus, err = bench.ParseOverrides("consensus", *cons); err != nil {
		return err
	}
	if o.pins < 1 || o.runs < 0 || o.state < 0 || o.stateClients < 1 || o.samples < 1 {
		return errors.New("-pins, -state-clients and -samples must be at least 1, -runs and -state at least 0")
	}
	if o.dir, err = filepath.Abs(o.dir); err != nil {
		return err
	}
	return newRunner(o, args).run(ctx)
}
