package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/cluster/clustertest"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ingest"
)

// newTestPeers starts n in-process peers on loopback (real libp2p, real
// Raft, real stores in temp dirs): the fast variant of the process-level
// cluster tests in cmd/shoal.
func newTestPeers(t *testing.T, n int) []*Peer {
	t.Helper()
	return newTestPeersWith(t, n, nil)
}

// newTestPeersWith is newTestPeers with a hook that adjusts each peer's
// config before it starts.
func newTestPeersWith(t *testing.T, n int, tweak func(i int, cfg *config.Config)) []*Peer {
	t.Helper()
	return newTestPeersOpts(t, n, tweak, nil)
}

// newTestPeersOpts is newTestPeersWith with a hook on each peer's Options.
func newTestPeersOpts(t *testing.T, n int, tweak func(i int, cfg *config.Config), tweakOpts func(i int, o *Options)) []*Peer {
	t.Helper()
	var peers []*Peer
	var boot []ma.Multiaddr
	for i := range n {
		p := startTestPeerOpts(t, i, boot, tweak, tweakOpts)
		peers = append(peers, p)
		if i == 0 {
			a, err := ma.NewMultiaddr(p.fullAddrs()[0])
			if err != nil {
				t.Fatal(err)
			}
			boot = []ma.Multiaddr{a}
		}
	}
	waitFor(t, 10*time.Second, func() error {
		ps, err := backend{peers[0]}.Peers(context.Background())
		if err != nil {
			return err
		}
		alive := 0
		for _, p := range ps {
			if p.Alive {
				alive++
			}
		}
		if alive != n {
			return fmt.Errorf("%d of %d peers alive", alive, n)
		}
		return nil
	})
	// Every peer has done its start-up sweep of its own unfinished adds,
	// as a peer that has run for a while has: a test of a failed add
	// must see that add's own rollback, not the sweep's.
	for _, p := range peers {
		select {
		case <-p.ownReaped:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no start-up sweep of its adds after 10 s", p.cfg.PeerName)
		}
	}
	// A peer learns the addresses of members that joined after it from
	// the leader, within an election timeout: until then it cannot reach
	// them (a verify asked through it would find them unreachable). And a
	// peer still catching up with the Raft log does not yet count the
	// members that joined after it as members, so it refuses their
	// streams (TestTrackerFetchesWhatAppears saw a tracker ask one peer
	// of two).
	waitFor(t, 10*time.Second, func() error {
		for _, p := range peers {
			for _, q := range peers {
				if p != q && len(p.host.PeerAddrs(q.ID())) == 0 {
					return fmt.Errorf("%s has no address of %s", p.cfg.PeerName, q.cfg.PeerName)
				}
				if p != q && !p.host.Allowed(q.ID()) {
					return fmt.Errorf("%s does not let %s in yet", p.cfg.PeerName, q.cfg.PeerName)
				}
			}
		}
		return nil
	})
	return peers
}

// startTestPeer starts peer i, joining the cluster through boot (none:
// a new cluster).
func startTestPeer(t *testing.T, i int, boot []ma.Multiaddr, tweak func(i int, cfg *config.Config)) *Peer {
	t.Helper()
	return startTestPeerOpts(t, i, boot, tweak, nil)
}

// startTestPeerOpts is startTestPeer with a hook on the peer's Options.
func startTestPeerOpts(t *testing.T, i int, boot []ma.Multiaddr, tweak func(i int, cfg *config.Config), tweakOpts func(i int, o *Options)) *Peer {
	t.Helper()
	dir := filepath.Join(t.TempDir(), fmt.Sprintf("peer%d", i))
	cfg := clustertest.Config(i)
	if tweak != nil {
		tweak(i, &cfg)
	}
	if _, err := config.Init(dir, cfg); err != nil {
		t.Fatal(err)
	}
	if beforeStart != nil {
		beforeStart(t, i, dir)
	}
	opts := Options{Bootstrap: boot, Logger: testLogger(t, i)}
	if tweakOpts != nil {
		tweakOpts(i, &opts)
	}
	p, err := Start(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("start peer%d: %v", i, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// beforeStart, when set, runs on each test peer's initialised directory
// before the peer starts (TestShedOnFullDisk mounts a small store).
var beforeStart func(t *testing.T, i int, dir string)

func waitFor(t *testing.T, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func seeded(seed string, n int) []byte {
	r := rand.NewChaCha8(sha256.Sum256([]byte(seed)))
	b := make([]byte, n)
	r.Read(b)
	return b
}

// TestAddReplicatesAndUnpins: a file added through one peer is stored on
// rmax peers, verified block by block, and removed from all on unpin.
func TestAddReplicatesAndUnpins(t *testing.T) {
	peers := newTestPeers(t, 3)
	ctx := context.Background()
	data := seeded("shoal-golden-1048577", 1048577)
	res, err := backend{peers[1]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "f", RMin: 2, RMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.CID != "QmdSaj6ufqXz4byUKYGoeZ2gohe4K7H74eeqsWjw49vkUQ" {
		t.Fatalf("root %s", res.CID)
	}
	if len(res.Pin.Allocations) != 2 || res.Pin.Allocations[0] != peers[1].ID().String() {
		t.Fatalf("allocations %v: want 2, the adding peer first", res.Pin.Allocations)
	}
	root, _ := cid.Decode(res.CID)
	waitFor(t, 10*time.Second, func() error {
		st, err := backend{peers[0]}.Status(ctx, res.CID, false)
		if err != nil {
			return err
		}
		for id, ps := range st.Peers {
			if ps.Status != api.StatusPinned {
				return fmt.Errorf("%s: %s %s", id, ps.Status, ps.Error)
			}
		}
		return nil
	})
	holders := 0
	for _, p := range peers {
		if p.store.Has(root) {
			holders++
			if !slices.Contains(res.Pin.Allocations, p.ID().String()) {
				t.Errorf("%s holds the file but is not allocated", p.cfg.PeerName)
			}
		}
	}
	if holders != 2 {
		t.Fatalf("%d peers hold the file, want 2", holders)
	}
	// Every allocated peer has the whole DAG: read it back by walking.
	for _, p := range peers {
		if !p.store.Has(root) {
			continue
		}
		n := 0
		if err := walkDAG(root, p.store.Get, func(b dag.Block) error { n++; return nil }); err != nil {
			t.Fatalf("%s: %v", p.cfg.PeerName, err)
		}
		if n != 6 {
			t.Fatalf("%s holds %d blocks, want 6", p.cfg.PeerName, n)
		}
	}
	if _, err := (backend{peers[2]}).Unpin(ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		for _, p := range peers {
			if p.store.Used() != 0 {
				return fmt.Errorf("%s still uses %d bytes", p.cfg.PeerName, p.store.Used())
			}
		}
		return nil
	})
	if _, err := (backend{peers[0]}).Status(ctx, res.CID, false); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("status after unpin: %v, want not found", err)
	}
}

// TestPinErrors: bad requests fail with the API's sentinels and change
// nothing.
func TestPinErrors(t *testing.T) {
	peers := newTestPeers(t, 2)
	b := backend{peers[0]}
	ctx := context.Background()
	c := "QmdSaj6ufqXz4byUKYGoeZ2gohe4K7H74eeqsWjw49vkUQ"
	tests := []struct {
		req  api.PinRequest
		want error
		msg  string
	}{
		{api.PinRequest{CID: "not-a-cid"}, api.ErrBadRequest, `bad request: "not-a-cid" is not a CID`},
		{api.PinRequest{CID: c, RMin: 3, RMax: 2}, api.ErrBadRequest, "bad request: replication minimum 3 is above the maximum 2"},
		{api.PinRequest{CID: c, RMin: -2, RMax: 2}, api.ErrBadRequest, "bad request: replication minimum -2: use -1 (every peer) or a count of at least 1"},
		{api.PinRequest{CID: c, RMin: 3, RMax: 3}, api.ErrConflict, "conflict: pin " + c + ": not enough peers: 2 of 2 peers can take 0 bytes, replication minimum is 3"},
	}
	for _, tt := range tests {
		_, err := b.Pin(ctx, tt.req)
		if !errors.Is(err, tt.want) || err.Error() != tt.msg {
			t.Errorf("%+v: error %v, want %q", tt.req, err, tt.msg)
		}
	}
	if pins, _ := b.Pins(ctx); len(pins) != 0 {
		t.Fatalf("state changed: %v", pins)
	}
	if err := b.RemovePeer(ctx, "12D3KooWBadPeer"); !errors.Is(err, api.ErrBadRequest) {
		t.Fatalf("remove malformed peer: %v", err)
	}
}

// TestAddKeepsBlocksOfAPinThatMayCommit: an add whose pin reached the
// leader's log but did not commit before the caller gave up fails, and
// keeps its blocks: the pin commits once the cluster heals, and the peer
// it names holds the file. (The chaos run found the add deleting them.)
func TestAddKeepsBlocksOfAPinThatMayCommit(t *testing.T) {
	// A lease long enough that the leader still leads when the add,
	// slow under -race, proposes its pin, and shorter than the add's
	// time.
	peers := newTestPeersWith(t, 2, func(_ int, cfg *config.Config) {
		cfg.Consensus.HeartbeatTimeout = config.Duration(2 * time.Second)
		cfg.Consensus.ElectionTimeout = config.Duration(2 * time.Second)
		cfg.Consensus.LeaderLeaseTimeout = config.Duration(2 * time.Second)
	})
	var leader, other *Peer
	waitFor(t, 10*time.Second, func() error {
		for i, p := range peers {
			if p.cons.Leader() == p.ID() {
				leader, other = p, peers[1-i]
				return nil
			}
		}
		return errors.New("no leader")
	})
	b := backend{leader}
	ctx := context.Background()
	if _, err := b.recentSurvey(ctx); err != nil { // the add allocates from it, with no RPC
		t.Fatal(err)
	}
	// A leader of two cut off from the other cannot commit; the entry
	// it appends stays in its log, the longer one, so it commits once
	// the two meet again whoever leads. The add's first attempt ends
	// when the leader's lease runs out (outcome unknown), its retry when
	// the add's time does, with no leader (a plain failure on its own).
	leader.host.Block(other.ID())
	other.host.Block(leader.ID())
	data := seeded("shoal-golden-1048577", 1048577)
	actx, cancel := context.WithTimeout(ctx, 4*time.Second)
	_, err := b.Add(actx, bytes.NewReader(data), api.AddParams{Name: "f", RMin: 1, RMax: 1})
	cancel()
	var unsure maybeCommitted
	if !errors.As(err, &unsure) || !strings.Contains(err.Error(), "may still take effect") {
		t.Fatalf("add on a cut-off leader: %v, want an unknown outcome", err)
	}
	root, _ := cid.Decode("QmdSaj6ufqXz4byUKYGoeZ2gohe4K7H74eeqsWjw49vkUQ")
	if !leader.store.Has(root) {
		t.Fatal("the failed add deleted the blocks its pin may still need")
	}
	leader.host.Unblock(other.ID())
	other.host.Unblock(leader.ID())
	waitFor(t, 20*time.Second, func() error {
		st, err := backend{other}.Status(ctx, root.String(), false)
		if err != nil {
			return err
		}
		if got := st.Peers[leader.ID().String()].Status; got != api.StatusPinned {
			return fmt.Errorf("on the adding peer: %s", got)
		}
		return nil
	})
	n := 0
	if err := walkDAG(root, leader.store.Get, func(dag.Block) error { n++; return nil }); err != nil || n != 6 {
		t.Fatalf("the adding peer holds %d blocks (%v), want 6", n, err)
	}
}

func testLogger(t *testing.T, i int) *log.Logger {
	return log.New(testWriter{t}, fmt.Sprintf("peer%d: ", i), 0)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// TestShardedAdd: a file added with --shard is cut into shards that each
// land on exactly rmax peers, the root is the plain add's root, status
// reports every shard healthy, and unpinning frees every peer's disk.
func TestShardedAdd(t *testing.T) {
	peers := newTestPeers(t, 3)
	ctx := context.Background()
	data := seeded("sharded", 3<<20+4321)
	want, err := (func() (string, error) {
		p, err := dag.Options{Chunker: "size-65536"}.Params()
		if err != nil {
			return "", err
		}
		in, err := ingest.New(ingest.Config{Params: p})
		if err != nil {
			return "", err
		}
		root, err := in.File(ctx, bytes.NewReader(data), ingest.Discard)
		return root.CID.String(), err
	})()
	if err != nil {
		t.Fatal(err)
	}
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "big", Chunker: "size-65536",
		Shard: true, ShardSize: 1 << 20, RMin: 2, RMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.CID != want {
		t.Fatalf("sharded root %s, plain root %s", res.CID, want)
	}
	if len(res.Shards) < 4 {
		t.Fatalf("%d shards for 3 MiB at 1 MiB each", len(res.Shards))
	}
	var offset uint64
	for _, sh := range res.Shards {
		c, _ := cid.Decode(sh.CID)
		holders := 0
		for _, p := range peers {
			if p.store.Has(c) {
				holders++
				if !slices.Contains(sh.Allocations, p.ID().String()) {
					t.Errorf("shard %d on unallocated %s", sh.Index, p.cfg.PeerName)
				}
			}
		}
		if holders != 2 || len(sh.Allocations) != 2 {
			t.Fatalf("shard %d on %d peers, allocated to %d; want 2", sh.Index, holders, len(sh.Allocations))
		}
		if sh.Offset != offset || sh.Size > 1<<20 {
			t.Fatalf("shard %d: offset %d (want %d), size %d", sh.Index, sh.Offset, offset, sh.Size)
		}
		offset += sh.Length
	}
	if offset != uint64(len(data)) {
		t.Fatalf("shards cover %d bytes of %d", offset, len(data))
	}
	var st api.PinStatus
	waitFor(t, 5*time.Second, func() (err error) { // peer 2 applies the commit a heartbeat later
		st, err = backend{peers[2]}.Status(ctx, res.CID, false)
		return err
	})
	if st.Status != api.OverallPinned || st.Summary != fmt.Sprintf("%d shards, %d healthy, rmin 2 met on all", len(res.Shards), len(res.Shards)) {
		t.Fatalf("status %s: %s", st.Status, st.Summary)
	}
	// Unpinning a shard directly is refused and names the root.
	if _, err := (backend{peers[1]}).Unpin(ctx, res.Shards[0].CID); !errors.Is(err, api.ErrBadRequest) ||
		!strings.Contains(err.Error(), "unpin "+res.CID+" instead") {
		t.Fatalf("unpin of a shard: %v", err)
	}
	if _, err := (backend{peers[1]}).Unpin(ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		for _, p := range peers {
			if p.store.Used() != 0 {
				return fmt.Errorf("%s still uses %d bytes", p.cfg.PeerName, p.store.Used())
			}
		}
		return nil
	})
}

// bufWriter collects a Cat for tests.
type bufWriter struct{ bytes.Buffer }

func (*bufWriter) SetLength(int64) {}

// TestShardedCapacityAndSharing: a peer with little room never receives
// more than it can hold, shards are sized down to its room; two files that
// share their first shard store it once, and unpinning one leaves the
// other whole.
func TestShardedCapacityAndSharing(t *testing.T) {
	const small = 9 << 20
	peers := newTestPeersWith(t, 3, func(i int, cfg *config.Config) {
		if i == 2 {
			cfg.Capacity = fmt.Sprint(small)
		}
	})
	ctx := context.Background()
	b := backend{peers[0]}
	common := seeded("common", 2<<20)
	fileA := append(bytes.Clone(common), seeded("tail-a", 6<<20)...)
	fileB := append(bytes.Clone(common), seeded("tail-b", 3<<20)...)
	params := api.AddParams{Chunker: "size-65536", Shard: true, ShardSize: 2<<20 + 64<<10, RMin: 2, RMax: 3}
	params.Name = "a"
	resA, err := b.Add(ctx, bytes.NewReader(fileA), params)
	if err != nil {
		t.Fatal(err)
	}
	if used := peers[2].store.Used(); used > small {
		t.Fatalf("the small peer holds %d bytes, capacity %d", used, small)
	}
	params.Name = "b"
	resB, err := b.Add(ctx, bytes.NewReader(fileB), params)
	if err != nil {
		t.Fatal(err)
	}
	if used := peers[2].store.Used(); used > small {
		t.Fatalf("the small peer holds %d bytes, capacity %d", used, small)
	}
	if resA.Shards[0].CID != resB.Shards[0].CID {
		t.Fatalf("the files' first shards differ: %s, %s", resA.Shards[0].CID, resB.Shards[0].CID)
	}
	// The parts of a alone, each stored somewhere now.
	ofB := map[string]bool{resB.ClusterDAG: true}
	for _, sh := range resB.Shards {
		ofB[sh.CID] = true
	}
	onlyA := []string{resA.ClusterDAG}
	for _, sh := range resA.Shards {
		onlyA = append(onlyA, sh.CID)
	}
	onlyA = slices.DeleteFunc(onlyA, func(k string) bool { return ofB[k] })
	for _, k := range onlyA {
		if !slices.ContainsFunc(peers, func(p *Peer) bool { return p.store.HasShard(k) }) {
			t.Fatalf("no peer stores %s of file a", k)
		}
	}
	if _, err := b.Unpin(ctx, resA.CID); err != nil {
		t.Fatal(err)
	}
	// Every part of a alone goes from every store. Then each peer, once its
	// state no longer pins a, walks its whole state and store (sync): by
	// then every tracker had the chance to delete the shared shard too,
	// and must not have.
	waitFor(t, 10*time.Second, func() error {
		for _, p := range peers {
			for _, k := range onlyA {
				if p.store.HasShard(k) {
					return fmt.Errorf("%s still stores %s of the unpinned file a", p.cfg.PeerName, k)
				}
			}
		}
		return nil
	})
	rootA := cid.MustParse(resA.CID)
	for _, p := range peers {
		waitFor(t, 5*time.Second, func() error {
			if _, ok := p.cons.State().Get(rootA); ok {
				return fmt.Errorf("%s's state still pins a", p.cfg.PeerName)
			}
			return nil
		})
		if err := p.tracker.sync(ctx); err != nil {
			t.Fatalf("%s: sync: %v", p.cfg.PeerName, err)
		}
	}
	// Each peer b's pin allocates the shared shard to still stores it
	// (a's pin may have put it on others, which may drop it now).
	pinB, ok := peers[0].cons.State().Get(cid.MustParse(resB.CID))
	if !ok || len(pinB.Shards[0].Allocations) == 0 {
		t.Fatalf("b's pin %+v, %v: no holders of its first shard", pinB, ok)
	}
	shared := pinB.Shards[0].CID.String()
	for _, p := range peers {
		if slices.Contains(pinB.Shards[0].Allocations, p.ID()) && !p.store.HasShard(shared) {
			t.Fatalf("unpinning a deleted the shard %s it shares with b from %s, which b's pin allocates it to",
				shared, p.cfg.PeerName)
		}
	}
	for _, p := range peers[1:] {
		var got bufWriter
		waitFor(t, 5*time.Second, func() error {
			got.Reset()
			return backend{p}.Cat(ctx, resB.CID, 0, -1, &got)
		})
		if !bytes.Equal(got.Bytes(), fileB) {
			t.Fatalf("%s reads back %d bytes that differ from file b", p.cfg.PeerName, got.Len())
		}
	}
}

// TestShardSizedToReceiverRoom: when every peer has less room than the
// shard size asked for, each shard is cut to the room of the peer it goes
// to (shardadd.go: the open shard's limit is the smallest free space of
// its receivers), so the add succeeds where shards of the full size would
// be refused by every receiver.
func TestShardSizedToReceiverRoom(t *testing.T) {
	const room = 6 << 20
	peers := newTestPeersWith(t, 3, func(i int, cfg *config.Config) { cfg.Capacity = fmt.Sprint(room) })
	ctx := context.Background()
	data := seeded("receiver room", 10<<20)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data),
		api.AddParams{Name: "room", Chunker: "size-65536", Shard: true, ShardSize: 16 << 20, RMin: 1, RMax: 1})
	if err != nil {
		t.Fatalf("add of 10 MiB onto three peers of 6 MiB, shard size 16 MiB: %v", err)
	}
	if len(res.Shards) < 2 {
		t.Fatalf("%d shard(s); 10 MiB does not fit one peer of 6 MiB", len(res.Shards))
	}
	for _, sh := range res.Shards {
		if sh.Size > room {
			t.Fatalf("shard %d takes %d bytes, more than a peer's room %d", sh.Index, sh.Size, room)
		}
	}
	for _, p := range peers {
		if used := p.store.Used(); used > room {
			t.Fatalf("%s holds %d bytes, capacity %d", p.cfg.PeerName, used, room)
		}
	}
	var got bufWriter
	waitFor(t, 5*time.Second, func() error { // peer1's state may lag the leader's
		got.Reset()
		return backend{peers[1]}.Cat(ctx, res.CID, 0, -1, &got)
	})
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("peer1 reads back %d bytes that differ from the file", got.Len())
	}
}

// TestShardedAddBadInput: refused before any data moves, state unchanged.
func TestShardedAddBadInput(t *testing.T) {
	peers := newTestPeers(t, 2)
	b := backend{peers[0]}
	ctx := context.Background()
	tests := []struct {
		p    api.AddParams
		want error
		msg  string
	}{
		{api.AddParams{Shard: true, ShardSize: 1000}, api.ErrBadRequest, "shard size 1000 bytes is below one block"},
		{api.AddParams{Shard: true, RMin: 3, RMax: 3}, api.ErrConflict, "not enough peers"},
		{api.AddParams{Shard: true, RMin: -1, RMax: -1}, api.ErrBadRequest, "needs replication counts"},
	}
	for _, tt := range tests {
		_, err := b.Add(ctx, bytes.NewReader(seeded("x", 1<<20)), tt.p)
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%+v: %v, want %q", tt.p, err, tt.msg)
		}
	}
	waitFor(t, 5*time.Second, func() error {
		if n := len(peers[0].cons.State().Adds()); n != 0 {
			return fmt.Errorf("%d adds left in progress", n)
		}
		return nil
	})
	if pins, _ := b.Pins(ctx); len(pins) != 0 {
		t.Fatalf("pins after refused adds: %v", pins)
	}
}

// TestTrackerFetchesWhatAppears: a pin of content nobody holds is a
// pin_error on every peer, with one message; once a peer adds that
// content, the pin op it commits makes the others fetch it at once,
// without waiting out their backoff.
func TestTrackerFetchesWhatAppears(t *testing.T) {
	peers := newTestPeers(t, 3)
	ctx := context.Background()
	data := seeded("shoal-golden-1048577", 1048577)
	const root = "QmdSaj6ufqXz4byUKYGoeZ2gohe4K7H74eeqsWjw49vkUQ"
	if _, err := (backend{peers[2]}).Pin(ctx, api.PinRequest{CID: root, Name: "later", RMin: -1, RMax: -1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		st, err := backend{peers[1]}.Status(ctx, root, false)
		if err != nil {
			return err
		}
		for id, ps := range st.Peers {
			if ps.Status != api.StatusPinError || ps.Error != "no peer holds it (asked 2)" {
				return fmt.Errorf("%s: %s %q", id, ps.Status, ps.Error)
			}
		}
		return nil
	})
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "now", RMin: -1, RMax: -1})
	if err != nil || res.CID != root {
		t.Fatalf("add: %v %s", err, res.CID)
	}
	waitFor(t, 5*time.Second, func() error {
		for _, p := range peers {
			if st := p.tracker.status(cid.MustParse(root)); st.Status != api.StatusPinned {
				return fmt.Errorf("%s: %s %q", p.cfg.PeerName, st.Status, st.Error)
			}
		}
		return nil
	})
}
