package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/shoal-project/shoal/bench"
)

func (r *runner) report(w io.Writer, started time.Time, load0 string) {
	fmt.Fprintf(w, "command: go run ./bench/cmd/shardbench %s\n", strings.Join(r.args, " "))
	fmt.Fprintf(w, "date:    %s UTC (%s)\n", started.UTC().Format("2006-01-02 15:04"), time.Since(started).Round(time.Second))
	fmt.Fprintf(w, "host:    %s; load average %s at start, %s at end\n", bench.Machine(), load0, bench.LoadAvg())
	if r.o.shoal != "" {
		fmt.Fprintf(w, "shoal:   %s, given with -shoal (runner from tree %s)\n", r.o.shoal, bench.GitRev())
	} else {
		fmt.Fprintf(w, "shoal:   built from ./cmd/shoal of tree %s\n", bench.GitRev())
	}
	fmt.Fprintf(w, "data:    %s of seeded ChaCha8 bytes (%s), read back into the page cache before every add\n", bench.FormatSize(r.o.size), r.data)
	shard := r.o.shardSize
	if shard == "" {
		shard = "shoal's default"
	}
	fmt.Fprintf(w, "cluster: a fresh cluster of `shoal daemon` processes on loopback per run and replication: %d peers for rmin=rmax=1 (default settings),\n", r.o.peers)
	fmt.Fprintf(w, "         %d for rmin=rmax=2 (health: heartbeat 200ms, ttl 1s, repair_grace 1s); shard size %s; the client is the shoal CLI\n", r.o.repairPeers, shard)
	fmt.Fprintf(w, "         talking to the first peer's API; cat writes to /dev/null\n")
	fmt.Fprintf(w, "units:   MB = 10^6 bytes; each row: %d runs, interleaved; RSS is the client's (or the reference's) process; \"others %%\" is the\n", r.o.runs)
	fmt.Fprintf(w, "         largest share of the machine used by neither the measured process nor the cluster's daemons during a run\n\n")

	var repairRatios []float64
	if r.o.runs > 0 {
		bench.WriteTable(w, "(1) ingest: the data file", r.present(&r.refAdd, &r.kuboAdd, &r.add1, &r.add2, &r.add3))
		fmt.Fprintf(w, "  peak RSS (VmHWM) of the largest peer after the add, MiB: rmin=rmax=1 %s; rmin=rmax=2 %s\n\n", fmtList(r.peerRSS1), fmtList(r.peerRSS2))
		bench.WriteTable(w, "(2) read: the whole file", r.present(&r.refCat, &r.refCatCold, &r.refDisk, &r.kuboCat, &r.cat1, &r.cat2, &r.cat3))
		fmt.Fprintf(w, "  (\"cold\": the flatfs files dropped from the page cache first, posix_fadvise DONTNEED; shoal's store writes and\n")
		fmt.Fprintf(w, "  reads with O_DIRECT, so shoal cat reads its shards from the device, whose rate \"disk\" measures on the data file)\n")
		fmt.Fprintf(w, "  CPU time of a cat, the CLI's and the daemons' together, per run: rmin=rmax=1 %s; rmin=rmax=2 %s; rmin=rmax=3 %s\n",
			fmtCPU(r.catCPU[1]), fmtCPU(r.catCPU[2]), fmtCPU(r.catCPU[3]))
		if ref := r.refCat.Rate(); ref > 0 {
			fmt.Fprintf(w, "  (at 1.5x boxo's warm read, %.0f MB/s, a cat of this file would have %.2f s of the machine's %d cores: %.2f CPU-seconds)\n",
				1.5*ref, float64(r.o.size)/bench.MB/(1.5*ref), runtime.NumCPU(), float64(runtime.NumCPU())*float64(r.o.size)/bench.MB/(1.5*ref))
		}
		fmt.Fprintf(w, "  shards per peer (the cat asks peer0, which reads the others' shards from them):\n")
		for _, pl := range r.placements {
			fmt.Fprintf(w, "    %s\n", pl)
		}
		fmt.Fprintln(w)
		off, n := r.rangeArgs()
		bench.WriteTable(w, fmt.Sprintf("(2b) read: %s from byte %s (--offset %s --length %s)", bench.FormatSize(r.o.rangeSize), off, off, n),
			r.present(&r.kuboRange, &r.range1))
		fmt.Fprintln(w)
		fmt.Fprintf(w, "(4) repair: the peer (not the first) holding most shards of the rmin=rmax=2 cluster stopped with SIGTERM; time until the first peer's status shows every\n")
		fmt.Fprintf(w, "    shard pinned on 2 other peers (detection, 1 s ttl + 1 s grace, included), and of that the copies: from the first new holder in the status\n")
		fmt.Fprintf(w, "    to the end; MB = the stopped peer's shards; the ratio (and the target) compares the copies' rate with cat, since ttl and grace are settings\n")
		for i, rr := range r.repairs {
			if rr.err != nil {
				fmt.Fprintf(w, "  run %d: %v\n", i+1, rr.err)
				continue
			}
			catRate := 0.0
			if i < len(r.cat2.Runs) {
				catRate = rate(r.cat2.Runs[i], r.o.size)
			}
			ratio := rr.copyRate() / catRate
			repairRatios = append(repairRatios, ratio)
			fmt.Fprintf(w, "  run %d: %s's %d shards, %.0f MB in %.2f s = %.0f MB/s; copies %.2f s = %.0f MB/s; shoal cat in the same cluster %.0f MB/s; ratio %.0f%%\n",
				i+1, rr.victim, rr.shards, float64(rr.bytes)/bench.MB, rr.took.Seconds(), rr.rate(), rr.copying.Seconds(), rr.copyRate(), catRate, 100*ratio)
		}
		for _, e := range r.clusterErr {
			fmt.Fprintf(w, "  error: %s\n", e)
		}
		fmt.Fprintln(w)

	}
	if r.big != nil {
		fmt.Fprintf(w, "(3) -big: %s streamed through `shoal add --shard --rmin 1 --rmax 1 -` (%d peers)\n", bench.FormatSize(r.o.bigSize), r.o.peers)
		if r.big.err != nil {
			fmt.Fprintf(w, "  error: %v\n", r.big.err)
		} else {
			fmt.Fprintf(w, "  %.0f MB/s; peak RSS: client %.1f MiB, peers %s MiB\n", rate(r.big.res, r.o.bigSize),
				float64(r.big.res.MaxRSS)/bench.MiB, fmtList(r.big.peerRSS))
		}
		fmt.Fprintln(w)
	}

	if r.o.runs > 0 {
		fmt.Fprintln(w, "ratios (medians)")
		fmt.Fprintf(w, "  add rmin=rmax=1: %s boxo -> flatfs\n", ratio(&r.add1, &r.refAdd))
		fmt.Fprintf(w, "  add rmin=rmax=2: %s boxo -> flatfs\n", ratio(&r.add2, &r.refAdd))
		fmt.Fprintf(w, "  cat rmin=rmax=1: %s boxo UnixFS reader, %s the same cold, %s the disk's read rate\n",
			ratio(&r.cat1, &r.refCat), ratio(&r.cat1, &r.refCatCold), ratio(&r.cat1, &r.refDisk))
		fmt.Fprintf(w, "  cat rmin=rmax=2: %s boxo UnixFS reader, %s the same cold, %s the disk's read rate\n",
			ratio(&r.cat2, &r.refCat), ratio(&r.cat2, &r.refCatCold), ratio(&r.cat2, &r.refDisk))
		fmt.Fprintf(w, "  repair / cat of the same cluster, per run: %s\n", fmtPct(repairRatios))
		if len(r.kuboAdd.Runs) > 0 {
			fmt.Fprintf(w, "  against real Kubo (medians; per run in brackets, each run against Kubo's run next to it):\n")
			for _, c := range []struct {
				name string
				a, b *bench.Path
			}{
				{"add rmin=rmax=1 / ipfs add", &r.add1, &r.kuboAdd},
				{"add rmin=rmax=2 / ipfs add", &r.add2, &r.kuboAdd},
				{"cat, every shard local / ipfs cat", &r.cat3, &r.kuboCat},
				{"cat rmin=rmax=1 (2/3 remote) / ipfs cat", &r.cat1, &r.kuboCat},
				{"cat rmin=rmax=2 / ipfs cat", &r.cat2, &r.kuboCat},
				{"cat of a range / ipfs cat of it", &r.range1, &r.kuboRange},
			} {
				fmt.Fprintf(w, "    %-40s %s [%s]\n", c.name, ratio(c.a, c.b), fmtRatios(perRun(c.a, c.b)))
			}
		}
		fmt.Fprintln(w)

	}
	if len(r.profiles) > 0 || r.profileErr != nil {
		fmt.Fprintln(w, "where the CPU goes (an extra, untimed rmin=rmax=1 add and cat with SHOAL_CPUPROFILE; self time, by the function on top of the stack)")
		if r.profileErr != nil {
			fmt.Fprintf(w, "  error: %v\n", r.profileErr)
		}
		for _, p := range r.profiles {
			fmt.Fprintf(w, "  %s: %.2f s of CPU\n   ", p.title, p.total.Seconds())
			for _, k := range kinds {
				fmt.Fprintf(w, " %s %.0f%%", k, pct(p.kinds[k], p.total))
			}
			fmt.Fprintln(w)
			for i, f := range p.top {
				if i == 8 {
					break
				}
				fmt.Fprintf(w, "      %5.1f%%  %-18s %s\n", pct(f.t, p.total), f.kind, f.fn)
			}
		}
		fmt.Fprintln(w)
	}

	var checks []bench.Check
	if r.o.runs > 0 {
		checks = r.runChecks(repairRatios)
	}
	if r.big != nil {
		missing := r.big.err != nil
		maxPeer := 0.0
		for _, x := range r.big.peerRSS {
			maxPeer = max(maxPeer, x)
		}
		checks = append(checks,
			bench.Check{Name: "peak RSS of the client, " + bench.FormatSize(r.o.bigSize) + " stdin sharded add", Got: float64(r.big.res.MaxRSS) / bench.MiB,
				Want: 128, Unit: " MiB", AtMost: true, Missing: missing, Detail: "getrusage"},
			bench.Check{Name: "peak RSS of each peer, " + bench.FormatSize(r.o.bigSize) + " stdin sharded add", Got: maxPeer,
				Want: 256, Unit: " MiB", AtMost: true, Missing: missing, Detail: "largest VmHWM of the peers"})
	}
	fmt.Fprintln(w, "targets")
	for _, c := range checks {
		fmt.Fprintln(w, c)
	}
	fmt.Fprintln(w)
	if len(r.bad) > 0 {
		for _, b := range r.bad {
			fmt.Fprintf(w, "CID MISMATCH: %s\n", b)
		}
	} else if r.root != "" {
		fmt.Fprintf(w, "root CID %s, printed alike by every boxo and shoal add\n", r.root)
	}
	if len(r.bad) > 0 {
		fmt.Fprintln(os.Stderr, "shardbench: root CIDs differ (see the report)")
	}
}

func pct(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return 100 * a.Seconds() / b.Seconds()
}

// present leaves out the paths that were not measured (Kubo's with -ipfs
// none, r=3 with fewer than 3 peers).
func (r *runner) present(ps ...*bench.Path) []*bench.Path {
	var out []*bench.Path
	for _, p := range ps {
		if len(p.Runs) > 0 {
			out = append(out, p)
		}
	}
	return out
}

// perRun is a's rate over b's, run by run.
func perRun(a, b *bench.Path) []float64 {
	ra, rb := a.Rates(), b.Rates()
	var out []float64
	for i := range min(len(ra), len(rb)) {
		if rb[i] > 0 {
			out = append(out, ra[i]/rb[i])
		}
	}
	return out
}

func fmtRatios(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf("%.2fx", x))
	}
	return strings.Join(s, " ")
}

func ratio(a, b *bench.Path) string {
	if a.Rate() == 0 || b.Rate() == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a.Rate()/b.Rate())
}

func rateCheck(name string, got, ref *bench.Path, factor float64) bench.Check {
	c := bench.Check{Name: name, Want: factor, Unit: "x", Missing: len(got.Runs) == 0 || len(ref.Runs) == 0}
	if !c.Missing {
		c.Got = got.Rate() / ref.Rate()
	}
	c.Detail = fmt.Sprintf("%.0f vs %.0f MB/s, medians of %d and %d runs", got.Rate(), ref.Rate(), len(got.Runs), len(ref.Runs))
	return c
}

func fmtList(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(s, ", ")
}

// fmtCPU lists cats' CPU times: "5.10 s (CLI 0.49)".
func fmtCPU(cs []catCPU) string {
	if len(cs) == 0 {
		return "-"
	}
	var s []string
	for _, c := range cs {
		s = append(s, fmt.Sprintf("%.2f s (CLI %.2f)", (c.cli+c.daemons).Seconds(), c.cli.Seconds()))
	}
	return strings.Join(s, ", ")
}

func fmtPct(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf("%.0f%%", 100*x))
	}
	return strings.Join(s, ", ") + fmt.Sprintf(" (median %.0f%%)", 100*bench.Median(xs))
}

// runChecks are the targets of the timed runs.
func (r *runner) runChecks(repairRatios []float64) []bench.Check {
	var checks []bench.Check
	checks = append(checks,
		rateCheck("sharded add rmin=rmax=1 vs boxo -> flatfs", &r.add1, &r.refAdd, 1.0),
		rateCheck("sharded add rmin=rmax=2 vs boxo -> flatfs", &r.add2, &r.refAdd, 0.6))
	for _, c := range []*bench.Path{&r.cat1, &r.cat2} {
		checks = append(checks,
			bench.Check{Name: c.Name, Got: c.Rate(), Want: 500, Unit: " MB/s", Missing: len(c.Runs) == 0,
				Detail: fmt.Sprintf("median of %d runs", len(c.Runs))},
			rateCheck(c.Name+" vs boxo UnixFS reader", c, &r.refCat, 1.5))
	}
	if len(r.kuboAdd.Runs) > 0 {
		checks = append(checks,
			rateCheck("cat, every shard local, vs Kubo ipfs cat of its own repo", &r.cat3, &r.kuboCat, 1.5),
			rateCheck("cat rmin=rmax=1 (2/3 of the shards remote) vs Kubo ipfs cat", &r.cat1, &r.kuboCat, 1.0),
			rateCheck("sharded add rmin=rmax=1 vs Kubo ipfs add", &r.add1, &r.kuboAdd, 1.2))
	}
	checks = append(checks, rateCheck("cat rmin=rmax=2 vs cat rmin=rmax=1", &r.cat2, &r.cat1, 1.0))
	checks = append(checks, bench.Check{Name: "repair copy rate vs shoal cat of the same data", Got: 100 * bench.Median(repairRatios), Want: 50,
		Unit: "%", Missing: len(repairRatios) == 0, Detail: fmt.Sprintf("median of %d runs' ratios", len(repairRatios))})
	return checks
}
