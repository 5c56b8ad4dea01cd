package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-project/shoal/bench"
)

// step is one measured path and how to start one run of it.
type step struct {
	p     *bench.Path
	stdin func() (io.Reader, func(), error) // nil: no stdin
	// cmd returns the process to run; scratch is a fresh path under the
	// invocation's scratch directory the run may create (a store, a file).
	cmd func(scratch string) bench.Cmd
	// prepare, when set, readies scratch before the timed run (untimed).
	prepare  func(ctx context.Context, scratch string) error
	store    bool // writes into scratch: sync after it is timed
	keep     bool // keep what it wrote until the end, when there is room
	printsID bool // prints the root CID on stdout
}

type runner struct {
	o       options
	args    []string
	log     io.Writer
	self    string
	shoal   string // "" when it could not be built
	data    string
	scratch string
	keep    bool // keep each run's store until the end (see run)
	noShoal error
	seq     int
	cid     string // the root CID every path must print
	cidFrom string
	bad     []string // CID mismatches
}

func newRunner(o options, args []string) *runner {
	return &runner{o: o, args: args, log: os.Stderr}
}

func (r *runner) logf(format string, a ...any) { fmt.Fprintf(r.log, format+"\n", a...) }

func (r *runner) run(ctx context.Context) error {
	started := time.Now()
	load0 := bench.LoadAvg()
	var err error
	if r.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	if err := os.MkdirAll(r.o.dir, 0o755); err != nil {
		return err
	}
	r.logf("data file: %s seeded bytes in %s", bench.FormatSize(r.o.size), r.o.dir)
	var created bool
	if r.data, created, err = bench.DataFile(r.o.dir, r.o.size); err != nil {
		return err
	}
	if created {
		r.logf("  written %s", r.data)
	} else {
		r.logf("  reusing %s", r.data)
	}
	if r.scratch, err = os.MkdirTemp(r.o.dir, "run-"); err != nil {
		return err
	}
	defer func() {
		r.logf("removing %s", r.scratch)
		os.RemoveAll(r.scratch)
	}()

	// Keeping every store until the end spares the reference the ext4
	// slowdown PERF.md measured: creating thousands of files within a
	// minute of deleting thousands runs ~2x slower, which would hit the
	// one-file-per-block flatfs in every run after the first. Without the
	// room for that, each store goes right after its run.
	need := int64(r.o.runs)*4*r.o.size*11/10 + r.o.size
	avail := freeBytes(r.o.dir)
	r.keep = avail > need+8<<30
	if !r.keep {
		r.logf("  %s free, under the %s needed to keep every store: removing each after its run (flatfs runs after the first may be slower)",
			bench.FormatSize(avail&^(1<<20-1)), bench.FormatSize(need&^(1<<20-1)))
	}

	if r.o.shoal != "" {
		r.shoal = r.o.shoal
	} else {
		r.shoal = filepath.Join(r.scratch, "shoal")
		r.logf("building ./cmd/shoal")
		if err := buildShoal(ctx, r.shoal); err != nil {
			r.logf("  %v\n  shoal's paths are skipped", err)
			r.shoal, r.noShoal = "", err
		}
	}

	steps := r.steps()
	for round := 1; round <= r.o.runs; round++ {
		for _, s := range steps {
			if s.p.Err != nil {
				continue
			}
			if err := r.measure(ctx, s, fmt.Sprintf("run %d/%d", round, r.o.runs)); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.p.Err = err
				r.logf("  %s: %v", s.p.Name, err)
			}
		}
	}
	var big []step
	if r.o.big && r.shoal != "" {
		big = r.bigSteps()
		for _, s := range big {
			if err := r.measure(ctx, s, "big"); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.p.Err = err
			}
		}
	}

	r.report(os.Stdout, steps, big, started, load0)
	if len(r.bad) > 0 {
		return fmt.Errorf("root CIDs differ: %s", strings.Join(r.bad, "; "))
	}
	return nil
}

// measure adds one run of s to its path. A run during which other
// processes took more than -max-others of the machine is discarded and
// redone, up to -retries times; before each attempt the runner waits (up
// to -quiet-wait) for the machine to be that quiet.
func (r *runner) measure(ctx context.Context, s step, label string) error {
	for attempt := 0; ; attempt++ {
		res, sync, err := r.once(ctx, s, label)
		if err != nil {
			return err
		}
		share := res.OthersShare()
		busy := share > r.o.maxOthers
		if busy && attempt < r.o.retries {
			s.p.Redone++
			r.logf("%-9s %-34s redone: other processes took %.0f%% of the machine", label, s.p.Name, 100*share)
			continue
		}
		if busy {
			s.p.Noisy++
		}
		s.p.Runs = append(s.p.Runs, res)
		if s.store {
			s.p.Sync = append(s.p.Sync, sync)
		}
		line := fmt.Sprintf("%-9s %-34s %7.0f MB/s %6.0f MiB  others %3.0f%%", label, s.p.Name,
			float64(s.p.Bytes)/bench.MB/res.Wall.Seconds(), float64(res.MaxRSS)/bench.MiB, 100*share)
		if s.store {
			line += fmt.Sprintf("  sync after %.2fs", sync.Seconds())
		}
		r.logf("%s", line)
		if s.printsID {
			r.checkCID(s.p.Name, strings.TrimSpace(string(res.Stdout)))
		}
		return nil
	}
}

// once runs s: the data file is read back into the page cache and
// everything written so far is synced, both untimed, so that each run
// starts from the same state and pays for no earlier run's writeback. For
// a store, the sync right after the process is timed and returned.
func (r *runner) once(ctx context.Context, s step, label string) (bench.Result, time.Duration, error) {
	if _, err := bench.Warm(r.data); err != nil {
		return bench.Result{}, 0, err
	}
	syscall.Sync()
	if err := r.waitQuiet(ctx, s, label); err != nil {
		return bench.Result{}, 0, err
	}
	r.seq++
	scratch := filepath.Join(r.scratch, fmt.Sprintf("%03d", r.seq))
	defer func() {
		// Keep what a store wrote until the end (see run) while there is
		// room for two more stores and a margin.
		if !s.keep || !r.keep || freeBytes(r.o.dir) < 2*s.p.Bytes+8<<30 {
			os.RemoveAll(scratch)
		}
	}()
	if s.prepare != nil {
		if err := s.prepare(ctx, scratch); err != nil {
			return bench.Result{}, 0, err
		}
	}
	c := s.cmd(scratch)
	if s.stdin != nil {
		in, done, err := s.stdin()
		if err != nil {
			return bench.Result{}, 0, err
		}
		defer done()
		c.Stdin = in
	}
	res, err := bench.Run(ctx, c)
	if err != nil {
		return res, 0, err
	}
	var sync time.Duration
	if s.store {
		t := time.Now()
		syscall.Sync()
		sync = time.Since(t)
	}
	return res, sync, nil
}

// waitQuiet waits until other processes use at most -max-others of the
// machine over a second, or -quiet-wait has passed.
func (r *runner) waitQuiet(ctx context.Context, s step, label string) error {
	deadline := time.Now().Add(r.o.quietWait)
	for logged := false; ; logged = true {
		share, err := bench.OthersNow(ctx, time.Second)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil || share <= r.o.maxOthers {
			return nil
		}
		if time.Now().After(deadline) {
			r.logf("%-9s %-34s starting anyway: other processes still take %.0f%% of the machine", label, s.p.Name, 100*share)
			return nil
		}
		if !logged {
			r.logf("%-9s %-34s waiting: other processes take %.0f%% of the machine", label, s.p.Name, 100*share)
		}
	}
}

func (r *runner) checkCID(name, got string) {
	if strings.ContainsAny(got, " \n") || got == "" {
		r.bad = append(r.bad, fmt.Sprintf("%s printed %q, not one CID", name, got))
		return
	}
	if r.cid == "" {
		r.cid, r.cidFrom = got, name
		return
	}
	if got != r.cid {
		r.bad = append(r.bad, fmt.Sprintf("%s printed %s, %s printed %s", name, got, r.cidFrom, r.cid))
	}
}

func (r *runner) fileInput() (io.Reader, func(), error) {
	f, err := os.Open(r.data)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

func (r *runner) steps() []step {
	n := r.o.size
	self := func(args ...string) bench.Cmd {
		return bench.Cmd{Path: r.self, Args: append([]string{"child"}, args...)}
	}
	shoal := func(args ...string) bench.Cmd {
		return bench.Cmd{Path: r.shoal, Args: append([]string{"add", "-Q", "--no-progress"}, args...)}
	}
	p := func(name string) *bench.Path { return &bench.Path{Name: name, Bytes: n} }
	steps := []step{
		{p: p("SHA-256, 1 core"), cmd: func(string) bench.Cmd { return self("sha256", "-workers", "1", r.data) }},
		{p: p(fmt.Sprintf("SHA-256, %d cores", r.o.workers)), cmd: func(string) bench.Cmd {
			return self("sha256", "-workers", fmt.Sprint(r.o.workers), r.data)
		}},
		{p: p("O_DIRECT write 4 MiB + fdatasync"), cmd: func(s string) bench.Cmd {
			return self("odirect", "-size", fmt.Sprint(n), s)
		}},
		{p: p("boxo hash-only (file)"), printsID: true, cmd: func(string) bench.Cmd { return self("boxo-hash", r.data) }},
		{p: p("boxo hash-only (stdin)"), printsID: true, stdin: r.fileInput, cmd: func(string) bench.Cmd { return self("boxo-hash", "-") }},
		{p: p("shoal add -n (file)"), printsID: true, cmd: func(string) bench.Cmd { return shoal("-n", r.data) }},
		{p: p("shoal add -n (stdin)"), printsID: true, stdin: r.fileInput, cmd: func(string) bench.Cmd { return shoal("-n", "-") }},
		{p: p("boxo -> flatfs (file)"), printsID: true, store: true, keep: true, cmd: func(s string) bench.Cmd {
			return self("boxo-flatfs", "-repo", s, r.data)
		}},
		{p: p("boxo -> flatfs (stdin)"), printsID: true, store: true, keep: true, stdin: r.fileInput, cmd: func(s string) bench.Cmd {
			return self("boxo-flatfs", "-repo", s, "-")
		}},
		{p: p("shoal add --repo (file)"), printsID: true, store: true, keep: true, prepare: r.initPeer, cmd: func(s string) bench.Cmd {
			return shoal("--repo", s, r.data)
		}},
		{p: p("shoal add --repo (stdin)"), printsID: true, store: true, keep: true, prepare: r.initPeer, stdin: r.fileInput, cmd: func(s string) bench.Cmd {
			return shoal("--repo", s, "-")
		}},
	}
	if r.noShoal != nil {
		for _, s := range steps {
			if strings.HasPrefix(s.p.Name, "shoal") {
				s.p.Err = fmt.Errorf("no shoal binary: %w", r.noShoal)
			}
		}
	}
	return steps
}

// bigSteps stream -big-size bytes, the data file over and over (see
// bench.Stretch), through shoal's stdin; once each: they check memory.
func (r *runner) bigSteps() []step {
	n := r.o.bigSize
	name := "(stdin " + bench.FormatSize(n) + ")"
	in := func() (io.Reader, func(), error) {
		f, err := os.Open(r.data)
		if err != nil {
			return nil, nil, err
		}
		return bench.Stretch(f, r.o.size, n), func() { f.Close() }, nil
	}
	shoal := func(args ...string) bench.Cmd {
		return bench.Cmd{Path: r.shoal, Args: append([]string{"add", "-Q", "--no-progress"}, args...)}
	}
	return []step{
		{p: &bench.Path{Name: "shoal add -n " + name, Bytes: n}, stdin: in, cmd: func(string) bench.Cmd { return shoal("-n", "-") }},
		{p: &bench.Path{Name: "shoal add --repo " + name, Bytes: n}, stdin: in, store: true, prepare: r.initPeer, cmd: func(s string) bench.Cmd {
			return shoal("--repo", s, "-")
		}},
	}
}

// initPeer makes dir a peer directory (shoal init), which add --repo
// writes into.
func (r *runner) initPeer(ctx context.Context, dir string) error {
	out, err := exec.CommandContext(ctx, r.shoal, "init", "--repo", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("shoal init --repo %s: %v: %s", dir, err, out)
	}
	return nil
}

// buildShoal builds ./cmd/shoal of the module in the working directory.
func buildShoal(ctx context.Context, out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	gomod, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("find the module: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.HasPrefix(string(mod), "module github.com/shoal-project/shoal\n") {
		return errors.New("run from shoal's module directory (or give -shoal BINARY)")
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "./cmd/shoal")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/shoal: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}
