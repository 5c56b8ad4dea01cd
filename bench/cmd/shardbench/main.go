// Command shardbench measures sharded adds, reads and repair on a cluster
// of `shoal daemon` processes on loopback, against real Kubo (`ipfs add`,
// `ipfs cat` and a range `ipfs cat` of its own repository) and the code
// those commands run (boxo's importer and UnixFS reader over go-ds-flatfs)
// on the same file in the same invocation, and prints medians, ratios,
// peak RSS, a CPU profile of the daemons grouped by kind of work, and
// PASS/MISS against the targets. Run from the module root:
//
//	go run ./bench/cmd/shardbench [-size 2GiB] [-runs 3] [-big] [-ipfs BINARY|none] [-range 64MiB]
//
// See "Shard benchmark" in package bench's doc for what each figure is.
// The hidden subcommand `shardbench child KIND ...` runs one in-process
// reference; the runner re-executes itself with it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/shoal-project/shoal/bench"
)

type options struct {
	size        int64
	runs        int
	dir         string
	shoal       string // prebuilt binary; "" builds ./cmd/shoal
	peers       int    // daemons of the add and read clusters
	repairPeers int    // daemons of the rmin=rmax=2 cluster that repairs
	shardSize   string // --shard-size of the adds; "" keeps shoal's default
	big         bool
	bigSize     int64
	profile     bool // an extra, untimed cluster with SHOAL_CPUPROFILE
	repairWait  time.Duration
	keep        bool
	ipfs        string // Kubo's binary; "none" leaves Kubo out
	rangeSize   int64  // bytes of the range cats, from the middle of the file
}

func main() { bench.Main("shardbench", run, child) }

func run(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("shardbench", flag.ContinueOnError)
	var o options
	size := fl.String("size", "2GiB", "size of the seeded random data file")
	bigSize := fl.String("big-size", "16GiB", "size of the -big stdin run")
	fl.IntVar(&o.runs, "runs", 3, "runs of each path; medians are reported (0: only -profile and -big)")
	fl.StringVar(&o.dir, "dir", filepath.Join(os.TempDir(), "shoal-bench"), "directory for the data file (kept for reuse), stores and clusters (removed)")
	fl.StringVar(&o.shoal, "shoal", "", "use this shoal binary instead of building ./cmd/shoal")
	fl.IntVar(&o.peers, "peers", 3, "daemons of the add and cat clusters")
	fl.IntVar(&o.repairPeers, "repair-peers", 3, "daemons of the rmin=rmax=2 cluster, of which one is stopped for the repair (3 or more)")
	fl.StringVar(&o.shardSize, "shard-size", "", "--shard-size of the adds (default: shoal's)")
	fl.BoolVar(&o.big, "big", false, "also stream -big-size bytes through the stdin of a sharded add to check peak RSS")
	fl.BoolVar(&o.profile, "profile", true, "profile the daemons (SHOAL_CPUPROFILE) during one extra, untimed add and cat")
	fl.DurationVar(&o.repairWait, "repair-timeout", 2*time.Minute, "give up waiting for a repair after this long")
	fl.BoolVar(&o.keep, "keep", false, "keep the clusters' repositories, logs and profiles")
	fl.StringVar(&o.ipfs, "ipfs", "", "Kubo's ipfs `BINARY` for the Kubo rows (default: $SHOAL_TEST_IPFS, else what ../shared/tools/build-kubo builds; \"none\": no Kubo rows)")
	rangeSize := fl.String("range", "64MiB", "size of the range cats, from the middle of the file")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	var err error
	if o.size, err = bench.ParseSize(*size); err != nil {
		return err
	}
	if o.bigSize, err = bench.ParseSize(*bigSize); err != nil {
		return err
	}
	if o.rangeSize, err = bench.ParseSize(*rangeSize); err != nil {
		return err
	}
	o.rangeSize = min(o.rangeSize, o.size)
	if o.runs < 0 || o.peers < 2 || o.repairPeers < 3 {
		return errors.New("-runs must be at least 0, -peers at least 2, -repair-peers at least 3")
	}
	if o.big && o.size%8 != 0 {
		return errors.New("-big needs a -size that is a multiple of 8 bytes")
	}
	if o.dir, err = filepath.Abs(o.dir); err != nil {
		return err
	}
	if o.ipfs != "none" && o.runs > 0 {
		if o.ipfs, err = bench.Kubo(ctx, o.ipfs); err != nil {
			return err
		}
	}
	return newRunner(o, args).run(ctx)
}
