package main

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestRestartKeepsShards: a peer restarted while the cluster runs keeps
// every shard allocated to it; its store never drops one while its state
// catches up with the leader's.
func TestRestartKeepsShards(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons")
	}
	c := newTestCluster(t, 3)
	c.startAll()
	c.shoal(0, bytes.NewReader(seeded("restart", 4<<20)), "add", "--shard", "--shard-size", "1MiB",
		"--rmin", "3", "--rmax", "3", "-Q", "-")
	var before []string
	eventually(t, 10*time.Second, func() error {
		if before = c.keysOf(2); len(before) < 5 {
			return fmt.Errorf("peer2 holds %d shards", len(before))
		}
		return nil
	})
	c.stop(2)
	c.start(2)
	// peer2's store is sampled until its tracker has walked the whole
	// state and store with a state that caught up: a sync returns after
	// such a walk, and no round runs before the state caught up. A peer
	// that reconciled too early, or wrongly, would have dropped shards by
	// then.
	stop, dropped := make(chan struct{}), make(chan []string, 1)
	go func() {
		defer close(dropped)
		for {
			if now := c.keysOf(2); !slices.Equal(now, before) {
				dropped <- now
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	c.shoal(2, nil, "sync", "--local")
	close(stop)
	now, ok := <-dropped
	if !ok {
		now = c.keysOf(2)
	}
	if !slices.Equal(now, before) {
		t.Fatalf("peer2 held %d shards before its restart, %d after:\nbefore %v\nafter  %v", len(before), len(now), before, now)
	}
}
