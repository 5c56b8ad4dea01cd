package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/shard"
)

// fastHealth makes failure detection and repair take about a second.
func fastHealth(_ int, cfg *config.Config) {
	// Equal, explicit capacities: free space then says which peer holds
	// least, so consecutive shards spread (the disk's free space is the
	// same for every peer of one machine).
	cfg.Capacity = "1GiB"
	cfg.Health.HeartbeatInterval = config.Duration(200 * time.Millisecond)
	cfg.Health.HeartbeatTTL = config.Duration(time.Second)
	cfg.Health.RepairGrace = config.Duration(time.Second)
}

// TestRepair: 4 peers (3 voters, 1 non-voter), a sharded file at rmin=2
// rmax=3. Stopping one holder moves nothing; stopping a second brings
// every shard back to rmin on the live peers, the file reads back
// identical, and the two restarted peers free what they no longer hold.
func TestRepair(t *testing.T) {
	logs := &logCapture{t: t}
	peers := newTestPeersOpts(t, 4, fastHealth, func(i int, o *Options) { o.Logger = logs.logger(i) })
	ctx := context.Background()
	data := seeded("repair", 6<<20+777)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "f", Chunker: "size-65536",
		Shard: true, ShardSize: 1 << 20, RMin: 2, RMax: 3})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := cid.Decode(res.CID)
	st := peers[0].cons.State()
	before, _ := st.Get(root)

	// Peer 3 joined last: the non-voter. The second peer to stop is a
	// voter that is not the leader (two voters of three keep the quorum)
	// and shares a shard with peer 3.
	leader := peers[0].cons.Leader()
	var second *Peer
	for _, p := range peers[:3] {
		if p.ID() == leader || second != nil {
			continue
		}
		for _, sh := range before.Shards {
			if slices.Contains(sh.Allocations, p.ID()) && slices.Contains(sh.Allocations, peers[3].ID()) {
				second = p
				break
			}
		}
	}
	if second == nil {
		t.Fatalf("no follower shares a shard with peer 3: %+v", before.Shards)
	}
	var leading *Peer
	for _, p := range peers {
		if p.ID() == leader {
			leading = p
		}
	}
	probe, roundEnd := pinRepairProbe(t, peers[0], 4)
	from := logs.len()
	peers[3].Close()
	// The first round of the leader that counts peer 3 gone (down past
	// the TTL and the grace) has decided on every part of the file when
	// it logs the probe: a repair it started would be in the leader's
	// state already (it commits each one before it walks on).
	waitFor(t, 20*time.Second, func() error {
		if len(logs.matchingSince(from, roundEnd)) == 0 {
			return errors.New("no repair round has counted peer 3 gone yet")
		}
		return nil
	})
	lst := leading.cons.State()
	if after, _ := lst.Get(root); len(lst.Repairs()) != 0 || !shardsEqual(after.Shards, before.Shards) {
		t.Fatalf("one holder down, still >= rmin everywhere: something moved: %+v", lst.Repairs())
	}
	if _, err := (backend{peers[0]}).Unpin(ctx, probe); err != nil {
		t.Fatal(err)
	}

	second.Close()
	down := []peer.ID{second.ID(), peers[3].ID()}
	var live []*Peer
	for _, p := range peers[:3] {
		if p != second {
			live = append(live, p)
		}
	}
	st = live[0].cons.State()
	waitFor(t, 20*time.Second, func() error {
		if rs := st.Repairs(); len(rs) != 0 {
			var why []string
			for _, r := range rs {
				for _, lp := range peers {
					if slices.Contains(r.Pending, lp.ID()) {
						why = append(why, fmt.Sprintf("%s on %s: has %v, status %+v, wants %v", r.Part, lp.cfg.PeerName,
							lp.store.HasShard(r.Part.String()), lp.tracker.shardStatus(r.Part), lp.cons.State().Wants(r.Part, lp.ID())))
					}
				}
			}
			return fmt.Errorf("%d repairs in progress: %v", len(rs), why)
		}
		p, _ := st.Get(root)
		for i, sh := range p.Shards {
			n := 0
			for _, lp := range live {
				if slices.Contains(sh.Allocations, lp.ID()) {
					if !lp.store.HasShard(sh.CID.String()) {
						return fmt.Errorf("shard %d: allocated to %s, not stored there", i, lp.cfg.PeerName)
					}
					n++
				}
			}
			if n < 2 {
				return fmt.Errorf("shard %d: %d live holders of %v", i, n, sh.Allocations)
			}
		}
		return nil
	})
	var got bufWriter
	if err := (backend{live[1]}).Cat(ctx, res.CID, 0, -1, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("read back after repair: %v (%d bytes of %d)", err, got.Len(), len(data))
	}
	// Shards copied away from both stopped peers no longer list them.
	moved := 0
	p, _ := st.Get(root)
	for i, sh := range p.Shards {
		was := before.Shards[i].Allocations
		if slices.Contains(was, down[0]) && slices.Contains(was, down[1]) {
			moved++
			if slices.Contains(sh.Allocations, down[0]) || slices.Contains(sh.Allocations, down[1]) {
				t.Errorf("shard %d still allocated to a stopped peer: %v", i, sh.Allocations)
			}
		}
	}
	if moved == 0 {
		t.Fatal("no shard was on both stopped peers: the test proved nothing")
	}

	// Restarted, the two peers free what they no longer hold.
	for _, i := range []int{slices.Index(peers, second), 3} {
		dir := peers[i].dir
		np, err := Start(ctx, dir, Options{Logger: testLogger(t, i)})
		if err != nil {
			t.Fatalf("restart peer%d: %v", i, err)
		}
		t.Cleanup(func() { np.Close() })
		peers[i] = np
	}
	waitFor(t, 20*time.Second, func() error {
		for _, lp := range peers {
			for _, sh := range lp.store.Shards() {
				c, _ := cid.Decode(sh.Key)
				if !lp.cons.State().Wants(c, lp.ID()) {
					return fmt.Errorf("%s still stores %s, allocated elsewhere", lp.cfg.PeerName, sh.Key)
				}
			}
		}
		return nil
	})
}

// pinRepairProbe pins, through p, content nobody holds on all n peers, as
// a probe of the leader's repair rounds, and returns its CID and what the
// leader logs at the end of every round while a member is gone: the
// probe's part is then short of its rmin, with no live peer left to copy
// it to. That line comes once the round has walked every pin, so it says
// the round has decided on all of them.
func pinRepairProbe(t *testing.T, p *Peer, n int) (string, *regexp.Regexp) {
	t.Helper()
	probe := rawBlock(t, []byte("repair probe: stored nowhere")).CID.String()
	if _, err := (backend{p}).Pin(context.Background(), api.PinRequest{CID: probe, Name: "probe", RMin: n, RMax: n}); err != nil {
		t.Fatal(err)
	}
	return probe, regexp.MustCompile(`: repair: (.*\n)*` + probe + ` of ` + probe + `: `)
}

// len is how many lines c kept so far.
func (c *logCapture) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// matchingSince returns the lines kept from the nth on that re matches.
func (c *logCapture) matchingSince(n int, re *regexp.Regexp) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.lines[n:] {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

func shardsEqual(a, b []consensus.Shard) bool {
	return slices.EqualFunc(a, b, func(x, y consensus.Shard) bool {
		return x.CID == y.CID && slices.Equal(x.Allocations, y.Allocations)
	})
}

// TestShardAddReplacesFailedReceiver: a receiver that fails every shard
// (its disk, say) does not fail the add: each shard it was given is sent
// to another peer from one that confirmed it, and the file is pinned with
// every shard on rmin peers, none of them the failing one.
func TestShardAddReplacesFailedReceiver(t *testing.T) {
	var refused atomic.Int32
	peers := newTestPeersOpts(t, 4, fastHealth, func(i int, o *Options) {
		if i == 3 {
			o.receiveHook = func(shard.Info) error { refused.Add(1); return errors.New("disk failed") }
		}
	})
	ctx := context.Background()
	data := seeded("replace", 6<<20+5)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "f", Chunker: "size-65536",
		Shard: true, ShardSize: 1 << 20, RMin: 2, RMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	if refused.Load() == 0 {
		t.Fatal("peer 3 was never sent a shard: the test proved nothing")
	}
	bad := peers[3].ID().String()
	for _, sh := range res.Shards {
		if len(sh.Allocations) != 2 || slices.Contains(sh.Allocations, bad) {
			t.Fatalf("shard %d allocated to %v; want 2 peers, not the failing one", sh.Index, sh.Allocations)
		}
	}
	waitFor(t, 5*time.Second, func() error { // peer 2 applies the commit a heartbeat later
		var got bufWriter
		if err := (backend{peers[2]}).Cat(ctx, res.CID, 0, -1, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
			return fmt.Errorf("read back: %v (%d of %d bytes)", err, got.Len(), len(data))
		}
		return nil
	})
}

// TestRepairAvoidsBrokenPeer: a fourth peer joins after a sharded add
// with the most free space, so the allocator picks it first for every
// repair, but its store cannot write (its tmp/ directory is a file). When
// a holder stops, the repairs tried on it end in pin_error, the repairer
// avoids it for those parts and copies them to the peer that can take
// them instead; the broken peer is left holding nothing.
func TestRepairAvoidsBrokenPeer(t *testing.T) {
	peers := newTestPeersWith(t, 3, fastHealth)
	ctx := context.Background()
	data := seeded("broken", 3<<20+5)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "f", Chunker: "size-65536",
		Shard: true, ShardSize: 1 << 20, RMin: 2, RMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := cid.Decode(res.CID)
	waitApplied(t, peers, root)
	boot, _ := ma.NewMultiaddr(peers[0].fullAddrs()[0])
	broken := startTestPeer(t, 3, []ma.Multiaddr{boot}, func(i int, cfg *config.Config) {
		fastHealth(i, cfg)
		cfg.Capacity = "100GiB"
	})
	tmp := filepath.Join(broken.dir, config.StoreDir, "tmp")
	if err := os.RemoveAll(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	leader := peers[0].cons.Leader()
	var stopped *Peer
	for _, p := range peers {
		if p.ID() != leader {
			stopped = p
			break
		}
	}
	pin, _ := peers[0].cons.State().Get(root)
	affected := 0
	for _, sh := range pin.Shards {
		if slices.Contains(sh.Allocations, stopped.ID()) {
			affected++
		}
	}
	if affected == 0 {
		t.Fatal("the stopped peer holds no shard: the test would prove nothing")
	}
	waitFor(t, 10*time.Second, func() error {
		if _, _, fresh := peers[0].monitor.metrics(broken.ID()); !fresh {
			return fmt.Errorf("no heartbeat from the new peer yet")
		}
		return nil
	})
	stopped.Close()
	var live []*Peer
	for _, p := range peers {
		if p != stopped {
			live = append(live, p)
		}
	}
	st := live[0].cons.State()
	triedBroken := false
	waitFor(t, 30*time.Second, func() error {
		for _, r := range st.Repairs() {
			triedBroken = triedBroken || slices.Contains(r.Pending, broken.ID())
		}
		if _, n := broken.tracker.failures(); n > 0 {
			triedBroken = true
		}
		if len(st.Repairs()) > 0 {
			return fmt.Errorf("%d repairs in progress", len(st.Repairs()))
		}
		p, _ := st.Get(root)
		for i, sh := range p.Shards {
			if slices.Contains(sh.Allocations, broken.ID()) {
				return fmt.Errorf("shard %d allocated to the broken peer", i)
			}
			n := 0
			for _, lp := range live {
				if slices.Contains(sh.Allocations, lp.ID()) && lp.store.HasShard(sh.CID.String()) {
					n++
				}
			}
			if n != 2 {
				return fmt.Errorf("shard %d: %d live holders storing it, allocated to %v", i, n, sh.Allocations)
			}
		}
		return nil
	})
	if !triedBroken {
		t.Fatal("the broken peer was never chosen: the test proved nothing")
	}
	if n := broken.store.Count(); n != 0 {
		t.Fatalf("the broken peer stores %d shards", n)
	}
}

// TestLostParts: 4 peers, a sharded file at rmin=rmax=1. Once the only
// holder of some shards is down past the grace, those shards, and so the
// pin, are lost: status says so (the other shards stay pinned), Lost
// lists exactly them, no repair starts, and pin rm drops the pin.
func TestLostParts(t *testing.T) {
	logs := &logCapture{t: t}
	peers := newTestPeersOpts(t, 4, fastHealth, func(i int, o *Options) { o.Logger = logs.logger(i) })
	ctx := context.Background()
	data := seeded("lost", 4<<20+11)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "l", Chunker: "size-65536",
		Shard: true, ShardSize: 512 << 10, RMin: 1, RMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := cid.Decode(res.CID)
	pin, _ := peers[0].cons.State().Get(root)
	// Peer 3, the non-voter, goes: the quorum stays.
	gone := peers[3]
	var want []string
	pin.EachPart(func(c cid.Cid, holders []peer.ID, _ int64) {
		if slices.Equal(holders, []peer.ID{gone.ID()}) {
			want = append(want, c.String())
		}
	})
	if len(want) == 0 {
		t.Fatalf("peer 3 holds no part alone: %+v", pin.Shards)
	}
	slices.Sort(want)
	_, roundEnd := pinRepairProbe(t, peers[0], 4)
	gone.Close()
	b := backend{peers[0]}
	waitFor(t, 10*time.Second, func() error {
		lost, err := b.Lost(ctx)
		if err != nil {
			return err
		}
		var got []string
		for _, l := range lost {
			if l.Root != res.CID || l.Name != "l" || !slices.Equal(l.Holders, []string{gone.ID().String()}) {
				return fmt.Errorf("lost part %+v", l)
			}
			got = append(got, l.Part)
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("lost %v, want %v", got, want)
		}
		return nil
	})
	st, err := b.Status(ctx, res.CID, false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != api.OverallLost || !strings.HasSuffix(st.Summary, fmt.Sprintf(
		": every peer that held a lost part is gone; it returns only with one of them, or `shoal pin rm %s` drops the pin", res.CID)) {
		t.Fatalf("status %s: %s", st.Status, st.Summary)
	}
	for _, sh := range st.Shards {
		lost := slices.Contains(want, sh.CID)
		if (lost && sh.Status != api.OverallLost) || (!lost && sh.Status != api.OverallPinned) {
			t.Errorf("shard %d (lost %v): %s, peers %v", sh.Index, lost, sh.Status, sh.Peers)
		}
	}
	// Nothing to copy from: the leader's round logs each lost part, once,
	// where it would otherwise start its repair, and starts none. A
	// round that ends after those lines (the probe's line) has decided
	// on every part again; a repair started would be in the leader's
	// state already.
	var lostAt int
	waitFor(t, 20*time.Second, func() error {
		for _, part := range want {
			re := regexp.MustCompile(`: repair: ` + part + ` of ` + res.CID + ` is lost: every holder is gone, nothing to copy from; `)
			if len(logs.matchingSince(0, re)) != 1 {
				return fmt.Errorf("the leader has not logged %s as lost, once: %q", part, logs.matchingSince(0, re))
			}
		}
		lostAt = logs.len()
		return nil
	})
	waitFor(t, 20*time.Second, func() error {
		if len(logs.matchingSince(lostAt, roundEnd)) == 0 {
			return errors.New("no repair round has ended since the lost parts were logged")
		}
		return nil
	})
	if started := logs.matchingSince(0, regexp.MustCompile(`; copying to \[`)); len(started) != 0 {
		t.Fatalf("repairs of a lost part: %q", started)
	}
	for _, p := range peers[:3] {
		if rs := p.cons.State().Repairs(); p.ID() == p.cons.Leader() && len(rs) != 0 {
			t.Fatalf("repairs of a lost part in the leader's state: %+v", rs)
		}
	}
	if _, err := b.Unpin(ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	if lost, err := b.Lost(ctx); err != nil || len(lost) != 0 {
		t.Fatalf("after pin rm, lost %+v, %v", lost, err)
	}
}

// TestShardAddFailsBelowRmin: when fewer than rmin peers confirm a shard
// and no other peer can take it, the add fails with that sentence and
// leaves nothing; it never records a shard on fewer than rmin peers.
func TestShardAddFailsBelowRmin(t *testing.T) {
	peers := newTestPeersOpts(t, 2, nil, func(i int, o *Options) {
		if i == 1 {
			o.receiveHook = func(shard.Info) error { return errors.New("disk failed") }
		}
	})
	_, err := backend{peers[0]}.Add(context.Background(), bytes.NewReader(seeded("below rmin", 3<<20)),
		api.AddParams{Name: "f", Chunker: "size-65536", Shard: true, ShardSize: 1 << 20, RMin: 2, RMax: 2})
	if want := "shard 0 confirmed by 1 peers, fewer than rmin 2: "; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("add with one of two receivers failing: %v; want it refused: %s...", err, want)
	}
	waitFor(t, 20*time.Second, func() error { return nothingAdded(peers) })
}
