package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
	"github.com/shoal-project/shoal/bench"
)

// newClient is an API client of addr reading in mode whose pool keeps
// conns idle connections: the default keeps 2, and concurrent readers
// would measure TCP handshakes.
func newClient(addr string, conns int, mode string) (*client.Client, error) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute}}
	return client.New(addr, client.WithHTTPClient(hc), client.WithConsistency(mode))
}

// addFiles adds n small distinct files, round robin over the peers from
// 4 goroutines, and returns their CIDs.
func addFiles(ctx context.Context, c *bench.Cluster, n int) ([]string, error) {
	cids := make([]string, n)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range n {
		d := c.Peers[i%len(c.Peers)]
		g.Go(func() error {
			res, err := d.Client.Add(ctx, bytes.NewReader(fmt.Appendf(nil, "readbench file %d\n", i)), "", api.AddParams{})
			if err != nil {
				return fmt.Errorf("add file %d on %s: %w", i, d.Name, err)
			}
			cids[i] = res.CID
			return nil
		})
	}
	return cids, g.Wait()
}

// readRun is one timed run of reads.
type readRun struct {
	target   string // the peer read
	wall     time.Duration
	lat      []time.Duration // of the successful reads, sorted
	errs     int             // failed reads, warm-up included
	firstErr error
	usage    phase
	writes   writeLoad
}

func (r readRun) rate() float64 { return float64(len(r.lat)) / r.wall.Seconds() }

// cpuPerRead is the daemons' CPU time per successful read, in ns.
func (r readRun) cpuPerRead() float64 { return float64(r.usage.daemons) / float64(max(len(r.lat), 1)) }

// warmup is the untimed reads of each reader before a run: they open its
// connection.
const warmup = 3

// readFor runs conc readers of cl for d, each sending Status requests of
// random cids (seeded by seed and its number) one after another.
func readFor(ctx context.Context, cl *client.Client, cids []string, conc int, d time.Duration, seed uint64) readRun {
	lats := make([][]time.Duration, conc)
	errs := make([]int, conc)
	var first error
	var once sync.Once
	var ready, wg sync.WaitGroup
	ready.Add(conc)
	start := make(chan struct{})
	var end time.Time // set before start is closed
	for g := range conc {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			read := func() (time.Duration, bool) {
				id := cids[rng.IntN(len(cids))]
				t0 := time.Now()
				if _, err := cl.Status(ctx, id, false); err != nil {
					errs[g]++
					once.Do(func() { first = fmt.Errorf("status %s: %w", id, err) })
					return 0, false
				}
				return time.Since(t0), true
			}
			for range warmup {
				read()
			}
			ready.Done()
			<-start
			for ctx.Err() == nil && time.Now().Before(end) {
				if l, ok := read(); ok {
					lats[g] = append(lats[g], l)
				}
			}
		})
	}
	ready.Wait()
	t0 := time.Now()
	end = t0.Add(d)
	close(start)
	wg.Wait()
	r := readRun{wall: time.Since(t0), firstErr: first}
	for g := range conc {
		r.lat = append(r.lat, lats[g]...)
		r.errs += errs[g]
	}
	slices.Sort(r.lat)
	return r
}

// writeLoad is what the adds beside a run did.
type writeLoad struct {
	ok, errs int
	wall     time.Duration
	first    error
}

// startWrites adds small files through cl, one after another, until the
// returned function is called; it returns what they did. Their content is
// distinct for every seed.
func startWrites(ctx context.Context, cl *client.Client, seed uint64) (stop func() writeLoad) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan writeLoad, 1)
	go func() {
		w, t0 := writeLoad{}, time.Now()
		for i := 0; ctx.Err() == nil; i++ {
			_, err := cl.Add(ctx, bytes.NewReader(fmt.Appendf(nil, "readbench write %d %d\n", seed, i)), "", api.AddParams{})
			switch {
			case ctx.Err() != nil: // stopped: the add in flight does not count
			case err != nil:
				w.errs++
				if w.first == nil {
					w.first = err
				}
			default:
				w.ok++
			}
		}
		w.wall = time.Since(t0)
		done <- w
	}()
	return func() writeLoad { cancel(); return <-done }
}

// usage is the CPU time of the daemons, of this process and of the
// machine at one moment.
type usage struct {
	daemons, self, busy time.Duration // busy -1: unknown
	at                  time.Time
}

func sampleUsage(c *bench.Cluster) usage {
	u := usage{self: bench.SelfCPU(), busy: -1, at: time.Now()}
	for _, d := range c.Peers {
		pu, _ := d.Usage()
		u.daemons += pu.CPU
	}
	if b, err := bench.MachineBusy(); err == nil {
		u.busy = b
	}
	return u
}

// phase is the CPU use between two samples; others is the machine's not
// spent by the daemons or readbench, -1 unknown.
type phase struct{ wall, daemons, self, others time.Duration }

func between(a, b usage) phase {
	p := phase{wall: b.at.Sub(a.at), daemons: b.daemons - a.daemons, self: b.self - a.self, others: -1}
	if a.busy >= 0 && b.busy >= 0 {
		p.others = max(0, b.busy-a.busy-p.daemons-p.self)
	}
	return p
}

// summary is one mode of a cell over its runs: medians of each run's
// figures, errors summed, the largest share of the machine others took.
type summary struct {
	p50, p99  time.Duration
	rate      float64       // reads/s
	cpu       time.Duration // the daemons' CPU per successful read
	adds      float64       // adds/s of the write load
	others    float64       // percent; -1 unknown
	errs      int
	firstErr  error
	addErrs   int
	firstAdds error
	runs      int
}

func summarize(runs []readRun) summary {
	s := summary{others: -1, runs: len(runs)}
	med := func(f func(readRun) float64) float64 {
		var xs []float64
		for _, r := range runs {
			xs = append(xs, f(r))
		}
		return bench.Median(xs)
	}
	s.p50 = time.Duration(med(func(r readRun) float64 { return float64(bench.Percentile(r.lat, 50)) }))
	s.p99 = time.Duration(med(func(r readRun) float64 { return float64(bench.Percentile(r.lat, 99)) }))
	s.rate = med(readRun.rate)
	s.cpu = time.Duration(med(readRun.cpuPerRead))
	s.adds = med(func(r readRun) float64 {
		if r.writes.wall <= 0 {
			return 0
		}
		return float64(r.writes.ok) / r.writes.wall.Seconds()
	})
	for _, r := range runs {
		s.errs += r.errs
		s.addErrs += r.writes.errs
		s.firstErr = cmpOr(s.firstErr, r.firstErr)
		s.firstAdds = cmpOr(s.firstAdds, r.writes.first)
		if r.usage.others >= 0 && r.usage.wall > 0 {
			s.others = max(s.others, 100*r.usage.others.Seconds()/(r.usage.wall.Seconds()*float64(runtime.NumCPU())))
		}
	}
	return s
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (r *runner) report(w io.Writer, cells []*cell, started time.Time, load0 string) {
	fmt.Fprintf(w, "command: go run ./bench/cmd/readbench %s\n", strings.Join(r.args, " "))
	fmt.Fprintf(w, "date:    %s (%.0fs)\n", started.Format("2006-01-02 15:04 MST"), time.Since(started).Seconds())
	fmt.Fprintf(w, "host:    %s; load average %s at start, %s at end\n", bench.Machine(), load0, bench.LoadAvg())
	switch rev := bench.GitRev(); {
	case r.o.shoal != "":
		fmt.Fprintf(w, "shoal:   %s, given with -shoal (runner from tree %s)\n", r.o.shoal, rev)
	case rev != "":
		fmt.Fprintf(w, "shoal:   built from ./cmd/shoal of tree %s\n", rev)
	}
	cons := bench.DescribeConsensus(r.o.consensus)
	fmt.Fprintf(w, "cluster: %d `shoal daemon` processes on loopback, %s; %d small files added (default replication);\n", peers, cons, len(r.cids))
	if len(r.leaders) == 1 {
		fmt.Fprintf(w, "         leader %s throughout\n", r.leaders[0])
	} else {
		fmt.Fprintf(w, "         the leadership moved during the runs: %s\n", strings.Join(r.leaders, ", then "))
	}
	fmt.Fprintf(w, "units:   reads/s = successful GET /status/CID (cluster view) per second of wall time, from CLIENTS goroutines\n")
	fmt.Fprintf(w, "         reading random pins of one peer; latency per read as the Go API client sees it; CPU us/read = the\n")
	fmt.Fprintf(w, "         3 daemons' CPU time over the run per read (with writes: theirs included); adds/s = the write load\n\n")

	fmt.Fprintf(w, "status reads, %d runs of %s per row, modes interleaved; medians over runs (of each run's p50/p99)\n", r.o.runs, r.o.duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\twrites\tclients\tmode\treads/s\tp50 ms\tp99 ms\tCPU us/read\tadds/s\terrors\tothers %\truns\t")
	var notes []string
	for _, cl := range cells {
		for m, mode := range modes {
			s := summarize(cl.runs[m])
			adds, others := "-", "-"
			if cl.writes {
				adds = fmt.Sprintf("%.0f", s.adds)
			}
			if s.others >= 0 {
				others = fmt.Sprintf("%.0f", s.others)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.0f\t%.2f\t%.2f\t%.0f\t%s\t%d\t%s\t%d\t\n", cl.role, writesName(cl.writes), cl.clients, mode,
				s.rate, ms(s.p50), ms(s.p99), float64(s.cpu.Nanoseconds())/1e3, adds, s.errs, others, s.runs)
			what := fmt.Sprintf("%s, %s, %d clients, %s", cl.role, writesName(cl.writes), cl.clients, mode)
			if s.errs > 0 {
				notes = append(notes, fmt.Sprintf("%s: %d failed reads; first: %v", what, s.errs, s.firstErr))
			}
			if s.addErrs > 0 {
				notes = append(notes, fmt.Sprintf("%s: %d failed adds of the write load; first: %v", what, s.addErrs, s.firstAdds))
			}
		}
	}
	tw.Flush()
	for _, n := range notes {
		fmt.Fprintf(w, "  %s\n", n)
	}

	// Each ratio pairs the two modes of one run, measured back to back,
	// so that the load of the moment weighs on both: the median pair and
	// the range of the pairs.
	fmt.Fprintf(w, "\nconsistent over stale: median over runs of each run's pair (the two modes back to back), with the range\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\twrites\tclients\tp50 extra\trange\tp99 extra\treads/s consistent/stale\trange\tCPU/read consistent/stale\t")
	for _, cl := range cells {
		p50 := paired(cl, func(c, s readRun) float64 { return float64(bench.Percentile(c.lat, 50) - bench.Percentile(s.lat, 50)) })
		p99 := paired(cl, func(c, s readRun) float64 { return float64(bench.Percentile(c.lat, 99) - bench.Percentile(s.lat, 99)) })
		rate := paired(cl, func(c, s readRun) float64 { return c.rate() / s.rate() })
		cpu := paired(cl, func(c, s readRun) float64 { return c.cpuPerRead() / s.cpuPerRead() })
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s..%s\t%s\t%.2fx\t%.2f-%.2f\t%.2fx\t\n", cl.role, writesName(cl.writes), cl.clients,
			extra(time.Duration(p50.Median)), extra(time.Duration(p50.Min)), extra(time.Duration(p50.Max)),
			extra(time.Duration(p99.Median)), rate.Median, rate.Min, rate.Max, cpu.Median)
	}
	tw.Flush()
}

// paired summarizes f over the runs of cl, each of a consistent run and
// the stale run of the same round.
func paired(cl *cell, f func(c, s readRun) float64) bench.Summary {
	var xs []float64
	for i := range min(len(cl.runs[0]), len(cl.runs[1])) {
		xs = append(xs, f(cl.runs[0][i], cl.runs[1][i]))
	}
	return bench.Summarize(xs)
}

func writesName(w bool) string {
	if w {
		return "adds"
	}
	return "none"
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// extra is a latency difference in the unit that keeps 3 digits.
func extra(d time.Duration) string {
	if d > -time.Millisecond && d < time.Millisecond {
		return fmt.Sprintf("%+d us", d.Microseconds())
	}
	return fmt.Sprintf("%+.2f ms", ms(d))
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return "; first: " + err.Error()
}
