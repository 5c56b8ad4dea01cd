package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/sys/unix"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/ipfsserve"
	"github.com/shoal-project/shoal/kuborpc"
	"github.com/shoal-project/shoal/p2p"
	"github.com/shoal-project/shoal/shard"
	"github.com/shoal-project/shoal/store"
	"github.com/shoal-project/shoal/transfer"
)

// Options are what `shoal daemon` passes besides the peer's directory.
type Options struct {
	// Bootstrap are full multiaddrs (ending in /p2p/ID) of peers of the
	// cluster to join. Empty: start alone, or resume the stored cluster.
	Bootstrap []ma.Multiaddr
	// Version is reported by the API.
	Version string
	// Logger receives the daemon's log lines; nil: stderr.
	Logger *log.Logger

	// receiveHook, in tests, sees each shard received before it is
	// committed, and fails it by returning an error (a receiver whose
	// disk fails mid-add).
	receiveHook func(info shard.Info) error
	// limits, in tests, shortens the deadlines and caps of the fetch and
	// read streams (limits.go); zero fields keep the defaults.
	limits streamLimits
}

// Peer is a running shoal daemon: the one place that wires the host,
// consensus, the store, the tracker and the API together.
type Peer struct {
	cfg   config.Config
	dir   string
	opts  Options
	host  *p2p.Host
	cons  *consensus.Consensus
	store *store.Store
	api   *api.Server
	// gateway is the trustless IPFS gateway (ipfs.go); nil when
	// gateway.listen is empty.
	gateway *ipfsserve.Gateway
	kubo    *api.Server // Kubo's RPC API (kubo_rpc.listen), or nil
	// ipfs is the IPFS-facing host and its bitswap server (ipfs.go); nil
	// when ipfs.listen is empty.
	ipfs *ipfsNode

	tracker        *tracker
	monitor        *monitor
	receiver       *transfer.Server // shards other peers send
	verifyMu       sync.Mutex       // held while one shard is re-hashed (verify.go)
	drainMu        sync.Mutex       // held during a drain step (drain.go)
	drain          *repairer
	rebal          *rebalancer
	addsMu         sync.Mutex
	active         map[string]bool // sharded adds this process is running
	interrupted    map[string]interruptedAdd
	rpcTimeout     time.Duration
	limits         streamLimits // of the fetch and read streams
	reconcileEvery time.Duration
	logger         *log.Logger

	// The last survey of the members, shared by pin allocations made
	// within surveyMaxAge of it. surveyMu is held while a survey runs, so
	// concurrent pins wait for one survey instead of each making its own.
	surveyMu    sync.Mutex
	surveyAt    time.Time
	surveyCache []peerInfo

	// ctx lives as long as the peer; cancel stops its goroutines. It is
	// held here only to hand to stream handlers, which libp2p calls
	// without one.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// removed is closed when this peer finds itself removed from the
	// cluster.
	removed     chan struct{}
	removedOnce sync.Once
	// ownReaped is closed once the reaper has aborted the adds this peer
	// left unfinished before it started (reaper.go).
	ownReaped chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Start opens the peer's directory and runs the peer until Close.
func Start(ctx context.Context, dir string, opts Options) (_ *Peer, err error) {
	cfg, key, err := config.Load(dir)
	if err != nil {
		return nil, err
	}
	// Read before anything starts, so that a bad certificate fails the
	// start before the peer joins a cluster.
	apiTLS, err := api.LoadTLS(cfg.API.TLSFiles(dir))
	if err != nil {
		return nil, err
	}
	if limit, _ := cfg.MemoryLimitBytes(); limit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(limit)
	}
	if opts.Logger == nil {
		opts.Logger = log.New(os.Stderr, "", log.LstdFlags)
	}
	p := &Peer{
		cfg: cfg, dir: dir, opts: opts, logger: opts.Logger,
		rpcTimeout:     5 * time.Second,
		reconcileEvery: time.Second,
		removed:        make(chan struct{}),
		ownReaped:      make(chan struct{}),
		active:         map[string]bool{},
		interrupted:    map[string]interruptedAdd{},
	}
	p.limits = opts.limits.withDefaults(p.rpcTimeout)
	for _, w := range cfg.Warnings() {
		p.log("%s", w)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			p.Close()
		}
	}()

	if p.store, err = store.Open(filepath.Join(dir, config.StoreDir)); err != nil {
		return nil, err
	}
	for _, q := range p.store.Quarantined() {
		p.log("store: shard %s failed to load and was moved to %s: %v", q.Key, q.Path, q.Err)
	}
	secret, _ := cfg.SecretBytes()
	hcfg := p2p.DefaultConfig()
	hcfg.PrivKey, hcfg.Secret = key, secret
	hcfg.ListenAddrs = nil
	for _, a := range cfg.Listen {
		m, _ := ma.NewMultiaddr(a) // validated by config.Load
		hcfg.ListenAddrs = append(hcfg.ListenAddrs, m)
	}
	if p.host, err = p2p.New(hcfg, nil); err != nil {
		return nil, err
	}
	ccfg := consensusConfig(cfg.Consensus)
	ccfg.DataDir = filepath.Join(dir, config.ConsensusDir)
	// Raft's warnings go where the daemon's log goes.
	ccfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Output: opts.Logger.Writer(), Level: hclog.Warn})
	// An import a crash interrupted is finished before fresh is decided:
	// midway, no consensus data exists (consensus.FinishReset).
	if err := consensus.FinishReset(ccfg.DataDir); err != nil {
		return nil, err
	}
	fresh := !exists(filepath.Join(ccfg.DataDir, "raft"))
	unknownPath := filepath.Join(ccfg.DataDir, unknownFile)
	unknown, err := loadUnknown(unknownPath, p.store, fresh, p.log)
	if err != nil {
		return nil, err
	}
	if p.cons, err = consensus.New(p.host, ccfg); err != nil {
		return nil, err
	}
	// Started on its data: old states that imports left can go.
	if gone, err := consensus.PruneBackups(ccfg.DataDir, cfg.Consensus.BackupsRetained); err != nil {
		p.log("%v", err)
	} else {
		for _, g := range gone {
			p.log("deleted the old consensus backup %s (consensus.backups_retained %d)", g, cfg.Consensus.BackupsRetained)
		}
	}
	p.host.SetMembership(p.cons)
	p.loadPeerstore()
	p.host.SetOnJoin(func(ctx context.Context, id peer.ID, addrs []ma.Multiaddr) error {
		if p.cons.State().IsRemoved(id) {
			return fmt.Errorf("peer %s was removed from this cluster (shoal peers rm); it can join again only as a new peer: run shoal init in a new directory", id)
		}
		p.host.AddAddrs(id, addrs)
		return p.cons.AddPeer(ctx, id)
	})
	p.tracker = newTracker(p, unknown, unknownPath)
	p.monitor = newMonitor(p, time.Duration(cfg.Health.HeartbeatInterval), time.Duration(cfg.Health.HeartbeatTTL))
	p.host.Handle(protoInfo, serveJSON(p, p.serveInfo))
	p.host.Handle(protoStatus, serveJSON(p, p.serveStatus))
	p.host.Handle(protoFetch, newFetchServer(p).serve)
	p.host.Handle(protoRead, newReadServer(p).serve)
	p.host.Handle(protoRemoved, serveJSON(p, p.serveRemoved))
	p.host.Handle(protoAddrs, serveJSON(p, p.serveAddrs))
	p.host.Handle(protoWanted, serveJSON(p, p.serveWanted))
	p.host.Handle(protoHave, serveJSON(p, p.serveHave))
	p.host.Handle(protoMetrics, serveJSON(p, p.serveMetrics))
	p.host.Handle(protoVerify, serveJSONFor(p, verifyRPCTimeout, p.serveVerify))
	p.host.Handle(protoTracker, serveJSONFor(p, syncTimeout+p.rpcTimeout, p.serveTracker))
	p.receiver = &transfer.Server{
		Store: p.store,
		// The room before reservations: the server subtracts the
		// transfers it runs itself.
		Free: func() int64 { used := p.store.Used(); return max(p.capacity(used)-used, 0) },
		// A received shard must outlive the reconciler until the add
		// records it (a few commits later) or is aborted.
		BeforeCommit: func(from peer.ID, info shard.Info) error {
			if opts.receiveHook != nil {
				if err := opts.receiveHook(info); err != nil {
					return err
				}
			}
			p.tracker.receive(info.CID.String(), from)
			return nil
		},
		Logf: p.log,
	}
	p.host.Handle(transfer.Protocol, p.receiver.Handle)

	switch {
	case len(opts.Bootstrap) > 0 && !fresh:
		// A peer with a cluster of its own rejoins it by itself; asked to
		// join through a peer outside it, it would mix two histories.
		if err := p.checkSameCluster(ctx, opts.Bootstrap); err != nil {
			return nil, err
		}
	case len(opts.Bootstrap) > 0:
		if err := p.join(ctx, opts.Bootstrap); err != nil {
			return nil, err
		}
	case fresh:
		if err := p.cons.Bootstrap(); err != nil {
			return nil, err
		}
	}

	apiCfg := api.ServerConfig{
		Listen:                     cfg.API.Listen,
		BasicAuth:                  cfg.API.BasicAuth,
		BearerTokens:               cfg.API.BearerTokens,
		MaxBodyBytes:               cfg.API.MaxBodyBytes,
		AllowUnauthenticatedRemote: cfg.API.AllowUnauthenticatedRemote,
		AllowedOrigins:             cfg.API.AllowedOrigins,
		AllowedHosts:               cfg.API.AllowedHosts,
		TLS:                        apiTLS,
	}
	p.api, err = api.NewServer(apiCfg, backend{p}, opts.Version)
	if err != nil {
		return nil, err
	}
	if err := p.api.Start(); err != nil {
		return nil, err
	}
	if err := p.startKuboRPC(apiCfg, opts.Version); err != nil {
		return nil, err
	}
	if err := p.startGateway(); err != nil {
		return nil, err
	}
	if err := p.startIPFS(); err != nil {
		return nil, err
	}
	p.wg.Add(7)
	go func() { defer p.wg.Done(); p.runVerify(p.ctx) }()
	go func() { defer p.wg.Done(); p.monitor.run(p.ctx) }()
	go func() { defer p.wg.Done(); p.runRepairs(p.ctx) }()
	go func() { defer p.wg.Done(); p.reapAdds(p.ctx) }()
	go func() {
		defer p.wg.Done()
		// A round before then would delete the shards of every pin the
		// state does not show yet: after a restart, all of them.
		if p.waitCaughtUp(p.ctx) {
			p.tracker.run(p.ctx)
		}
	}()
	go func() { defer p.wg.Done(); p.watchMembership(p.ctx) }()
	go func() { defer p.wg.Done(); p.persistPeerstore(p.ctx) }()
	return p, nil
}

// waitCaughtUp waits until this peer's state shows what its log held when
// it started (consensus.CaughtUp), and reports false if ctx ended first.
func (p *Peer) waitCaughtUp(ctx context.Context) bool {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	start := time.Now()
	logged := false
	for !p.cons.CaughtUp() {
		if !logged && time.Since(start) > 10*time.Second {
			logged = true
			p.log("waiting for a leader to catch up with the cluster's state before reconciling the store")
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	if logged {
		p.log("caught up with the cluster's state after %s; reconciling the store", time.Since(start).Round(time.Second))
	}
	return true
}

// joinRounds and joinBackoff: a join that fails for a reason that may pass
// (an election under way: "lost leadership before the entry committed",
// no leader yet; a peer restarting) is asked again, after 0.5, 1 and 2 s.
const (
	joinRounds  = 4
	joinBackoff = 500 * time.Millisecond
)

// join asks the bootstrap peers, in turn, to add this peer to the cluster,
// for up to joinRounds rounds; a wrong secret ends it at once.
func (p *Peer) join(ctx context.Context, addrs []ma.Multiaddr) error {
	var errs []error
	for round := range joinRounds {
		if round > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("could not join the cluster: %w", errors.Join(append(errs, ctx.Err())...))
			case <-time.After(joinBackoff << (round - 1)):
			}
		}
		errs = errs[:0]
		for _, a := range addrs {
			err := p.host.Join(ctx, a)
			if err == nil {
				return nil
			}
			if errors.Is(err, p2p.ErrSecretMismatch) {
				return fmt.Errorf("could not join the cluster: %w", err)
			}
			errs = append(errs, err)
		}
	}
	return fmt.Errorf("could not join the cluster: %w", errors.Join(errs...))
}

// checkSameCluster refuses bootstrap addresses of peers outside the
// cluster this peer's stored state belongs to.
func (p *Peer) checkSameCluster(ctx context.Context, addrs []ma.Multiaddr) error {
	members, err := p.cons.Peers(ctx)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		info, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			return fmt.Errorf("--bootstrap %s: the address must end in /p2p/<peer ID>", a)
		}
		if !slices.ContainsFunc(members, func(m consensus.Member) bool { return m.ID == info.ID }) {
			return fmt.Errorf("this peer's state belongs to another cluster (of %d peers, without %s); "+
				"to join that cluster, remove %s (identity, config and shards stay) or use a fresh --repo",
				len(members), info.ID, filepath.Join(p.dir, config.ConsensusDir))
		}
		p.host.AddAddrs(info.ID, info.Addrs)
	}
	return nil
}

// removedGrace is how long a removed peer stays unblocked after it left
// this peer's Raft configuration, and how long a peer the state records as
// removed waits for its configuration to agree before it stops anyway:
// time for the leader's last replication, the configuration that drops
// the peer, and its /shoal/removed/1 notice to reach it. Blocked at once,
// the peer would never learn it was removed and would run on alone.
const removedGrace = 5 * time.Second

// watchMembership stops the peer once it has been a member and is no
// longer, or once the state records it as removed (consensus.OpRemoved,
// committed by the cluster): a removed peer must not disturb the cluster.
// It blocks, at the host, every other peer the state records as removed,
// once that peer is out of this peer's Raft configuration and
// removedGrace has passed, so that one that still holds the secret can
// neither talk to this peer nor join through it.
func (p *Peer) watchMembership(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	self := p.host.ID()
	wasMember := false
	blocked := map[peer.ID]bool{}
	since := map[peer.ID]time.Time{} // when a removal was first seen
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		st := p.cons.State()
		for _, id := range st.Removed() {
			if _, ok := since[id]; !ok {
				since[id] = now
			}
			if id == self || blocked[id] || p.cons.IsMember(id) || now.Sub(since[id]) < removedGrace {
				continue
			}
			p.host.Block(id)
			blocked[id] = true
		}
		member := p.cons.IsMember(self)
		switch {
		case wasMember && !member:
			p.log("this peer was removed from the cluster; stopping")
		case st.IsRemoved(self) && !member:
			// Restarted after its removal.
			p.log("the cluster's state records this peer as removed (shoal peers rm); stopping")
		case st.IsRemoved(self) && now.Sub(since[self]) >= 2*removedGrace && p.cons.Leader() != self:
			// The configuration that drops it did not arrive; the
			// cluster's decision stands. A leader removing itself
			// waits for its own removal (RemovePeer).
			p.log("the cluster's state records this peer as removed (shoal peers rm), though its Raft configuration still lists it; stopping")
		default:
			wasMember = wasMember || member
			continue
		}
		p.markRemoved()
		return
	}
}

// adding reports whether this process runs add id.
func (p *Peer) adding(id string) bool {
	p.addsMu.Lock()
	defer p.addsMu.Unlock()
	return p.active[id]
}

func (p *Peer) isInterrupted(id string) bool {
	p.addsMu.Lock()
	defer p.addsMu.Unlock()
	_, ok := p.interrupted[id]
	return ok
}

func (p *Peer) setAdding(id string, on bool) {
	p.addsMu.Lock()
	defer p.addsMu.Unlock()
	if on {
		p.active[id] = true
	} else {
		delete(p.active, id)
	}
}

func (p *Peer) markRemoved() { p.removedOnce.Do(func() { close(p.removed) }) }

// Removed is closed when the peer was removed from the cluster and the
// daemon should stop.
func (p *Peer) Removed() <-chan struct{} { return p.removed }

// ID is the peer's libp2p identity.
func (p *Peer) ID() peer.ID { return p.host.ID() }

// APIAddr is the address the API listens on.
func (p *Peer) APIAddr() string { return p.api.Addr() }

// APIURL is the API's base URL, https:// when it serves TLS.
func (p *Peer) APIURL() string { return p.api.URL() }

// startKuboRPC starts Kubo's RPC API when kubo_rpc.listen is set, with
// the REST API's auth and checks (apiCfg) on its own address.
func (p *Peer) startKuboRPC(apiCfg api.ServerConfig, version string) error {
	if p.cfg.KuboRPC.Listen == "" {
		return nil
	}
	above, err := p.cfg.KuboRPC.ShardAboveBytes()
	if err != nil {
		return err
	}
	apiCfg.Listen = p.cfg.KuboRPC.Listen
	srv, err := kuborpc.New(kuborpc.Config{Server: apiCfg, ShardAbove: above, Version: version}, backend{p})
	if err != nil {
		return fmt.Errorf("kubo_rpc: %w", err)
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("kubo_rpc: %w", err)
	}
	p.kubo = srv
	return nil
}

// KuboRPCURL is the base URL of Kubo's RPC API on this peer, or "" when
// it is off.
func (p *Peer) KuboRPCURL() string {
	if p.kubo == nil {
		return ""
	}
	return p.kubo.URL()
}

// Close stops the peer: the API, the gateway and the IPFS host first (no
// new requests), then the goroutines, consensus (bounded, also without
// quorum), the host and the store. It waits for every goroutine it started.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		var errs []error
		if p.api != nil {
			errs = append(errs, p.api.Close())
		}
		if p.kubo != nil {
			errs = append(errs, p.kubo.Close())
		}
		if p.gateway != nil {
			errs = append(errs, p.gateway.Close())
		}
		if p.ipfs != nil {
			errs = append(errs, p.ipfs.close())
		}
		p.cancel()
		p.wg.Wait()
		if p.cons != nil {
			p.savePeerstore(context.Background())
			if p.cfg.Consensus.LeaveOnShutdown {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := p.cons.RemovePeer(ctx, p.host.ID()); err != nil {
					p.log("leave the cluster: %v", err)
				}
				cancel()
			}
			errs = append(errs, p.cons.Close())
		}
		if p.host != nil {
			errs = append(errs, p.host.Close())
		}
		if p.store != nil {
			errs = append(errs, p.store.Close())
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

func (p *Peer) log(format string, args ...any) { p.logger.Printf(format, args...) }

// localInfo is this peer's /shoal/info/1 answer.
func (p *Peer) localInfo() info {
	used := p.store.Used()
	capacity := p.capacity(used)
	reserved := p.receiver.Reserved()
	return info{
		Name:      p.cfg.PeerName,
		Addresses: p.fullAddrs(),
		Version:   p.opts.Version,
		Capacity:  capacity,
		Used:      used,
		Reserved:  reserved,
		Free:      max(capacity-used-reserved, 0),
		Shards:    p.store.Count(),
	}
}

// capacity is what this peer may hold: the configured capacity, capped by
// the room on the store's disk (its free space plus what the store
// holds), or, when automatic, that room less the reserve. A capacity
// larger than the disk would have the allocator send shards a full disk
// refuses (the chaos suite's 30-minute run found pins stuck so).
func (p *Peer) capacity(used int64) int64 {
	configured, _ := p.cfg.CapacityBytes()
	reserve, _ := config.ParseSize(p.cfg.Reserve)
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(p.dir, config.StoreDir), &st); err != nil {
		if configured > 0 {
			return configured
		}
		return used
	}
	return capacityOf(configured, int64(st.Bavail)*int64(st.Bsize), used, reserve)
}

// capacityOf is capacity's rule: room is the disk's free space plus used.
func capacityOf(configured, avail, used, reserve int64) int64 {
	room := avail + used
	if configured > 0 {
		return min(configured, room)
	}
	return max(room-reserve, used)
}

func (p *Peer) fullAddrs() []string {
	var out []string
	for _, a := range p.host.Addrs() { // each ends in /p2p/ID already
		out = append(out, a.String())
	}
	return out
}

func consensusConfig(c config.Consensus) consensus.Config {
	cc := consensus.DefaultConfig()
	cc.HeartbeatTimeout = time.Duration(c.HeartbeatTimeout)
	cc.ElectionTimeout = time.Duration(c.ElectionTimeout)
	cc.CommitTimeout = time.Duration(c.CommitTimeout)
	cc.LeaderLeaseTimeout = time.Duration(c.LeaderLeaseTimeout)
	cc.WaitForLeaderTimeout = time.Duration(c.WaitForLeaderTimeout)
	cc.ReadTimeout = time.Duration(c.ReadTimeout)
	cc.SnapshotInterval = time.Duration(c.SnapshotInterval)
	cc.SnapshotThreshold = c.SnapshotThreshold
	cc.SnapshotsRetained = c.SnapshotsRetained
	cc.TrailingLogs = c.TrailingLogs
	cc.Voters = c.Voters
	cc.PromoteAfter = time.Duration(c.PromoteAfter)
	return cc
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// discardLogger is handy for tests.
var discardLogger = log.New(io.Discard, "", 0)
