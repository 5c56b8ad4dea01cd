// Command ingestbench measures `shoal add` against the machine's SHA-256
// rate, its disk's sequential write rate, and the code `ipfs add` runs
// (boxo's importer, hashing only and into go-ds-flatfs), each path in its
// own process, and prints medians, peak RSS and PASS/MISS against the
// targets. Run from the module root:
//
//	go run ./bench/cmd/ingestbench [-size 2GiB] [-runs 3] [-dir DIR] [-big]
//
// See package bench's doc for what each path stands for. The hidden
// subcommand `ingestbench child KIND ...` runs one in-process reference;
// the runner re-executes itself with it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/shoal-project/shoal/bench"
)

type options struct {
	size    int64
	runs    int
	dir     string
	big     bool
	bigSize int64
	shoal   string // prebuilt binary; "" builds ./cmd/shoal
	workers int    // goroutines of the all-cores SHA-256 reference
	// A run during which other processes used more than maxOthers of the
	// machine is redone, up to retries times; before each, the runner
	// waits up to quietWait for the machine to be that quiet.
	maxOthers float64
	retries   int
	quietWait time.Duration
}

func main() { bench.Main("ingestbench", run, child) }

func run(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("ingestbench", flag.ContinueOnError)
	var o options
	size := fl.String("size", "2GiB", "size of the seeded random data file")
	bigSize := fl.String("big-size", "16GiB", "size of the -big stdin run")
	fl.IntVar(&o.runs, "runs", 3, "runs of each path; medians are reported")
	fl.StringVar(&o.dir, "dir", filepath.Join(os.TempDir(), "shoal-bench"), "directory for the data file (kept for reuse) and the stores (removed)")
	fl.BoolVar(&o.big, "big", false, "also stream -big-size bytes through the stdin of shoal add (hash only and into a store) to check its peak RSS")
	fl.StringVar(&o.shoal, "shoal", "", "use this shoal binary instead of building ./cmd/shoal")
	fl.IntVar(&o.workers, "cores", runtime.NumCPU(), "goroutines of the all-cores SHA-256 reference")
	maxOthers := fl.Float64("max-others", 15, "redo a run during which other processes used more than this `percent` of the machine")
	fl.IntVar(&o.retries, "retries", 3, "times a run is redone because of other processes before it is kept anyway")
	fl.DurationVar(&o.quietWait, "quiet-wait", 2*time.Minute, "how long to wait for other processes to quiet down before each run")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	o.maxOthers = *maxOthers / 100
	var err error
	if o.size, err = bench.ParseSize(*size); err != nil {
		return err
	}
	if o.bigSize, err = bench.ParseSize(*bigSize); err != nil {
		return err
	}
	if o.runs < 1 || o.workers < 1 || o.retries < 0 || o.maxOthers <= 0 {
		return errors.New("-runs and -cores must be at least 1, -retries at least 0, -max-others above 0")
	}
	if o.big && o.size%8 != 0 {
		return errors.New("-big needs a -size that is a multiple of 8 bytes")
	}
	if o.dir, err = filepath.Abs(o.dir); err != nil {
		return err
	}
	return newRunner(o, args).run(ctx)
}
