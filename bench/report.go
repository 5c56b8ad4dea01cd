package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// MB is the unit of every rate printed: 10^6 bytes, as disk and network
// rates are quoted (PERF.md too).
const MB = 1e6

// MiB is the unit of every memory figure.
const MiB = 1 << 20

// Path accumulates the runs of one measured path.
type Path struct {
	Name  string
	Bytes int64 // bytes processed per run
	// Runs holds each run's result; Sync each run's untimed-by-the-child
	// sync that followed it (stores only: how much was still not durable).
	Runs []Result
	Sync []time.Duration
	// Err, if set, says why the path has no runs.
	Err error
	// Redone counts runs discarded because other processes took more than
	// the allowed share of the machine; Noisy counts runs kept although
	// they did, once the retries were spent.
	Redone, Noisy int
}

// Rates returns MB/s of each run.
func (p *Path) Rates() []float64 {
	var xs []float64
	for _, r := range p.Runs {
		xs = append(xs, float64(p.Bytes)/MB/r.Wall.Seconds())
	}
	return xs
}

// DurableRates returns MB/s of each run counting the sync after it.
func (p *Path) DurableRates() []float64 {
	var xs []float64
	for i, r := range p.Runs {
		if i < len(p.Sync) {
			xs = append(xs, float64(p.Bytes)/MB/(r.Wall+p.Sync[i]).Seconds())
		}
	}
	return xs
}

// RSS returns each run's peak RSS in MiB.
func (p *Path) RSS() []float64 {
	var xs []float64
	for _, r := range p.Runs {
		xs = append(xs, float64(r.MaxRSS)/MiB)
	}
	return xs
}

// OthersShares returns, per run, the share of the machine that other
// processes used during it, in percent.
func (p *Path) OthersShares() []float64 {
	var xs []float64
	for _, r := range p.Runs {
		if s := r.OthersShare(); s >= 0 {
			xs = append(xs, 100*s)
		}
	}
	return xs
}

// Rate is the median MB/s, 0 without runs.
func (p *Path) Rate() float64 { return Median(p.Rates()) }

// WriteTable prints one line per path: median MB/s with min and max, the
// median MB/s with the following sync counted for stores, peak RSS, the
// largest share of the machine other processes took during a kept run, and
// how many runs were redone because of them.
func WriteTable(w io.Writer, title string, paths []*Path) {
	fmt.Fprintf(w, "%s\n", title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tmedian MB/s\tmin\tmax\t+sync MB/s\tRSS MiB med\tmax\truns\tothers %\tredone\t")
	for _, p := range paths {
		if p.Err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t0\t-\t-\t  %s\n", p.Name, oneLine(p.Err.Error()))
			continue
		}
		r, m := Summarize(p.Rates()), Summarize(p.RSS())
		dur := "-"
		if d := p.DurableRates(); len(d) > 0 {
			dur = fmt.Sprintf("%.0f", Median(d))
		}
		others := "-"
		if o := p.OthersShares(); len(o) > 0 {
			others = fmt.Sprintf("%.0f", Summarize(o).Max)
		}
		noisy := ""
		if p.Noisy > 0 {
			noisy = fmt.Sprintf("  %d run(s) kept despite load", p.Noisy)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%s\t%.0f\t%.0f\t%d\t%s\t%d\t%s\n",
			p.Name, r.Median, r.Min, r.Max, dur, m.Median, m.Max, r.N, others, p.Redone, noisy)
	}
	tw.Flush()
}

// Check is one target: Got compared with Want.
type Check struct {
	Name      string
	Got, Want float64
	Unit      string // printed after both figures
	AtMost    bool   // Got must not exceed Want (memory); otherwise reach it
	Detail    string // how Want was derived
	Missing   bool   // an input path had no runs
}

// Pass says whether the target is met.
func (c Check) Pass() bool {
	if c.Missing {
		return false
	}
	if c.AtMost {
		return c.Got <= c.Want
	}
	return c.Got >= c.Want
}

func (c Check) String() string {
	if c.Missing {
		return fmt.Sprintf("N/A   %s: not measured (%s)", c.Name, c.Detail)
	}
	verdict, op := "MISS", ">="
	if c.Pass() {
		verdict = "PASS"
	}
	if c.AtMost {
		op = "<="
	}
	return fmt.Sprintf("%s  %s: %s%s (target %s %s%s; %s)", verdict, c.Name, fmtNum(c.Got, c.Unit), c.Unit, op, fmtNum(c.Want, c.Unit), c.Unit, c.Detail)
}

func fmtNum(x float64, unit string) string {
	if x >= 100 || unit == "%" {
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.2f", x)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}
