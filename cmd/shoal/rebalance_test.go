package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRebalanceProcesses: three real peers hold a sharded file; a fourth,
// empty one joins. `rebalance --dry-run` plans moves to it only, and
// `rebalance` moves shards to it and reports the cluster balanced; the
// file reads back through it. A bad tolerance is refused.
func TestRebalanceProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 4 daemons")
	}
	c := newTestCluster(t, 3)
	for i := range c.peers {
		c.fastRepair(i)
	}
	c.startAll()
	data := seeded("rebalance-processes", 9<<20+3)
	root := strings.TrimSpace(c.shoal(0, bytes.NewReader(data), "add", "--shard", "--shard-size", "1MiB",
		"--rmin", "2", "--rmax", "2", "-Q", "-").stdout)
	c.addPeer(c.secret)
	c.fastRepair(3)
	c.start(3, c.addr(0))
	eventually(t, 15*time.Second, func() error {
		var hs []struct {
			Alive bool `json:"alive"`
		}
		if err := json.Unmarshal([]byte(c.shoal(0, nil, "health", "--json").stdout), &hs); err != nil {
			return err
		}
		up := 0
		for _, h := range hs {
			if h.Alive {
				up++
			}
		}
		if up != 4 {
			return fmt.Errorf("%d of 4 peers up", up)
		}
		return nil
	})
	ids := c.peerIDs(0)
	var newID string
	for id, i := range ids {
		if i == 3 {
			newID = id
		}
	}
	if r := c.try(0, nil, "rebalance", "--tolerance", "0"); r.code != 1 || r.stderr != "shoal: --tolerance \"0\" is not a size above 0 (like 64MiB)\n" {
		t.Fatalf("bad tolerance: exit %d, %q", r.code, r.stderr)
	}
	dry := c.shoal(1, nil, "rebalance", "--dry-run").stdout
	lines := strings.Split(strings.TrimSpace(dry), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "PART") {
		t.Fatalf("dry run printed:\n%s", dry)
	}
	for _, l := range lines[1 : len(lines)-1] {
		if f := strings.Fields(l); len(f) != 5 || f[3] != newID {
			t.Fatalf("dry run moves to another peer than the new one: %q", l)
		}
	}
	if st := c.shardedStatus(0, root); slices.ContainsFunc(st.Shards, func(sh shardRow) bool {
		return slices.Contains(sh.Allocations, newID)
	}) {
		t.Fatal("a dry run moved a shard")
	}
	out := c.shoal(1, nil, "rebalance").stdout
	if !strings.HasPrefix(out, "balanced: ") {
		t.Fatalf("rebalance printed %q", out)
	}
	on := 0
	for _, sh := range c.shardedStatus(0, root).Shards {
		if len(sh.Allocations) != 2 {
			t.Fatalf("shard %d on %d peers after rebalancing", sh.Index, len(sh.Allocations))
		}
		if slices.Contains(sh.Allocations, newID) {
			on++
		}
	}
	if on < 2 {
		t.Fatalf("the new peer took %d shards", on)
	}
	if got := c.shoal(3, nil, "cat", root).stdout; got != string(data) {
		t.Fatalf("cat through the new peer: %d bytes, want %d identical", len(got), len(data))
	}
}
