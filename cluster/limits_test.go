package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/dag"
)

// testLimits are short stream limits, so that the tests below wait for
// deadlines of seconds. The request deadline is well above the idle one,
// so that a test tells which of them ended a stream.
// (An idle timeout of 500 ms cut honest reads of 10 MiB under -race; 1 s did
// on a loaded machine, beside a chaos run.)
var testLimits = streamLimits{request: 5 * time.Second, idle: 2 * time.Second, fetch: 2, read: 2}

// limitsCluster is three peers with testLimits, a plain pin of 12 MiB in
// 1 MiB blocks that only peers[0] holds, and a sharded pin of one 10 MiB
// shard on one peer: each larger than a stream's first yamux window
// (4 MiB, p2p.streamWindow) and the server's write buffer together, so a
// server sending it to a reader that reads nothing blocks.
type limitsCluster struct {
	peers  []*Peer
	pin    consensus.Pin
	blocks []dag.Block // the pin's DAG, as peers[0] stores it, in pre-order
	leaf   dag.Block   // one block of the DAG of more than 512 KiB

	sharded []byte          // the sharded pin's file
	shard   consensus.Shard // its one shard
	holder  *Peer           // the shard's one holder
}

func newLimitsCluster(t *testing.T) limitsCluster {
	t.Helper()
	peers := newTestPeersOpts(t, 3, nil, func(_ int, o *Options) { o.limits = testLimits })
	ctx := context.Background()
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(seeded("limits", 12<<20)),
		api.AddParams{Name: "f", Chunker: "size-1048576", RMin: 1, RMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	root := cid.MustParse(res.CID)
	pin, ok := peers[0].cons.State().Get(root)
	if !ok || len(pin.Allocations) != 1 || pin.Allocations[0] != peers[0].ID() {
		t.Fatalf("pin %s: %+v, want it allocated to peers[0] alone", root, pin)
	}
	lc := limitsCluster{peers: peers, pin: pin}
	if err := walkDAG(root, peers[0].store.Get, func(b dag.Block) error {
		lc.blocks = append(lc.blocks, dag.Block{CID: b.CID, Data: bytes.Clone(b.Data)})
		if len(b.Data) > 512<<10 && !lc.leaf.CID.Defined() {
			lc.leaf = lc.blocks[len(lc.blocks)-1]
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(lc.blocks) != 13 || !lc.leaf.CID.Defined() {
		t.Fatalf("%d blocks, leaf %v: want 13 blocks, 1 MiB leaves", len(lc.blocks), lc.leaf.CID)
	}

	lc.sharded = seeded("limits-sharded", 10<<20)
	res, err = backend{peers[0]}.Add(ctx, bytes.NewReader(lc.sharded),
		api.AddParams{Name: "s", Shard: true, ShardSize: 16 << 20, RMin: 1, RMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	spin, ok := peers[0].cons.State().Get(cid.MustParse(res.CID))
	if !ok || len(spin.Shards) != 1 || len(spin.Shards[0].Allocations) != 1 {
		t.Fatalf("sharded pin %s: %+v, want one shard on one peer", res.CID, spin)
	}
	lc.shard = spin.Shards[0]
	for _, p := range peers {
		if p.ID() == lc.shard.Allocations[0] {
			lc.holder = p
		}
	}
	return lc
}

// fetchAll fetches the pin from from and fails unless every block comes,
// byte for byte, in pre-order.
func (lc limitsCluster) fetchAll(ctx context.Context, p *Peer, from peer.ID) error {
	var got []dag.Block
	if err := p.fetch(ctx, from, lc.pin.CID, func(b dag.Block) error {
		got = append(got, dag.Block{CID: b.CID, Data: bytes.Clone(b.Data)})
		return nil
	}); err != nil {
		return err
	}
	if len(got) != len(lc.blocks) {
		return fmt.Errorf("fetched %d blocks, want %d", len(got), len(lc.blocks))
	}
	for i, b := range got {
		if !b.CID.Equals(lc.blocks[i].CID) || !bytes.Equal(b.Data, lc.blocks[i].Data) {
			return fmt.Errorf("fetched block %d is %s, want %s", i, b.CID, lc.blocks[i].CID)
		}
	}
	return nil
}

// readShard reads the sharded pin's shard from its holder and fails
// unless it holds the file's bytes.
func (lc limitsCluster) readShard(ctx context.Context, p *Peer) error {
	sc, err := p.openRemoteShard(ctx, lc.holder.ID(), lc.shard)
	if err != nil {
		return err
	}
	defer sc.close()
	var buf bytes.Buffer
	if _, err := copyShard(sc, lc.shard, 0, lc.shard.Length, &buf); err != nil {
		return err
	}
	if !bytes.Equal(buf.Bytes(), lc.sharded) {
		return fmt.Errorf("read %d bytes, not the file's %d", buf.Len(), len(lc.sharded))
	}
	return nil
}

// stall opens proto from p to to and sends req; it reads the status byte
// when ok (the server serves the stream) and then reads nothing.
func stall(t *testing.T, p *Peer, to peer.ID, proto protocol.ID, req string, ok bool) network.Stream {
	t.Helper()
	s, err := p.host.NewStream(context.Background(), to, proto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Reset() })
	if _, err := s.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	if ok {
		var st [1]byte
		if _, err := io.ReadFull(s, st[:]); err != nil || st[0] != 0 {
			t.Fatalf("status %d, %v: want 0 (served)", st[0], err)
		}
	}
	return s
}

// assertReset fails unless s was reset by the server before it sent
// all of want bytes.
func assertReset(t *testing.T, s network.Stream, want int) {
	t.Helper()
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, s)
	var se *network.StreamError
	if !errors.As(err, &se) || !se.Remote || !errors.Is(err, network.ErrReset) {
		t.Fatalf("read of the stalled stream ended with %v after %d bytes, want a reset by the server", err, n)
	}
	if n >= int64(want) {
		t.Fatalf("the stalled stream got %d bytes, the whole answer (%d)", n, want)
	}
}

// TestStalledClientCostsOneSlot: for each of /shoal/fetch/1 and
// /shoal/read/1, clients that stall (stop reading after the status byte)
// take every slot of the server, which then refuses a new client at once
// with "busy"; after the idle timeout the server resets the stalled
// streams and serves the next client whole. A client that sends half a
// request is reset after the request deadline, and holds no slot.
func TestStalledClientCostsOneSlot(t *testing.T) {
	lc := newLimitsCluster(t)
	ctx := context.Background()
	dagBytes := 0
	for _, b := range lc.blocks {
		dagBytes += len(b.Data)
	}
	// A client of the shard's holder other than itself.
	reader := lc.peers[0]
	if reader == lc.holder {
		reader = lc.peers[1]
	}
	tests := []struct {
		name     string
		srv, cli *Peer
		proto    protocol.ID
		req      string
		size     int // the bytes of a whole answer, at least
		busy     string
		serve    func() error // a whole request, checked byte for byte
	}{
		{
			name: "fetch", srv: lc.peers[0], cli: lc.peers[1],
			proto: protoFetch, req: lc.pin.CID.String() + "\n", size: dagBytes,
			busy:  fmt.Sprintf("%s cannot serve %s: busy: serving 2 fetches already", lc.peers[0].ID(), lc.pin.CID),
			serve: func() error { return lc.fetchAll(ctx, lc.peers[1], lc.peers[0].ID()) },
		},
		{
			name: "read", srv: lc.holder, cli: reader,
			proto: protoRead, req: "shard " + lc.shard.CID.String() + "\n", size: len(lc.sharded),
			busy:  fmt.Sprintf("refused shard %s: busy: serving 2 reads already", lc.shard.CID),
			serve: func() error { return lc.readShard(ctx, reader) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, cli := tt.srv, tt.cli
			if err := tt.serve(); err != nil {
				t.Fatalf("before any stall: %v", err)
			}
			// Half a request line: the server waits for the rest until
			// the request deadline, and resets the stream then.
			half := stall(t, cli, srv.ID(), tt.proto, tt.req[:10], false)
			halfAt := time.Now()

			// The server blocks on its write to each after the stream
			// opened; its idle deadline runs from then.
			var stalled []network.Stream
			var stalledAt time.Time
			for range 2 {
				stalledAt = time.Now()
				stalled = append(stalled, stall(t, cli, srv.ID(), tt.proto, tt.req, true))
			}
			start := time.Now()
			err := tt.serve()
			if err == nil || err.Error() != tt.busy {
				t.Fatalf("with every slot stalled: %v\nwant: %s", err, tt.busy)
			}
			if d := time.Since(start); d > testLimits.idle/2 {
				t.Fatalf("refused after %v: not at once", d)
			}

			// Service resumes once the server gave up on the stalled
			// clients: after the idle timeout, not before, and before
			// the request deadline could have ended them.
			var resumed time.Time
			waitFor(t, 10*time.Second, func() error {
				at := time.Now() // a whole answer takes a while under -race
				err := tt.serve()
				if err == nil {
					resumed = at
				} else if err.Error() != tt.busy {
					t.Fatalf("while waiting for a slot: %v\nwant: %s", err, tt.busy)
				}
				return err
			})
			// resumed is when the client began the request that was
			// served; the server took its slot a little later.
			if d := resumed.Sub(stalledAt); d < testLimits.idle-250*time.Millisecond || d >= testLimits.request {
				t.Fatalf("served again %v after the stall, want the idle timeout (%v) and a little", d, testLimits.idle)
			}
			for _, s := range stalled {
				assertReset(t, s, tt.size)
			}

			assertReset(t, half, 1)
			if d := time.Since(halfAt); d < testLimits.request {
				t.Fatalf("the half request was reset after %v, before the request deadline (%v)", d, testLimits.request)
			}
		})
	}
}

// stallingHolder serves fetch and read on p in place of its servers: it
// reads the request, sends what mode says (nothing, or the status byte
// and half a frame) and then nothing until the test ends. It returns the
// count of requests.
func stallingHolder(t *testing.T, p *Peer, mode *atomic.Value) *atomic.Int32 {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	var asked atomic.Int32
	h := func(s network.Stream) {
		_ = s.SetDeadline(time.Now().Add(15 * time.Second))
		if _, err := bufio.NewReader(io.LimitReader(s, 256)).ReadString('\n'); err != nil {
			_ = s.Reset()
			return
		}
		asked.Add(1)
		if mode.Load() == "half a frame" {
			_, _ = s.Write([]byte{0, 34, 0x12, 0x20}) // OK, then the start of a CID
		}
		select {
		case <-done:
		case <-time.After(15 * time.Second):
		}
		_ = s.Reset()
	}
	p.host.Handle(protoFetch, h)
	p.host.Handle(protoRead, h)
	return &asked
}

// TestClientGivesUpOnStalledHolder: a holder that accepts a fetch or a
// read and then sends nothing is given up on after the request deadline
// (before its status byte) or the idle timeout (after it), with a timeout
// error naming it; the tracker's pin and a plain cat's block getter then
// get the data from the next holder.
func TestClientGivesUpOnStalledHolder(t *testing.T) {
	lc := newLimitsCluster(t)
	good, bad, cli := lc.peers[0], lc.peers[1], lc.peers[2]
	ctx := context.Background()
	var mode atomic.Value
	asked := stallingHolder(t, bad, &mode)
	for _, m := range []struct {
		name string
		wait time.Duration
	}{{"silent", testLimits.request}, {"half a frame", testLimits.idle}} {
		mode.Store(m.name)
		t.Run(m.name+"/fetch", func(t *testing.T) {
			start := time.Now()
			err := lc.fetchAll(ctx, cli, bad.ID())
			want := fmt.Sprintf("fetch %s from %s: i/o deadline reached", lc.pin.CID, bad.ID())
			if err == nil || err.Error() != want {
				t.Fatalf("fetch from the stalled holder: %v\nwant: %s", err, want)
			}
			if d := time.Since(start); d < m.wait || d > m.wait+2*time.Second {
				t.Fatalf("gave up after %v, want %v and a little", d, m.wait)
			}
			if m.name == "silent" {
				return // the fail-over is the same after either deadline
			}
			n := asked.Load()
			start = time.Now()
			if err := cli.tracker.pin(ctx, lc.pin, []peer.ID{bad.ID(), good.ID()}); err != nil {
				t.Fatalf("pin from the next holder: %v", err)
			}
			if asked.Load() != n+1 {
				t.Fatal("the tracker did not ask the stalled holder first: the test proved nothing")
			}
			if d := time.Since(start); d > m.wait+3*time.Second {
				t.Fatalf("pinned after %v", d)
			}
			// The read below must not find the block here. (The
			// reconciler may have deleted the copy already.)
			_ = cli.store.Delete(lc.pin.CID.String())
			if cli.store.Has(lc.leaf.CID) {
				t.Fatalf("%s still holds %s", cli.cfg.PeerName, lc.leaf.CID)
			}
		})
		t.Run(m.name+"/read", func(t *testing.T) {
			start := time.Now()
			_, err := cli.readBlock(ctx, bad.ID(), lc.leaf.CID)
			want := fmt.Sprintf("read block %s: i/o deadline reached", lc.leaf.CID)
			if err == nil || err.Error() != want {
				t.Fatalf("read from the stalled holder: %v\nwant: %s", err, want)
			}
			if d := time.Since(start); d < m.wait || d > m.wait+2*time.Second {
				t.Fatalf("gave up after %v, want %v and a little", d, m.wait)
			}
			if m.name == "silent" {
				return
			}
			n := asked.Load()
			g := &blockGetter{p: cli, peers: []peer.ID{bad.ID(), good.ID()}}
			data, err := g.block(ctx, lc.leaf.CID)
			if err != nil || !bytes.Equal(data, lc.leaf.Data) {
				t.Fatalf("read from the next holder: %d bytes, %v; want the stored block", len(data), err)
			}
			if asked.Load() != n+1 {
				t.Fatal("the block getter did not ask the stalled holder first: the test proved nothing")
			}
		})
	}
}
