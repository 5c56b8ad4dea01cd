package consensus

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/p2p"
)

// fastConfig has the short timeouts the cluster tests run with. On two
// shared cores under -race, 100ms heartbeats caused spurious elections;
// 200ms did not.
func fastConfig(dir string) Config {
	c := DefaultConfig()
	c.DataDir = dir
	c.HeartbeatTimeout = 200 * time.Millisecond
	c.ElectionTimeout = 200 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 10 * time.Millisecond
	c.WaitForLeaderTimeout = 3 * time.Second
	c.ShutdownTimeout = 2 * time.Second
	c.SnapshotInterval = time.Hour
	return c
}

// testPeer is one peer of an in-process cluster: a real libp2p host on
// loopback and a real Raft with its state in a temp dir. It survives
// restarts: same key, same directory. Each start listens on a port the
// kernel picks (a port given back at a stop may be taken by then), so a
// test that restarts a peer tells the others its new address
// (tellAddrs), as a daemon's peerstore file and identify do.
type testPeer struct {
	t      testing.TB
	name   string
	key    crypto.PrivKey
	secret []byte
	dir    string
	cfg    Config
	host   *p2p.Host
	c      *Consensus
}

func (p *testPeer) id() peer.ID {
	id, err := peer.IDFromPrivateKey(p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	return id
}

func newTestPeer(t testing.TB, name string, secret []byte, mutate func(*Config)) *testPeer {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPeer{t: t, name: name, key: key, secret: secret, dir: t.TempDir()}
	p.cfg = fastConfig(p.dir)
	p.cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Error, Output: testWriter{t}})
	if mutate != nil {
		mutate(&p.cfg)
	}
	p.start()
	t.Cleanup(p.stop)
	return p
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

func (p *testPeer) start() {
	p.t.Helper()
	hc := p2p.DefaultConfig()
	hc.ListenAddrs = []ma.Multiaddr{ma.StringCast(anyLoopbackPort)}
	hc.PrivKey = p.key
	hc.Secret = p.secret
	hc.JoinHookTimeout = 5 * time.Second
	h, err := p2p.New(hc, nil)
	if err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
	c, err := New(h, p.cfg)
	if err != nil {
		_ = h.Close()
		p.t.Fatalf("%s: %v", p.name, err)
	}
	// The daemon's wiring.
	h.SetMembership(c)
	h.SetOnJoin(func(ctx context.Context, id peer.ID, _ []ma.Multiaddr) error { return c.AddPeer(ctx, id) })
	p.host, p.c = h, c
}

// stop closes the consensus, then the host; it is idempotent.
func (p *testPeer) stop() {
	if p.c == nil {
		return
	}
	if err := p.c.Close(); err != nil {
		p.t.Errorf("%s: close consensus: %v", p.name, err)
	}
	if err := p.host.Close(); err != nil {
		p.t.Errorf("%s: close host: %v", p.name, err)
	}
	p.c, p.host = nil, nil
}

func (p *testPeer) restart() {
	p.stop()
	p.start()
}

// anyLoopbackPort is where every test host listens: the kernel picks the
// port and the host's Addrs tell it.
const anyLoopbackPort = "/ip4/127.0.0.1/tcp/0"

// tellAddrs gives each of others p's current addresses, for a p that
// restarted on a new port and will not dial them first.
func (p *testPeer) tellAddrs(others ...*testPeer) {
	for _, q := range others {
		if q != p && q.host != nil {
			q.host.AddAddrs(p.id(), p.host.Addrs())
		}
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newCluster starts n peers: the first bootstraps, the second joins it,
// and the others join through the second (a follower), so that joins and
// AddPeer are forwarded to the leader.
func newCluster(t testing.TB, n int, mutate func(*Config)) []*testPeer {
	t.Helper()
	secret := make([]byte, p2p.SecretSize)
	_, _ = rand.Read(secret)
	peers := make([]*testPeer, n)
	for i := range peers {
		peers[i] = newTestPeer(t, fmt.Sprintf("peer%d", i), secret, mutate)
	}
	if err := peers[0].c.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	if l, err := peers[0].c.WaitForLeader(ctxT(t, 5*time.Second)); err != nil || l != peers[0].id() {
		t.Fatalf("bootstrap peer: leader %s, %v", l, err)
	}
	for i := 1; i < n; i++ {
		via := peers[min(i-1, 1)]
		if err := peers[i].host.Join(ctxT(t, 10*time.Second), via.host.Addrs()[0]); err != nil {
			t.Fatalf("peer%d joins via %s: %v", i, via.name, err)
		}
	}
	for _, p := range peers {
		waitFor(t, 5*time.Second, fmt.Sprintf("%s sees %d members", p.name, n), func() bool {
			m, err := p.c.Peers(context.Background())
			return err == nil && len(m) == n && p.c.Leader() != ""
		})
	}
	return peers
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %s waiting until %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func leaderOf(t testing.TB, peers []*testPeer) (leader *testPeer, others []*testPeer) {
	t.Helper()
	for _, p := range peers {
		if p.c != nil && p.c.Leader() == p.id() {
			leader = p
		} else if p.c != nil {
			others = append(others, p)
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	return leader, others
}

func testCID(i int) cid.Cid {
	h, _ := mh.Sum([]byte(fmt.Sprintf("content %d", i)), mh.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, h)
}

func pinN(t testing.TB, via *testPeer, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		p := NewPin(testCID(i))
		p.Name = fmt.Sprintf("file-%d", i)
		if err := via.c.Commit(ctxT(t, 5*time.Second), PinOp(p, time.Now())); err != nil {
			t.Fatalf("pin %d via %s: %v", i, via.name, err)
		}
	}
}

// waitSameState waits until every running peer holds want pins, equal on all.
func waitSameState(t testing.TB, peers []*testPeer, want int) {
	t.Helper()
	for _, p := range peers {
		if p.c == nil {
			continue
		}
		waitFor(t, 5*time.Second, fmt.Sprintf("%s holds %d pins", p.name, want), func() bool { return p.c.State().Len() == want })
	}
	var ref []Pin
	for _, p := range peers {
		if p.c == nil {
			continue
		}
		if ref == nil {
			ref = p.c.State().Pins()
			continue
		}
		got := p.c.State().Pins()
		for i := range ref {
			if ref[i].CID != got[i].CID || !ref[i].Updated.Equal(got[i].Updated) || ref[i].Name != got[i].Name {
				t.Fatalf("%s differs at pin %d: %+v vs %+v", p.name, i, got[i], ref[i])
			}
		}
	}
}

func TestClusterCommitsThroughFollowerAndFailsOver(t *testing.T) {
	peers := newCluster(t, 3, nil)
	leader, followers := leaderOf(t, peers)

	// A pin committed through a follower is visible on all three.
	pinN(t, followers[0], 0, 5)
	waitSameState(t, peers, 5)
	// Apply's error crosses the forwarding intact.
	err := followers[1].c.Commit(ctxT(t, 5*time.Second), UnpinOp(testCID(999), time.Now()))
	if !errors.Is(err, ErrNotPinned) {
		t.Fatalf("unpin of an unknown CID via a follower = %v, want ErrNotPinned", err)
	}
	if err := followers[1].c.Commit(ctxT(t, 5*time.Second), UnpinOp(testCID(4), time.Now())); err != nil {
		t.Fatal(err)
	}
	waitSameState(t, peers, 4)

	// Stop the leader: the others elect a new one and commits resume.
	start := time.Now()
	leader.stop()
	closeTook := time.Since(start)
	for _, p := range followers {
		waitFor(t, 2*p.cfg.ElectionTimeout+2*p.cfg.HeartbeatTimeout, p.name+" knows a new leader", func() bool {
			l := p.c.Leader()
			return l != "" && l != leader.id()
		})
	}
	t.Logf("closing the leader took %s; both followers knew the new leader %s after %s",
		closeTook, followers[0].c.Leader().ShortString(), time.Since(start))
	pinN(t, followers[0], 100, 102)
	waitSameState(t, followers, 6)
}

func TestClusterRestartKeepsState(t *testing.T) {
	peers := newCluster(t, 3, func(c *Config) { c.SnapshotThreshold = 16; c.SnapshotsRetained = 1 })
	_, followers := leaderOf(t, peers)
	pinN(t, followers[0], 0, 20)
	// Snapshot on one peer, so that restart goes through Restore and the
	// log tail there, and through the log alone on the others.
	if err := peers[0].c.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	pinN(t, followers[1], 20, 25)
	waitSameState(t, peers, 25)
	want := peers[0].c.State().Pins()

	for _, p := range peers {
		p.stop()
	}
	for _, p := range peers {
		p.start()
	}
	// Addresses live in memory only (the daemon will keep a peer file):
	// seed them as it will.
	for _, p := range peers {
		for _, q := range peers {
			if p != q {
				p.host.AddAddrs(q.id(), q.host.Addrs())
			}
		}
	}
	for _, p := range peers {
		if _, err := p.c.WaitForLeader(ctxT(t, 5*time.Second)); err != nil {
			t.Fatalf("%s after restart: %v", p.name, err)
		}
	}
	waitSameState(t, peers, 25)
	for _, p := range peers {
		got := p.c.State().Pins()
		for i := range want {
			if got[i].CID != want[i].CID || !got[i].Created.Equal(want[i].Created) {
				t.Fatalf("%s after restart: pin %d is %+v, want %+v", p.name, i, got[i], want[i])
			}
		}
	}
	pinN(t, peers[2], 25, 26)
	waitSameState(t, peers, 26)
}

// partition cuts the connections between group a and group b both ways.
func partition(a, b []*testPeer, cut bool) {
	for _, p := range a {
		for _, q := range b {
			if cut {
				p.host.Block(q.id())
				q.host.Block(p.id())
			} else {
				p.host.Unblock(q.id())
				q.host.Unblock(p.id())
			}
		}
	}
}

func TestMinorityCannotCommit(t *testing.T) {
	peers := newCluster(t, 3, nil)
	leader, followers := leaderOf(t, peers)
	pinN(t, leader, 0, 3)
	waitSameState(t, peers, 3)

	// Cut the leader off: it is a minority of one.
	start := time.Now()
	partition([]*testPeer{leader}, followers, true)
	lost := NewPin(testCID(500))
	err := leader.c.Commit(ctxT(t, 10*time.Second), PinOp(lost, time.Now()))
	if err == nil {
		t.Fatal("the cut-off leader committed")
	}
	if !errors.Is(err, ErrOutcomeUnknown) && !errors.Is(err, ErrNoLeader) {
		t.Fatalf("commit on the minority = %v, want ErrOutcomeUnknown or ErrNoLeader", err)
	}
	t.Logf("commit on the cut-off leader failed after %s: %v", time.Since(start), err)

	// The majority elects a leader and commits.
	took := waitFor(t, 5*time.Second, "the majority elects a leader", func() bool {
		l := followers[0].c.Leader()
		return l != "" && l != leader.id() && followers[1].c.Leader() == l
	})
	t.Logf("the majority has a new leader %s after the partition", took)
	pinN(t, followers[1], 3, 5)

	// A follower cut off alone cannot commit either.
	_, majority := leaderOf(t, followers)
	lone := majority[0]
	rest := []*testPeer{followers[0], followers[1]}
	if rest[0] == lone {
		rest = rest[1:]
	} else {
		rest = rest[:1]
	}
	partition([]*testPeer{lone}, rest, true)
	cstart := time.Now()
	err = lone.c.Commit(ctxT(t, time.Second), PinOp(NewPin(testCID(600)), time.Now()))
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("commit on a lone follower = %v, want ErrNoLeader", err)
	}
	t.Logf("commit on a lone follower failed after %s: %v", time.Since(cstart), err)

	// Heal: everyone converges on the majority's history, without the
	// entries the minorities proposed.
	partition([]*testPeer{leader}, followers, false)
	partition([]*testPeer{lone}, rest, false)
	waitSameState(t, peers, 5)
	for _, p := range peers {
		for _, c := range []cid.Cid{testCID(500), testCID(600)} {
			if _, ok := p.c.State().Get(c); ok {
				t.Fatalf("%s holds %s, proposed by a minority", p.name, c)
			}
		}
	}
	pinN(t, leader, 5, 6)
	waitSameState(t, peers, 6)
}

func TestNonVoterAndPromotion(t *testing.T) {
	peers := newCluster(t, 4, nil) // Voters = 3
	voters := func(p *testPeer) map[peer.ID]bool {
		m, err := p.c.Peers(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out := map[peer.ID]bool{}
		for _, x := range m {
			out[x.ID] = x.Voter
		}
		return out
	}
	v := voters(peers[0])
	if len(v) != 4 || v[peers[3].id()] || !v[peers[0].id()] || !v[peers[1].id()] || !v[peers[2].id()] {
		t.Fatalf("membership %v: want peers 0-2 voters and peer3 a non-voter", v)
	}
	// Non-voters replicate and may commit (through the leader).
	pinN(t, peers[3], 0, 2)
	waitSameState(t, peers, 2)

	// Removing a voter promotes the non-voter; ask through a follower.
	leader, followers := leaderOf(t, peers[:3])
	gone, asker := followers[0], followers[1]
	if err := asker.c.RemovePeer(ctxT(t, 5*time.Second), gone.id()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the non-voter is promoted", func() bool {
		v := voters(leader)
		return len(v) == 3 && v[peers[3].id()] && v[asker.id()] && v[leader.id()]
	})
	if leader.c.IsMember(gone.id()) {
		t.Fatal("a removed peer is still a member")
	}
	// A removed peer can no longer open Raft or commit streams.
	gone.stop()
	if err := asker.c.RemovePeer(ctxT(t, 5*time.Second), gone.id()); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("removing a removed peer = %v, want ErrUnknownPeer", err)
	}
	pinN(t, peers[3], 2, 3)
	waitSameState(t, []*testPeer{leader, asker, peers[3]}, 3)
}

// TestCloseWithoutQuorumIsBounded freezes both followers (their hosts
// take Raft streams and never answer, like a stopped process), so the
// leader's Raft blocks in RPCs that only time out after the transport
// timeout, and checks that Close returns within ShutdownTimeout anyway.
func TestCloseWithoutQuorumIsBounded(t *testing.T) {
	peers := newCluster(t, 3, func(c *Config) { c.ShutdownTimeout = time.Second })
	leader, followers := leaderOf(t, peers)
	for _, f := range followers {
		if err := f.c.Close(); err != nil {
			t.Fatal(err)
		}
		f.host.Handle(RaftProtocol, func(s network.Stream) {
			_, _ = io.Copy(io.Discard, s) // read requests, answer none, until reset
			_ = s.Reset()
		})
	}
	errc := make(chan error, 1)
	go func() {
		errc <- leader.c.Commit(context.Background(), PinOp(NewPin(testCID(1)), time.Now()))
	}()
	time.Sleep(50 * time.Millisecond) // let Raft block on the silent followers
	start := time.Now()
	leader.stop()
	took := time.Since(start)
	t.Logf("Close of a leader whose followers froze took %s (transport timeout %s, ShutdownTimeout %s)",
		took, transportTimeout(leader.cfg), leader.cfg.ShutdownTimeout)
	if took > leader.cfg.ShutdownTimeout+500*time.Millisecond {
		t.Fatalf("Close took %s, bound %s", took, leader.cfg.ShutdownTimeout)
	}
	if err := <-errc; err == nil {
		t.Fatal("commit without quorum succeeded")
	}
}

func TestClosedConsensusRefuses(t *testing.T) {
	peers := newCluster(t, 1, nil)
	c := peers[0].c
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.Commit(context.Background(), PinOp(NewPin(testCID(1)), time.Now())); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close = %v, want ErrClosed", err)
	}
	if err := c.AddPeer(context.Background(), peers[0].id()); !errors.Is(err, ErrClosed) {
		t.Fatalf("AddPeer after Close = %v, want ErrClosed", err)
	}
	_ = peers[0].host.Close()
	peers[0].c = nil
}

func TestNoGoroutineLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		peers := newCluster(t, 2, nil)
		pinN(t, peers[1], 0, 3)
		for _, p := range peers {
			p.stop()
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after closing, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
