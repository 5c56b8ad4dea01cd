package main

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/shoal-project/shoal/bench"
)

// Targets (the benchmark issue).
const (
	hashVsBoxo  = 3.0  // shoal add -n >= 3x boxo hashing only
	hashVsSHA   = 0.60 // shoal add -n >= 60% of all-cores SHA-256
	storeVsBoxo = 2.5  // shoal add >= min(2.5x boxo into flatfs,
	storeVsDisk = 0.85 //                  85% of the O_DIRECT write rate)
	maxRSSMiB   = 128  // peak RSS of shoal add
)

func (r *runner) report(w io.Writer, steps, big []step, started time.Time, load0 string) {
	by := map[string]*bench.Path{}
	for _, s := range append(steps, big...) {
		by[s.p.Name] = s.p
	}
	get := func(name string) *bench.Path {
		if p, ok := by[name]; ok {
			return p
		}
		return &bench.Path{Name: name, Err: fmt.Errorf("no such path")}
	}
	shaN := fmt.Sprintf("SHA-256, %d cores", r.o.workers)

	fmt.Fprintf(w, "command: go run ./bench/cmd/ingestbench %s\n", strings.Join(r.args, " "))
	fmt.Fprintf(w, "date:    %s (%.0fs)\n", started.Format("2006-01-02 15:04 MST"), time.Since(started).Seconds())
	fmt.Fprintf(w, "host:    %s; load average %s at start, %s at end\n", bench.Machine(), load0, bench.LoadAvg())
	switch rev := gitRev(); {
	case r.o.shoal != "":
		fmt.Fprintf(w, "shoal:   %s, given with -shoal (runner from tree %s)\n", r.o.shoal, rev)
	case rev != "":
		fmt.Fprintf(w, "shoal:   built from ./cmd/shoal of tree %s\n", rev)
	}
	fmt.Fprintf(w, "data:    %s of seeded ChaCha8 bytes (%s), read back into the page cache before every run\n",
		bench.FormatSize(r.o.size), r.data)
	fmt.Fprintf(w, "stdin:   fed by the runner in %d KiB writes through a pipe of the default size (as cat does)\n", bench.FeedSize>>10)
	fmt.Fprintf(w, "units:   MB = 10^6 bytes; each row: %d runs, each its own process; +sync counts the sync(2) right after a store run\n\n", r.o.runs)

	bench.WriteTable(w, "(a) machine limits", []*bench.Path{get("SHA-256, 1 core"), get(shaN), get("O_DIRECT write 4 MiB + fdatasync")})
	fmt.Fprintln(w)
	bench.WriteTable(w, "(b)(c) shoal add", []*bench.Path{get("shoal add -n (file)"), get("shoal add -n (stdin)"),
		get("shoal add --repo (file)"), get("shoal add --repo (stdin)")})
	fmt.Fprintln(w)
	bench.WriteTable(w, "(d) reference: boxo importer, Kubo's ipfs add defaults", []*bench.Path{get("boxo hash-only (file)"),
		get("boxo hash-only (stdin)"), get("boxo -> flatfs (file)"), get("boxo -> flatfs (stdin)")})
	if len(big) > 0 {
		fmt.Fprintln(w)
		var ps []*bench.Path
		for _, s := range big {
			ps = append(ps, s.p)
		}
		bench.WriteTable(w, "-big: one run each, the data file streamed over and over", ps)
	}

	fmt.Fprintln(w, "\nratios (medians)")
	sha1, shaAll := get("SHA-256, 1 core"), get(shaN)
	for _, src := range []string{"file", "stdin"} {
		for _, pair := range [][2]string{
			{"shoal add -n", "boxo hash-only"},
			{"shoal add --repo", "boxo -> flatfs"},
		} {
			s, b := get(pair[0]+" ("+src+")"), get(pair[1]+" ("+src+")")
			fmt.Fprintf(w, "  %-26s %s SHA-256 1 core, %s %s, %s %s\n", s.Name+":",
				ratio(s, sha1, "x"), ratio(s, shaAll, "%"), "of "+shaN, ratio(s, b, "x"), b.Name)
		}
	}
	for _, src := range []string{"file", "stdin"} {
		b := get("boxo hash-only (" + src + ")")
		fmt.Fprintf(w, "  %-26s %s SHA-256 1 core\n", b.Name+":", ratio(b, sha1, "x"))
	}

	fmt.Fprintln(w, "\ntargets")
	disk := get("O_DIRECT write 4 MiB + fdatasync")
	var checks []bench.Check
	for _, src := range []string{"file", "stdin"} {
		hash, bh := get("shoal add -n ("+src+")"), get("boxo hash-only ("+src+")")
		checks = append(checks,
			rateCheck(fmt.Sprintf("only-hash (%s) vs boxo hashing-only", src), hash, bh, hashVsBoxo,
				fmt.Sprintf("%.1fx %s", hashVsBoxo, bh.Name)),
			rateCheck(fmt.Sprintf("only-hash (%s) vs all-cores SHA-256", src), hash, shaAll, hashVsSHA,
				fmt.Sprintf("%.0f%% of %s", hashVsSHA*100, shaN)))
	}
	for _, src := range []string{"file", "stdin"} {
		add, bf := get("shoal add --repo ("+src+")"), get("boxo -> flatfs ("+src+")")
		c := bench.Check{Name: fmt.Sprintf("add into store (%s)", src), Unit: " MB/s"}
		if add.Err != nil || bf.Err != nil || disk.Err != nil {
			c.Missing, c.Detail = true, "a path failed"
		} else {
			c.Got = add.Rate()
			vb, vd := storeVsBoxo*bf.Rate(), storeVsDisk*disk.Rate()
			c.Want = min(vb, vd)
			c.Detail = fmt.Sprintf("min(%.1fx %s = %.0f, %.0f%% of O_DIRECT %.0f = %.0f)",
				storeVsBoxo, bf.Name, vb, storeVsDisk*100, disk.Rate(), vd)
		}
		checks = append(checks, c)
	}
	rssPaths := []*bench.Path{get("shoal add -n (file)"), get("shoal add -n (stdin)"),
		get("shoal add --repo (file)"), get("shoal add --repo (stdin)")}
	for _, s := range big {
		rssPaths = append(rssPaths, s.p)
	}
	for _, p := range rssPaths {
		c := bench.Check{Name: "peak RSS, " + p.Name, Unit: " MiB", AtMost: true, Want: maxRSSMiB,
			Detail: fmt.Sprintf("max of %d runs of %s", len(p.Runs), bench.FormatSize(p.Bytes))}
		if p.Err != nil {
			c.Missing, c.Detail = true, "no runs"
		} else {
			c.Got = bench.Summarize(p.RSS()).Max
		}
		checks = append(checks, c)
	}
	for _, c := range checks {
		fmt.Fprintln(w, c)
	}

	fmt.Fprintln(w)
	switch {
	case len(r.bad) > 0:
		fmt.Fprintf(w, "root CID MISMATCH: %s\n", strings.Join(r.bad, "; "))
	case r.cid != "":
		fmt.Fprintf(w, "root CID %s, printed alike by every boxo and shoal run\n", r.cid)
	}
	for _, p := range append(steps, big...) {
		if p.p.Err != nil {
			fmt.Fprintf(w, "failed: %s: %v\n", p.p.Name, p.p.Err)
		}
	}
}

// ratio prints a/b's median rates as a factor ("x") or a percentage ("%").
func ratio(a, b *bench.Path, unit string) string {
	if a.Err != nil || b.Err != nil || b.Rate() == 0 {
		return "n/a"
	}
	q := a.Rate() / b.Rate()
	if unit == "%" {
		return fmt.Sprintf("%.0f%%", 100*q)
	}
	return fmt.Sprintf("%.2fx", q)
}

// rateCheck checks got >= factor x ref (median rates), as a ratio.
func rateCheck(name string, got, ref *bench.Path, factor float64, detail string) bench.Check {
	c := bench.Check{Name: name, Want: factor, Unit: "x", Detail: detail}
	if got.Err != nil || ref.Err != nil || ref.Rate() == 0 {
		c.Missing, c.Detail = true, "a path failed"
		return c
	}
	c.Got = got.Rate() / ref.Rate()
	if factor < 1 {
		c.Got, c.Want, c.Unit = 100*c.Got, 100*factor, "%"
	}
	return c
}

// gitRev names the tree the shoal binary was built from.
func gitRev() string {
	b, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	rev := strings.TrimSpace(string(b))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		rev += " with uncommitted changes"
	}
	return rev
}
