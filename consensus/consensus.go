package consensus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/p2p"
)

// Consensus is this peer's member of the Raft cluster that replicates the
// pinset. Its methods are safe for concurrent use.
type Consensus struct {
	host  *p2p.Host
	cfg   Config
	id    peer.ID
	state *State
	raft  *raft.Raft
	layer *streamLayer
	// trans is Raft's transport over layer: closed before layer, so that
	// its accept loop sees a shutdown, not an error it logs.
	trans *raft.NetworkTransport
	wal   *wal
	log   hclog.Logger
	// startIndex is the last index of the log when this peer started
	// (CaughtUp).
	startIndex uint64
	// readTerm is the term in which this peer, as leader, committed a
	// barrier, after which its commit index can serve reads (read.go).
	readTerm atomic.Uint64

	// memberMu serialises the configuration changes this peer makes as
	// leader, so that two concurrent AddPeers cannot both see room for a
	// voter.
	memberMu sync.Mutex

	mu       sync.Mutex // owns closed, inflight and nextOp
	closed   bool
	inflight map[uint64]context.CancelFunc
	nextOp   uint64
	closing  chan struct{}

	ops sync.WaitGroup // calls in progress: Commit, AddPeer, RemovePeer, served requests
	bg  sync.WaitGroup // the address loop and goroutines waiting on raft futures
}

var _ p2p.Membership = (*Consensus)(nil)

// New opens (or creates) the Raft state in cfg.DataDir and starts Raft on
// host. A peer with no state stays a follower of nobody until Bootstrap
// makes it a one-peer cluster, or a leader adds it. The caller wires the
// consensus into the host:
//
//	host.SetMembership(c)
//	host.SetOnJoin(func(ctx context.Context, id peer.ID, _ []ma.Multiaddr) error { return c.AddPeer(ctx, id) })
//
// New first completes a ResetState that a crash interrupted
// (FinishReset). It restores the latest snapshot before returning, which
// for a large pinset takes seconds of disk reads; it cannot be cancelled.
func New(host *p2p.Host, cfg Config) (*Consensus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr})
	}
	logger = logger.With("peer", host.ID().ShortString())
	if err := FinishReset(cfg.DataDir); err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.DataDir, "raft")
	walDir := filepath.Join(dir, "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft directory %s: %w", walDir, err)
	}
	wal, err := openWAL(walDir, logger.Named("wal"))
	if err != nil {
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, cfg.SnapshotsRetained, logger.Named("snapshots"))
	if err != nil {
		_ = wal.Close()
		return nil, fmt.Errorf("open raft snapshots in %s: %w", dir, err)
	}
	if err := checkFormats(cfg.DataDir, wal, snaps); err != nil {
		_ = wal.Close()
		return nil, err
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(host.ID().String())
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = logger
	if err := raft.ValidateConfig(rc); err != nil {
		_ = wal.Close()
		return nil, fmt.Errorf("consensus config: %v: %w", err, ErrInvalidConfig)
	}

	layer := newStreamLayer(host)
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer,
		// Raft keeps up to this many idle streams per peer for reuse;
		// more only matter with pipelining, which it caps at 2 in flight.
		MaxPool: 3,
		Timeout: transportTimeout(cfg),
		Logger:  logger.Named("net"),
	})
	state := newState()
	r, err := raft.NewRaft(rc, fsm{s: state}, wal, wal, indexedSnapshots{snaps}, trans)
	if err != nil {
		_ = trans.Close()
		_ = layer.Close()
		_ = wal.Close()
		return nil, fmt.Errorf("start raft in %s: %w", dir, err)
	}
	c := &Consensus{
		host:     host,
		cfg:      cfg,
		id:       host.ID(),
		state:    state,
		raft:     r,
		layer:    layer,
		trans:    trans,
		wal:      wal,
		log:      logger,
		inflight: make(map[uint64]context.CancelFunc),
		closing:  make(chan struct{}),
		// Read before Raft can append anything: what it had on disk.
		startIndex: r.LastIndex(),
	}
	host.Handle(CommitProtocol, c.serveRPC)
	c.bg.Add(1)
	go c.addrLoop()
	return c, nil
}

// wal is Raft's log and stable store: a BoltDB file (raft-boltdb/v2).
// raft-wal v0.4.0, the newest the module proxy serves, loses a sealed
// segment's index when Raft truncates the log's tail (hashicorp/raft-wal#31,
// fixed after v0.4.0), after which the peer cannot restart: our
// three-daemon test hit it after a kill -9 of the leader.
type wal struct {
	*raftboltdb.BoltStore
}

func openWAL(dir string, _ hclog.Logger) (*wal, error) {
	st, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("open raft log %s: %w", dir, err)
	}
	return &wal{BoltStore: st}, nil
}

func (w *wal) Close() error { return w.BoltStore.Close() }

// transportTimeout is the I/O deadline of one Raft RPC: ten heartbeats,
// so a slow peer is not taken for a dead one, clamped to [1s, 10s]
// (10s is what Consul and Nomad use).
func transportTimeout(cfg Config) time.Duration {
	return min(max(10*cfg.HeartbeatTimeout, time.Second), 10*time.Second)
}

// Bootstrap makes this peer a one-peer cluster and so its leader, unless
// Raft already has state here (then it does nothing). Call it only on the
// first peer of a new cluster: a peer that bootstraps and then joins
// another cluster would hold a conflicting history.
func (c *Consensus) Bootstrap() error {
	f := c.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
		Suffrage: raft.Voter,
		ID:       raft.ServerID(c.id.String()),
		Address:  raft.ServerAddress(c.id.String()),
	}}})
	if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrap raft cluster on %s: %w", c.id, err)
	}
	return nil
}

// State gives read access to the pinset as this peer has applied it. A
// follower may lag the leader by a heartbeat, and a leader that was cut
// off may no longer lead: a read that must see every acknowledged write
// calls ReadBarrier first.
func (c *Consensus) State() *State { return c.state }

// Leader returns the current leader as this peer knows it, or "" if none.
func (c *Consensus) Leader() peer.ID {
	_, id := c.raft.LeaderWithID()
	if id == "" {
		return ""
	}
	p, err := peer.Decode(string(id))
	if err != nil {
		return ""
	}
	return p
}

// CaughtUp reports whether State shows at least everything this peer had
// in its log when it started. Until then it may not: on a restart Raft
// restores the latest snapshot and applies the log entries after it only
// once a leader says they are committed, so a restarted peer's state can
// lack pins and shards its store holds, for as long as it cannot reach a
// leader. Whatever deletes what the state does not name must wait for it.
// Once true it stays true, bar a Raft log rewritten under it.
func (c *Consensus) CaughtUp() bool {
	if c.Leader() == "" {
		return false
	}
	applied := c.raft.AppliedIndex()
	// The second case: the tail of the old log was never committed, and
	// the leader replaced it with a shorter one.
	return applied >= c.startIndex || applied >= c.raft.LastIndex()
}

// WaitForLeader waits until a leader is known, for at most
// WaitForLeaderTimeout, and returns it.
func (c *Consensus) WaitForLeader(ctx context.Context) (peer.ID, error) {
	ctx, end, err := c.begin(ctx)
	if err != nil {
		return "", err
	}
	defer end()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.WaitForLeaderTimeout)
	defer cancel()
	t := time.NewTicker(c.pollInterval())
	defer t.Stop()
	for {
		if l := c.Leader(); l != "" {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("wait for a leader on %s: %w: %w", c.id, ErrNoLeader, ctx.Err())
		case <-t.C:
		}
	}
}

// Commit applies op to the replicated pinset and returns once it is
// committed, or with the error Apply gave (ErrNotPinned, ErrInvalidOp).
// It works on any peer: a follower forwards the op to the leader, waiting
// up to WaitForLeaderTimeout for one. ErrOutcomeUnknown means the op may
// have been applied.
func (c *Consensus) Commit(ctx context.Context, op Op) error {
	data, err := op.MarshalBinary()
	if err != nil {
		return fmt.Errorf("commit %s: %w", op, err)
	}
	ctx, end, err := c.begin(ctx)
	if err != nil {
		return fmt.Errorf("commit %s: %w", op, err)
	}
	defer end()
	err = c.onLeader(ctx, func(ctx context.Context, leader peer.ID) error {
		if leader == c.id {
			return c.applyLocal(ctx, data)
		}
		_, err := c.call(ctx, leader, reqCommit, data)
		return err
	})
	if err != nil {
		return fmt.Errorf("commit %s: %w", op, err)
	}
	return nil
}

// onLeader runs fn with the current leader, retrying while fn reports that
// the leader changed or could not be reached before the request left,
// for at most WaitForLeaderTimeout.
func (c *Consensus) onLeader(ctx context.Context, fn func(context.Context, peer.ID) error) error {
	deadline := time.Now().Add(c.cfg.WaitForLeaderTimeout)
	t := time.NewTicker(c.pollInterval())
	defer t.Stop()
	var last error
	for {
		if leader := c.Leader(); leader != "" {
			err := fn(ctx, leader)
			if !errors.Is(err, ErrNotLeader) && !errors.Is(err, errUnreachable) {
				return err
			}
			last = err
		}
		if time.Now().After(deadline) {
			if last == nil {
				return fmt.Errorf("%w: none elected within %s", ErrNoLeader, c.cfg.WaitForLeaderTimeout)
			}
			return fmt.Errorf("%w within %s: %w", ErrNoLeader, c.cfg.WaitForLeaderTimeout, last)
		}
		select {
		case <-ctx.Done():
			err := c.ctxErr(ctx, "waiting for a leader")
			if errors.Is(err, ErrClosed) {
				return err
			}
			return fmt.Errorf("%w: %w", ErrNoLeader, err)
		case <-t.C:
		}
	}
}

// applyLocal proposes data to Raft on this peer and waits for its result.
func (c *Consensus) applyLocal(ctx context.Context, data []byte) error {
	f := c.raft.Apply(data, c.enqueueTimeout(ctx))
	if err := c.wait(ctx, f); err != nil {
		return err
	}
	if err, ok := f.Response().(error); ok && err != nil {
		return err
	}
	return nil
}

// wait waits for a raft future and translates raft's errors into ours.
func (c *Consensus) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	// Called only within an operation (begin), which Close waits for
	// before it waits on bg, so this Add cannot race with that Wait.
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		done <- f.Error()
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, c.ctxErr(ctx, "waiting for the commit"))
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout):
		// Not in the log: safe to retry elsewhere.
		return fmt.Errorf("%s: %w", c.id, ErrNotLeader)
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%s lost leadership before the entry committed: %w", c.id, ErrOutcomeUnknown)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("raft on %s is shut down: %w", c.id, ErrClosed)
	default:
		return fmt.Errorf("raft on %s: %w", c.id, err)
	}
}

// ctxErr explains why ctx ended: Close, or the caller.
func (c *Consensus) ctxErr(ctx context.Context, doing string) error {
	select {
	case <-c.closing:
		return fmt.Errorf("%s: %w", doing, ErrClosed)
	default:
		return fmt.Errorf("%s: %w", doing, ctx.Err())
	}
}

func (c *Consensus) enqueueTimeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return c.cfg.WaitForLeaderTimeout
}

// pollInterval is how often waits for a leader look again: a tenth of a
// heartbeat, the rate at which the leader itself sends them.
func (c *Consensus) pollInterval() time.Duration {
	return max(c.cfg.HeartbeatTimeout/10, time.Millisecond)
}

// begin registers an operation: its context is cancelled by Close, which
// waits for end to be called.
func (c *Consensus) begin(ctx context.Context) (context.Context, func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	n := c.nextOp
	c.nextOp++
	c.inflight[n] = cancel
	c.ops.Add(1)
	return ctx, func() {
		c.mu.Lock()
		delete(c.inflight, n)
		c.mu.Unlock()
		cancel()
		c.ops.Done()
	}, nil
}

// Close leaves the cluster's traffic (not its membership: the peer stays
// in the Raft configuration) and stops Raft, within ShutdownTimeout even
// when Raft's own shutdown hangs, as it can without a quorum. A leader
// first hands leadership to another voter, so the cluster goes on without
// waiting for an election. It then waits for every goroutine it started;
// if Raft did not stop in time it returns an error and abandons it.
func (c *Consensus) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.closing)
	for _, cancel := range c.inflight {
		cancel()
	}
	c.mu.Unlock()
	c.host.RemoveHandler(CommitProtocol)

	half := c.cfg.ShutdownTimeout / 2
	if c.raft.State() == raft.Leader && c.otherVoters() {
		f := c.raft.LeadershipTransfer()
		done := make(chan struct{})
		c.bg.Add(1)
		go func() {
			defer c.bg.Done()
			_ = f.Error()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(half / 2):
			// Shutdown below ends the transfer too.
		}
	}
	shut := make(chan struct{})
	go func() {
		_ = c.raft.Shutdown().Error()
		close(shut)
	}()
	var err error
	select {
	case <-shut:
	case <-time.After(half):
		// Raft is blocked, typically on an RPC to a peer that is gone:
		// tear down every Raft stream and abort dials so it can finish.
		_ = c.trans.Close()
		_ = c.layer.Close()
		select {
		case <-shut:
		case <-time.After(c.cfg.ShutdownTimeout - half):
			err = fmt.Errorf("close consensus on %s: raft did not shut down within %s", c.id, c.cfg.ShutdownTimeout)
		}
	}
	_ = c.trans.Close()
	_ = c.layer.Close()
	c.ops.Wait()
	if err == nil {
		c.bg.Wait()
		if werr := c.wal.Close(); werr != nil {
			err = fmt.Errorf("close raft log of %s: %w", c.id, werr)
		}
	}
	return err
}

func (c *Consensus) otherVoters() bool {
	f := c.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != raft.ServerID(c.id.String()) {
			return true
		}
	}
	return false
}
