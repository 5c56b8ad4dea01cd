package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shoal-project/shoal/api"
)

// settled checks, through node from, the invariants that hold once the
// faults are healed and the cluster had time to converge: no add in
// progress, every pin pinned on every peer it is allocated to (so every
// part at rmin at least, and nothing stuck), and every store holding
// exactly the keys the state gives it (no orphan, nothing missing).
func (c *cluster) settled(ctx context.Context, from int) error {
	n := c.nodes[from]
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	all, err := n.client.StatusAll(cctx, false)
	if err != nil {
		return fmt.Errorf("status on %s: %w", n.name, err)
	}
	ids, err := c.peerIDs(cctx)
	if err != nil {
		return err
	}
	want := make([][]string, len(c.nodes))
	var problems []string
	for _, st := range all {
		if st.AddID != "" {
			problems = append(problems, fmt.Sprintf("add %s still in progress", st.AddID))
			continue
		}
		if st.Status != api.OverallPinned {
			problems = append(problems, fmt.Sprintf("%s (%s) is %s: %s", st.CID, st.Name, st.Status, st.Summary))
		}
		for id, ps := range st.Peers {
			if ps.Status != api.StatusPinned {
				problems = append(problems, fmt.Sprintf("%s (%s) is %s on %s %s", st.CID, st.Name, ps.Status, ps.Name, ps.Error))
			}
			_ = id
		}
		for _, sh := range st.Shards {
			for p, s := range sh.Peers {
				if s != api.StatusPinned {
					problems = append(problems, fmt.Sprintf("shard %d of %s is %s on %s", sh.Index, st.Name, s, p))
				}
			}
			for _, a := range sh.Allocations {
				want[ids[a]] = append(want[ids[a]], sh.CID)
			}
		}
		key := st.CID
		if st.ClusterDAG != "" {
			key = st.ClusterDAG
		}
		for _, a := range st.Allocations {
			want[ids[a]] = append(want[ids[a]], key)
		}
	}
	for i, m := range c.nodes {
		slices.Sort(want[i])
		want[i] = slices.Compact(want[i])
		got, err := m.storeKeys()
		if err != nil {
			return err
		}
		if extra, missing := diff(got, want[i]); len(extra)+len(missing) > 0 {
			problems = append(problems, fmt.Sprintf("%s stores %d keys, the state gives it %d: %d orphans %v, %d missing %v",
				m.name, len(got), len(want[i]), len(extra), short(extra), len(missing), short(missing)))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d problems: %s", len(problems), strings.Join(short(problems), "; "))
	}
	return nil
}

// diff returns what is in got and not in want, and the reverse; both
// sorted.
func diff(got, want []string) (extra, missing []string) {
	for _, g := range got {
		if _, ok := slices.BinarySearch(want, g); !ok {
			extra = append(extra, g)
		}
	}
	for _, w := range want {
		if _, ok := slices.BinarySearch(got, w); !ok {
			missing = append(missing, w)
		}
	}
	return extra, missing
}

// short keeps the first five.
func short(ss []string) []string {
	if len(ss) > 5 {
		return append(slices.Clip(ss[:5]), fmt.Sprintf("and %d more", len(ss)-5))
	}
	return ss
}

// readBack checks that every sharded file that ended up pinned (every
// acknowledged one must have) reads back byte-identical from every node.
func (w *workload) readBack(ctx context.Context) (anomalies []string, files, reads int, err error) {
	pinned := map[string]bool{}
	pins, err := w.c.nodes[0].client.Pins(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	for _, p := range pins {
		pinned[p.CID] = true
	}
	w.mu.Lock()
	sharded := slices.Clone(w.sharded)
	w.mu.Unlock()
	names := map[string]bool{}
	for _, p := range pins {
		names[p.Name] = true
	}
	for _, f := range sharded {
		name := fmt.Sprintf("sharded%d", f.Index)
		switch {
		case f.Removed == outOK && (pinned[f.Root] || names[name]):
			anomalies = append(anomalies, fmt.Sprintf("%s (%s) was removed, acknowledged, and is pinned", name, f.Root))
			continue
		case f.Removed == outOK:
			continue
		case f.Out == outOK && f.Removed == "" && !pinned[f.Root]:
			anomalies = append(anomalies, fmt.Sprintf("%s (%s) was acknowledged and is not pinned", name, f.Root))
			continue
		case !names[name]:
			continue // it never committed, or its removal did
		}
		files++
		root := f.Root
		if root == "" {
			for _, p := range pins {
				if p.Name == name {
					root = p.CID
				}
			}
		}
		for _, n := range w.c.nodes {
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			sum, size, err := catSum(cctx, n.client, root)
			cancel()
			reads++
			if err != nil || sum != f.Sum || size != f.Size {
				anomalies = append(anomalies, fmt.Sprintf("%s (%s) read from %s: %d bytes, sha256 %s, %v; want %d bytes, %s",
					name, root, n.name, size, sum, err, f.Size, f.Sum))
			}
		}
	}
	return anomalies, files, reads, nil
}
