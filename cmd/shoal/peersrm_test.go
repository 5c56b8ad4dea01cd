package main

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPeersRmDrains: four daemons, a sharded file at rmin=rmax=2. `peers rm`
// of a follower that holds shards reports its progress on stderr, removes
// it only once every part it held is on two other peers, and the file
// reads back identical.
func TestPeersRmDrains(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons")
	}
	data := seeded("peers-rm", 4<<20+7)
	c := newTestCluster(t, 4)
	c.startAll()
	root := strings.TrimSpace(c.shoal(0, bytes.NewReader(data), "add", "--shard", "--shard-size", "1MiB",
		"--rmin", "2", "--rmax", "2", "-Q", "-").stdout)
	ids := c.peerIDs(0)
	leader := c.leader(0)
	st := c.shardedStatus(0, root)
	victimID, most := "", 0
	for id, i := range ids {
		n := 0
		for _, sh := range st.Shards {
			if slices.Contains(sh.Allocations, id) {
				n++
			}
		}
		if i != leader && n > most {
			victimID, most = id, n
		}
	}
	if most == 0 {
		t.Fatal("no follower holds a shard: the test would prove nothing")
	}
	asker := leader
	r := c.shoal(asker, nil, "peers", "rm", victimID)
	if r.stdout != "removed peer "+victimID+"\n" {
		t.Fatalf("peers rm: stdout %q", r.stdout)
	}
	if !strings.HasPrefix(r.stderr, victimID+": ") || !strings.Contains(r.stderr, " being copied to new holders") ||
		!strings.HasSuffix(r.stderr, victimID+": 0 parts left, 0 being copied to new holders\n") {
		t.Fatalf("peers rm progress: %q", r.stderr)
	}
	victim := ids[victimID]
	eventually(t, 15*time.Second, func() error {
		if c.peers[victim].running() {
			return fmt.Errorf("%s still runs after its removal", c.peers[victim].name)
		}
		return nil
	})
	st = c.shardedStatus(asker, root)
	if st.Status != "pinned" || slices.Contains(st.Allocations, victimID) {
		t.Fatalf("after rm: %s, cluster-DAG on %v", st.Status, st.Allocations)
	}
	for _, sh := range st.Shards {
		if len(sh.Allocations) != 2 || slices.Contains(sh.Allocations, victimID) {
			t.Fatalf("shard %d on %v", sh.Index, sh.Allocations)
		}
		for p, s := range sh.Peers {
			if s != "pinned" {
				t.Fatalf("shard %d on %s: %s", sh.Index, p, s)
			}
		}
	}
	if got := c.shoal(asker, nil, "cat", root).stdout; got != string(data) {
		t.Fatalf("read back: %d bytes, want %d identical", len(got), len(data))
	}
	r = c.try(asker, nil, "peers", "rm", "--timeout", "0s", victimID)
	if r.code != 1 || r.stderr != "shoal: --timeout must be positive, got 0s\n" {
		t.Fatalf("rm --timeout 0s: exit %d, %q", r.code, r.stderr)
	}
	r = c.try(asker, nil, "peers", "rm", victimID)
	if r.code != 1 || r.stderr != "shoal: "+victimID+" is not a member of the cluster\n" {
		t.Fatalf("rm of a removed peer: exit %d, %q", r.code, r.stderr)
	}
}
