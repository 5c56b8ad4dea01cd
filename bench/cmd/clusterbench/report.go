package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-project/shoal/bench"
)

// Targets (the cluster issue).
const (
	minPinRate      = 1000 // pin adds per second through consensus, 3 peers
	maxSnapRestoreS = 10   // snapshot + restore of 10^6 pins, seconds
	maxRSSMiB       = 1024 // peer RSS with 10^6 pins
	maxStatusMs     = 50   // status CID
	targetPins      = 1_000_000
)

func (r *runner) report(w io.Writer, rows []*row, st *stateResult, snap *snapResult, started time.Time, load0 string) {
	fmt.Fprintf(w, "command: go run ./bench/cmd/clusterbench %s\n", strings.Join(r.args, " "))
	fmt.Fprintf(w, "date:    %s (%.0fs)\n", started.Format("2006-01-02 15:04 MST"), time.Since(started).Seconds())
	fmt.Fprintf(w, "host:    %s; load average %s at start, %s at end\n", bench.Machine(), load0, bench.LoadAvg())
	switch rev := bench.GitRev(); {
	case len(r.o.shoal) > 0:
		var vs []string
		for _, v := range r.o.shoal {
			vs = append(vs, v.name+" = "+v.path)
		}
		fmt.Fprintf(w, "shoal:   %s, given with -shoal (runner from tree %s)\n", strings.Join(vs, "; "), rev)
	case rev != "":
		fmt.Fprintf(w, "shoal:   built from ./cmd/shoal of tree %s\n", rev)
	}
	cons := bench.DescribeConsensus(r.o.consensus)
	fmt.Fprintf(w, "cluster: %d `shoal daemon` processes on loopback, %s; clients use the Go API client\n", peers, cons)
	fmt.Fprintf(w, "units:   pins/s = successful POST /pins per second of wall time; latency per request as the client sees it;\n")
	fmt.Fprintf(w, "         CPU ms/pin = CPU time of the 3 daemons (or of the clients) over the timed run, per pin\n\n")

	fmt.Fprintf(w, "(a) pin adds through consensus: %d pins per run after %d untimed per client, clients spread over the %d peers' APIs,\n", r.o.pins, warmup, peers)
	fmt.Fprintf(w, "    each run on a fresh cluster, CIDs of content nobody holds; medians over runs (of each run's p50/p99)\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	multi := len(r.shoal) > 1
	if multi {
		fmt.Fprint(tw, "shoal\t")
	}
	fmt.Fprintln(tw, "mode\tclients\tpins/s\tmin\tmax\tp50 ms\tp99 ms\tmax ms\terrors\tdaemons CPU ms/pin\tclients CPU ms/pin\tothers %\truns\t")
	for _, rw := range rows {
		if multi {
			fmt.Fprintf(tw, "%s\t", rw.shoal.name)
		}
		if len(rw.runs) == 0 {
			fmt.Fprintf(tw, "%s\t%d\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t0\t  %v\n", rw.mode.name, rw.clients, rw.err)
			continue
		}
		rate := bench.Summarize(rw.rates())
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%.0f\t%d\t%.2f\t%.2f\t%s\t%d\t\n", rw.mode.name, rw.clients,
			rate.Median, rate.Min, rate.Max, rw.median(func(p pinRun) float64 { return ms(bench.Percentile(p.lat, 50)) }),
			rw.median(func(p pinRun) float64 { return ms(bench.Percentile(p.lat, 99)) }),
			rw.median(func(p pinRun) float64 { return ms(bench.Percentile(p.lat, 100)) }), rw.errs(),
			rw.median(func(p pinRun) float64 { return msPer(p.daemonCPU(), p.ok) }),
			rw.median(func(p pinRun) float64 { return msPer(p.self, p.ok) }), rw.others(), len(rw.runs))
	}
	tw.Flush()

	if st != nil {
		fmt.Fprintf(w, "\n(b) a large pinset, built through the API (rmin=rmax=-1 pins of content nobody holds, %d clients)\n", r.o.stateClients)
		if st.err != nil {
			fmt.Fprintf(w, "  failed: %v\n", st.err)
		}
		fmt.Fprintf(w, "  built:          %d of %d pins in %s (pins/s per stretch of %d: %s)\n", st.pins, st.want,
			st.build.Round(time.Second), stretch, strings.Join(st.rates, " "))
		if len(st.usage) > 0 {
			var cores []string
			for _, d := range st.idle.daemons {
				cores = append(cores, fmt.Sprintf("%.2f", d.Seconds()/st.idle.wall.Seconds()))
			}
			fmt.Fprintf(w, "  idle CPU:       %s cores per daemon over %s with no client (the reconcilers at work)\n",
				strings.Join(cores, ", "), idleFor)
			fmt.Fprintf(w, "  RSS:            %s\n", rssList(st.usage))
		}
		if len(st.status) > 0 || st.statusErr != nil {
			fmt.Fprintf(w, "  status CID:     p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d requests, one at a time, round robin over the peers (%d errors%s)\n",
				ms(bench.Percentile(st.status, 50)), ms(bench.Percentile(st.status, 99)), ms(bench.Percentile(st.status, 100)),
				len(st.status), st.statusErrs, errSuffix(st.statusErr))
		}
		stop := fmt.Sprintf("SIGTERM, exited after %s", st.stopTook.Round(time.Millisecond))
		if st.stopErr != nil {
			stop = fmt.Sprintf("SIGTERM, NOT exited after %s: killed", st.stopTook.Round(time.Millisecond))
		}
		switch {
		case st.restartErr != nil:
			fmt.Fprintf(w, "  restart:        a follower: %s; restart failed: %v\n", stop, st.restartErr)
		case st.restartServing > 0:
			fmt.Fprintf(w, "  restart:        a follower: %s; started again: API up after %s, serving the last pin after %s, RSS %s\n",
				stop, st.restartAPI.Round(time.Millisecond), st.restartServing.Round(time.Millisecond), rssList([]bench.Usage{st.restartUsage}))
		}
	}
	if snap != nil {
		fmt.Fprintf(w, "\n(c) go test ./consensus -run '^$' -bench SnapshotRestore1M -benchtime 1x (in-process, 10^6 pins)\n")
		if snap.err != nil {
			fmt.Fprintf(w, "  failed: %v\n", snap.err)
		} else {
			fmt.Fprintf(w, "  %s\n", snap.line)
		}
	}

	fmt.Fprintln(w, "\ntargets")
	var checks []bench.Check
	for _, rw := range rows {
		c := bench.Check{Name: fmt.Sprintf("pin adds, %s, %d clients", rw.mode.name, rw.clients), Unit: "/s", Want: minPinRate}
		if multi {
			c.Name = rw.shoal.name + ", " + c.Name
		}
		if len(rw.runs) == 0 {
			c.Missing, c.Detail = true, "no runs"
		} else {
			c.Got = bench.Summarize(rw.rates()).Median
			c.Detail = fmt.Sprintf("median of %d runs; p50 %.1f ms, p99 %.1f ms", len(rw.runs),
				rw.median(func(p pinRun) float64 { return ms(bench.Percentile(p.lat, 50)) }),
				rw.median(func(p pinRun) float64 { return ms(bench.Percentile(p.lat, 99)) }))
		}
		checks = append(checks, c)
	}
	if snap != nil {
		c := bench.Check{Name: "snapshot + restore of 10^6 pins", Unit: " s", AtMost: true, Want: maxSnapRestoreS}
		c2 := bench.Check{Name: "peak RSS holding 10^6 pins twice (state + restored copy)", Unit: " MiB", AtMost: true, Want: maxRSSMiB}
		if snap.err != nil {
			c.Missing, c.Detail, c2.Missing, c2.Detail = true, "benchmark failed", true, "benchmark failed"
		} else {
			c.Got = snap.persist + snap.restore
			c.Detail = fmt.Sprintf("persist %.2f s + restore %.2f s, consensus benchmark", snap.persist, snap.restore)
			c2.Got, c2.Detail = snap.rssMiB, "consensus benchmark, one process"
		}
		checks = append(checks, c, c2)
	}
	if st != nil {
		note := ""
		if st.pins < targetPins {
			note = fmt.Sprintf("; measured at %d pins, not %d", st.pins, targetPins)
		}
		c := bench.Check{Name: fmt.Sprintf("peak RSS of a daemon with %d pins", st.pins), Unit: " MiB", AtMost: true, Want: maxRSSMiB}
		if len(st.usage) == 0 {
			c.Missing, c.Detail = true, "not measured"
		} else {
			var peak float64
			for _, u := range st.usage {
				peak = max(peak, float64(u.MaxRSS)/bench.MiB)
			}
			c.Got, c.Detail = peak, "VmHWM, largest of the 3 daemons"+note
		}
		c2 := bench.Check{Name: fmt.Sprintf("status CID p99 with %d pins", st.pins), Unit: " ms", AtMost: true, Want: maxStatusMs}
		if len(st.status) == 0 {
			c2.Missing, c2.Detail = true, "not measured"
		} else {
			c2.Got = ms(bench.Percentile(st.status, 99))
			c2.Detail = fmt.Sprintf("p50 %.1f ms, %d requests%s", ms(bench.Percentile(st.status, 50)), len(st.status), note)
		}
		checks = append(checks, c, c2)
	}
	for _, c := range checks {
		fmt.Fprintln(w, c)
	}
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return "; first: " + err.Error()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (rw *row) rates() []float64 {
	var xs []float64
	for _, p := range rw.runs {
		xs = append(xs, p.rate())
	}
	return xs
}

func (rw *row) median(f func(pinRun) float64) float64 {
	var xs []float64
	for _, p := range rw.runs {
		xs = append(xs, f(p))
	}
	return bench.Median(xs)
}

func (rw *row) errs() int {
	n := 0
	for _, p := range rw.runs {
		n += p.errs
	}
	return n
}

// others is the largest share of the machine that other processes took
// during a run, in percent.
func (rw *row) others() string {
	best := -1.0
	for _, p := range rw.runs {
		if p.others < 0 || p.phase.wall <= 0 {
			continue
		}
		best = max(best, 100*p.others.Seconds()/(p.phase.wall.Seconds()*float64(runtime.NumCPU())))
	}
	if best < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", best)
}
