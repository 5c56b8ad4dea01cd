// Command chaos is shoal's fault-injection suite, in the manner of Jepsen:
// it starts real `shoal daemon` processes (5 by default), each in a network
// namespace of its own, drives concurrent clients against random peers
// while it injects faults, records every operation, and checks the history
// afterwards.
//
//	go run ./chaos [-duration 2m] [-seed N] [-peers 5] [-keep]
//
// Faults, drawn from the seed in a shuffled round so that every kind comes
// up: kill -9 of a random peer and of the leader (restarted when the fault
// ends), SIGSTOP of the leader for longer than an election timeout,
// network partitions (a majority and a minority; two halves bridged by one
// peer) made of blackhole routes between the namespaces, and a peer whose
// store (a small tmpfs) fills up while adds go on.
//
// Workload: plain adds and pin rms of a few dozen small keys, status and
// pin ls of them on random peers, sharded adds of small files (1-3 MiB in
// 512 KiB shards, rmin 2, rmax 3), reads of them, and pin rm of the oldest
// once more than eight are kept.
//
// Checks: the pinset history must be linearizable (porcupine, one key at a
// time, writes whose outcome is unknown may or may not take effect); once
// the faults are healed, every acknowledged sharded file reads back
// byte-identical from every peer, every pin is pinned on every peer it is
// allocated to (every part back to rmin, nothing stuck), and every store
// holds exactly the keys the state gives it (no orphans). The seed is
// printed: the same seed replays the same schedule of faults and client
// choices (not the same timing).
//
// It needs root and ip(8). It exits 1 when it found an anomaly and keeps
// its directory (daemon logs, history.jsonl, a porcupine visualisation).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/shoal-project/shoal/bench"
)

type options struct {
	duration time.Duration
	seed     uint64
	peers    int
	keys     int
	clients  int
	shoal    string
	dir      string
	keep     bool
	out      io.Writer
}

func main() {
	var o options
	fl := flag.NewFlagSet("chaos", flag.ExitOnError)
	fl.DurationVar(&o.duration, "duration", 2*time.Minute, "how long faults are injected (the checks after take a minute or two more)")
	fl.Uint64Var(&o.seed, "seed", 0, "seed of the fault schedule and the clients' choices; 0 draws one")
	fl.IntVar(&o.peers, "peers", 5, "shoal daemons")
	fl.IntVar(&o.keys, "keys", 32, "small keys the clients add and remove")
	fl.IntVar(&o.clients, "clients", 4, "concurrent pin clients (one more adds sharded files)")
	fl.StringVar(&o.shoal, "shoal", "", "the shoal `BINARY` to test; empty builds ./cmd/shoal")
	fl.StringVar(&o.dir, "dir", "", "directory for the peers and the results; empty makes a temporary one")
	fl.BoolVar(&o.keep, "keep", false, "keep the directory also when no anomaly was found")
	check := fl.String("check", "", "check a run's history.jsonl again (with -keys as it ran) instead of running")
	_ = fl.Parse(os.Args[1:])
	if *check != "" {
		os.Exit(checkFile(*check, o.keys))
	}
	o.out = os.Stdout
	ctx, cancel := signalContext()
	defer cancel()
	rep, err := run(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		os.Exit(2)
	}
	if len(rep.Anomalies) > 0 {
		os.Exit(1)
	}
}

// checkFile checks a saved history: 0 linearizable, 1 not, 2 unreadable.
func checkFile(path string, keys int) int {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		return 2
	}
	defer f.Close()
	ops, err := readHistory(f)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %s: %v\n", path, err)
		return 2
	}
	res, _ := checkLinearizable(ops, keys, 5*time.Minute)
	fmt.Printf("%s: %d operations, linearizable: %s\n", path, len(ops), res)
	if res == porcupine.Illegal {
		fmt.Print(explain(ops, keys))
		return 1
	}
	return 0
}

// report is what a run found.
type report struct {
	Seed     uint64         `json:"seed"`
	Duration time.Duration  `json:"duration"`
	Ops      map[string]int `json:"ops"` // by kind/outcome
	Faults   map[string]int `json:"faults"`
	Skipped  map[string]int `json:"skipped,omitempty"`
	Sharded  map[string]int `json:"sharded"` // sharded adds by outcome
	// ShardErrors are the sharded adds' errors, counted.
	ShardErrors []string      `json:"shard_errors,omitempty"`
	Cats        int           `json:"cats"`
	CatErrors   int           `json:"cat_errors"`
	ReadBack    int           `json:"read_back"` // final reads of sharded files, from every peer
	Linearized  string        `json:"linearizable"`
	SettleTime  time.Duration `json:"settle_time"`
	Anomalies   []string      `json:"anomalies"`
	Dir         string        `json:"dir"`
}

func run(ctx context.Context, o options) (rep report, err error) {
	if os.Geteuid() != 0 {
		return rep, errors.New("the chaos suite needs root, to build network namespaces and mount a tmpfs")
	}
	if o.peers < 5 {
		return rep, fmt.Errorf("-peers %d: the faults need at least 5 peers", o.peers)
	}
	if o.seed == 0 {
		o.seed = rand.Uint64() >> 1
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.out, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
	logf("seed %d: replay with go run ./chaos -seed %d -duration %s -peers %d", o.seed, o.seed, o.duration, o.peers)
	rep = report{Seed: o.seed, Duration: o.duration, Ops: map[string]int{}, Sharded: map[string]int{}}
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "shoal-chaos-"); err != nil {
			return rep, err
		}
	} else if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return rep, err
	}
	rep.Dir = o.dir
	defer func() {
		if err == nil && len(rep.Anomalies) == 0 && !o.keep {
			os.RemoveAll(o.dir)
		} else {
			logf("results kept in %s", o.dir)
		}
	}()
	if o.shoal == "" {
		o.shoal = filepath.Join(o.dir, "shoal")
		if err := bench.BuildShoal(ctx, o.shoal); err != nil {
			return rep, err
		}
	}

	pid := os.Getpid()
	nw, err := newNetwork(fmt.Sprintf("shc%d", pid%1000), fmt.Sprintf("10.%d.%d", 200+pid%50, pid/50%250), o.peers)
	if err != nil {
		return rep, err
	}
	defer nw.close()
	c, err := newCluster(ctx, o.shoal, o.dir, nw, o.peers-1, 48<<20, logf)
	if err != nil {
		return rep, err
	}
	defer c.close()
	logf("%d peers up", o.peers)

	w := &workload{c: c, h: &history{start: time.Now()}, seed: o.seed, keys: o.keys, byCID: map[string]int{}}
	for k := range o.keys {
		cmd := exec.CommandContext(ctx, o.shoal, "add", "-n", "-Q", "-")
		cmd.Stdin = strings.NewReader(string(keyData(o.seed, k)))
		out, err := cmd.Output()
		if err != nil {
			return rep, fmt.Errorf("CID of key %d: %w", k, err)
		}
		cid := strings.TrimSpace(string(out))
		w.cids = append(w.cids, cid)
		w.byCID[cid] = k
	}

	// The run: clients and the nemesis, until the schedule ends.
	r := rand.New(rand.NewPCG(o.seed, 1))
	faults := schedule(r, o.duration)
	if b, err := json.MarshalIndent(faults, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(o.dir, "schedule.json"), b, 0o600)
	}
	nm := &nemesis{c: c, logf: logf, count: map[string]int{}, skipped: map[string]int{}}
	wctx, stopClients := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for id := range o.clients {
		cr := rand.New(rand.NewPCG(o.seed, uint64(100+id)))
		wg.Go(func() { w.pinClient(wctx, id, cr) })
	}
	sr := rand.New(rand.NewPCG(o.seed, 99))
	wg.Go(func() { w.shardClient(wctx, sr) })
	nerr := nm.run(ctx, faults)
	stopClients()
	wg.Wait()
	rep.Faults, rep.Skipped = nm.count, nm.skipped
	if nerr != nil {
		return rep, nerr
	}
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}

	// Heal, let the cluster converge, then check.
	logf("faults over: healing")
	if err := c.healAll(ctx); err != nil {
		return rep, err
	}
	if err := c.waitReady(ctx, 2*time.Minute); err != nil {
		rep.Anomalies = append(rep.Anomalies, "after the heal: "+err.Error())
	}
	healed := time.Now()
	var last error
	for time.Since(healed) < 3*time.Minute {
		if last = c.settled(ctx, 0); last == nil {
			break
		}
		sleepCtx(ctx, time.Second)
	}
	rep.SettleTime = time.Since(healed).Round(time.Millisecond)
	if last != nil {
		rep.Anomalies = append(rep.Anomalies, "not settled 3 minutes after the heal: "+last.Error())
	} else {
		logf("settled %s after the heal", rep.SettleTime)
	}
	// Final reads on every peer close the history: every write whose
	// outcome was unknown has resolved by now.
	for _, n := range c.nodes {
		w.ls(ctx, -1, n)
	}
	bad, files, reads, err := w.readBack(ctx)
	if err != nil {
		return rep, err
	}
	rep.ReadBack = reads
	rep.Anomalies = append(rep.Anomalies, bad...)
	logf("read back %d sharded files from every peer (%d reads)", files, reads)
	w.mu.Lock()
	rep.Anomalies = append(rep.Anomalies, w.catBad...)
	rep.Cats, rep.CatErrors = w.cats, w.catErr
	errs := map[string]int{}
	for _, f := range w.sharded {
		rep.Sharded[f.Out]++
		if f.Err != "" {
			errs[f.Err]++
		}
	}
	if b, err := json.MarshalIndent(w.sharded, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(o.dir, "sharded.json"), b, 0o600)
	}
	w.mu.Unlock()
	for _, e := range slices.Sorted(mapKeys(errs)) {
		rep.ShardErrors = append(rep.ShardErrors, fmt.Sprintf("%dx %s", errs[e], e))
	}

	ops := w.h.snapshot()
	for _, op := range ops {
		out := op.Out
		if op.Kind == opLs {
			out = "ok"
		}
		if out == "" {
			out = "failed"
		}
		rep.Ops[op.Kind+" "+out]++
	}
	if f, err := os.Create(filepath.Join(o.dir, "history.jsonl")); err == nil {
		_ = w.h.write(f)
		f.Close()
	}
	res, info := checkLinearizable(ops, o.keys, 5*time.Minute)
	rep.Linearized = string(res)
	switch res {
	case porcupine.Illegal:
		path := filepath.Join(o.dir, "linearizability.html")
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(pinModel.ToModel(), info, f)
			f.Close()
		}
		rep.Anomalies = append(rep.Anomalies, "the pinset history is not linearizable (see "+path+"): "+explain(ops, o.keys))
	case porcupine.Unknown:
		rep.Anomalies = append(rep.Anomalies, "the linearizability check timed out after 5 minutes")
	}
	printReport(o.out, rep)
	if b, err := json.MarshalIndent(rep, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(o.dir, "report.json"), b, 0o600)
	}
	return rep, nil
}

func printReport(w io.Writer, rep report) {
	fmt.Fprintf(w, "\nseed %d, faults for %s\n", rep.Seed, rep.Duration)
	total := 0
	for _, n := range rep.Ops {
		total += n
	}
	fmt.Fprintf(w, "operations: %d\n", total)
	for _, k := range slices.Sorted(mapKeys(rep.Ops)) {
		fmt.Fprintf(w, "  %-16s %6d\n", k, rep.Ops[k])
	}
	fmt.Fprintf(w, "sharded adds: %v; reads during faults %d (%d failed, allowed); final reads %d\n",
		rep.Sharded, rep.Cats, rep.CatErrors, rep.ReadBack)
	for _, e := range short(rep.ShardErrors) {
		fmt.Fprintf(w, "  sharded add error: %s\n", e)
	}
	fmt.Fprintf(w, "faults:")
	for _, k := range faultKinds {
		fmt.Fprintf(w, " %s %d", k, rep.Faults[k])
		if rep.Skipped[k] > 0 {
			fmt.Fprintf(w, " (%d skipped)", rep.Skipped[k])
		}
		fmt.Fprintf(w, ",")
	}
	fmt.Fprintf(w, "\nsettled %s after the heal; linearizable: %s\n", rep.SettleTime, rep.Linearized)
	fmt.Fprintf(w, "anomalies: %d\n", len(rep.Anomalies))
	for _, a := range rep.Anomalies {
		fmt.Fprintf(w, "  - %s\n", a)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
