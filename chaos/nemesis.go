package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Fault kinds.
const (
	faultKill       = "kill"         // kill -9 of a random peer, restarted after the fault
	faultKillLeader = "kill-leader"  // kill -9 of the leader, restarted after the fault
	faultPause      = "pause-leader" // SIGSTOP of the leader for longer than an election, then SIGCONT
	faultPartition  = "partition"    // majority | minority, the leader on a random side
	faultBridge     = "bridge"       // two halves that only one peer joins
	faultDiskFull   = "disk-full"    // the tmpfs peer's store fills up while adds go on
)

var faultKinds = []string{faultKill, faultKillLeader, faultPause, faultPartition, faultBridge, faultDiskFull}

// fault is one entry of the schedule: what, for how long, and the random
// choices it makes, all drawn from the seed before the run.
type fault struct {
	Kind  string        `json:"kind"`
	Hold  time.Duration `json:"hold"`
	Quiet time.Duration `json:"quiet"` // after the heal, before the next fault
	Pick  int           `json:"pick"`  // a random number the fault uses to choose nodes
}

// schedule draws faults until they fill d: every kind once in a shuffled
// order, then again, and so on.
func schedule(r *rand.Rand, d time.Duration) []fault {
	var out []fault
	var total time.Duration
	for total < d {
		kinds := append([]string(nil), faultKinds...)
		r.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
		for _, k := range kinds {
			f := fault{Kind: k, Hold: time.Duration(3000+r.IntN(3000)) * time.Millisecond,
				Quiet: time.Duration(2000+r.IntN(2000)) * time.Millisecond, Pick: r.IntN(1 << 30)}
			if k == faultPause {
				f.Hold = max(f.Hold, 4*electionTimeout)
			}
			out = append(out, f)
			if total += f.Hold + f.Quiet; total >= d {
				break
			}
		}
	}
	return out
}

// nemesis applies the schedule to the cluster.
type nemesis struct {
	c     *cluster
	logf  func(string, ...any)
	count map[string]int
	// skipped counts faults that could not be applied (no leader to
	// pause, say), by kind.
	skipped map[string]int
}

func (nm *nemesis) run(ctx context.Context, faults []fault) error {
	for _, f := range faults {
		if ctx.Err() != nil {
			return nil
		}
		heal, err := nm.inject(ctx, f)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Kind, err)
		}
		sleepCtx(ctx, f.Hold)
		if heal != nil {
			if err := heal(); err != nil {
				return fmt.Errorf("heal %s: %w", f.Kind, err)
			}
		}
		sleepCtx(ctx, f.Quiet)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// inject starts fault f and returns what heals it.
func (nm *nemesis) inject(ctx context.Context, f fault) (func() error, error) {
	c := nm.c
	n := len(c.nodes)
	skip := func(why string) (func() error, error) {
		nm.logf("fault %s skipped: %s", f.Kind, why)
		nm.skipped[f.Kind]++
		return nil, nil
	}
	restart := func(victim *node) func() error {
		return func() error {
			nm.logf("restart %s", victim.name)
			return c.start(context.WithoutCancel(ctx), victim)
		}
	}
	switch f.Kind {
	case faultKill:
		victim := c.nodes[f.Pick%n]
		nm.logf("fault %s: kill -9 %s for %s", f.Kind, victim.name, f.Hold)
		victim.kill()
		nm.count[f.Kind]++
		return restart(victim), nil
	case faultKillLeader, faultPause:
		l := c.leader(ctx)
		if l < 0 {
			return skip("no leader")
		}
		victim := c.nodes[l]
		nm.count[f.Kind]++
		if f.Kind == faultPause {
			nm.logf("fault %s: SIGSTOP %s (the leader) for %s", f.Kind, victim.name, f.Hold)
			victim.signal(syscall.SIGSTOP)
			return func() error { nm.logf("SIGCONT %s", victim.name); victim.signal(syscall.SIGCONT); return nil }, nil
		}
		nm.logf("fault %s: kill -9 %s (the leader) for %s", f.Kind, victim.name, f.Hold)
		victim.kill()
		return restart(victim), nil
	case faultPartition, faultBridge:
		order := rand.New(rand.NewPCG(uint64(f.Pick), 0)).Perm(n)
		var groups [][]int
		if f.Kind == faultPartition {
			// The leader, if known, goes to the minority every other time.
			if l := c.leader(ctx); l >= 0 && f.Pick%2 == 0 {
				for i, v := range order {
					if v == l {
						order[i], order[n-1] = order[n-1], order[i]
					}
				}
			}
			groups = [][]int{order[:n/2+1], order[n/2+1:]}
		} else {
			x := order[0]
			half := (n - 1) / 2
			groups = [][]int{append([]int{x}, order[1:1+half]...), append([]int{x}, order[1+half:]...)}
		}
		nm.logf("fault %s: groups %v for %s", f.Kind, names(c, groups), f.Hold)
		if err := c.net.partition(groups...); err != nil {
			return nil, err
		}
		nm.count[f.Kind]++
		return func() error { nm.logf("heal the network"); return c.net.heal() }, nil
	case faultDiskFull:
		var victim *node
		for _, v := range c.nodes {
			if v.tmpfs > 0 {
				victim = v
			}
		}
		if victim == nil {
			return skip("no peer on a tmpfs")
		}
		path := filepath.Join(victim.repo, "store", "chaos-fill")
		var st syscall.Statfs_t
		if err := syscall.Statfs(filepath.Join(victim.repo, "store"), &st); err != nil {
			return nil, err
		}
		free := int64(st.Bavail) * st.Bsize
		fill := free - 128<<10
		if fill <= 0 {
			return skip("the store is full already")
		}
		nm.logf("fault %s: fill %s's store with %d bytes, leaving 128 KiB, for %s", f.Kind, victim.name, fill, f.Hold)
		if err := writeZeros(path, fill); err != nil {
			return nil, err
		}
		nm.count[f.Kind]++
		return func() error { nm.logf("empty %s's store", victim.name); return os.Remove(path) }, nil
	}
	return nil, fmt.Errorf("unknown fault kind %q", f.Kind)
}

func names(c *cluster, groups [][]int) [][]string {
	var out [][]string
	for _, g := range groups {
		var ns []string
		for _, i := range g {
			ns = append(ns, c.nodes[i].name)
		}
		out = append(out, ns)
	}
	return out
}

// writeZeros writes n bytes of zeros to path (tmpfs holds them in memory,
// so they really take the room).
func writeZeros(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := f.Write(buf[:k]); errors.Is(err, syscall.ENOSPC) {
			break // the store filled up meanwhile: full is the point
		} else if err != nil {
			f.Close()
			return err
		}
		n -= k
	}
	return f.Close()
}

// healAll ends every fault: the network whole, no peer paused, every peer
// running, no store full.
func (c *cluster) healAll(ctx context.Context) error {
	if err := c.net.heal(); err != nil {
		return err
	}
	for _, n := range c.nodes {
		if n.tmpfs > 0 {
			_ = os.Remove(filepath.Join(n.repo, "store", "chaos-fill"))
		}
		if n.running() {
			n.signal(syscall.SIGCONT)
			continue
		}
		if err := c.start(ctx, n); err != nil {
			return err
		}
	}
	return nil
}
