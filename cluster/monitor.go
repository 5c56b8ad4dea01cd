package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/api"
)

// monitor keeps every member's last heartbeat and metrics. Each peer sends
// its own to every member every heartbeat interval (/shoal/metrics/1, one
// small JSON message); a member not heard from for the TTL is down. An
// allocator reads the fresh metrics; a stale one counts as absent.
//
// Goroutines: run (one) sends this peer's heartbeats; record is called
// from stream handlers; the readers from anywhere.
type monitor struct {
	p        *Peer
	interval time.Duration
	ttl      time.Duration
	started  time.Time

	mu   sync.Mutex
	last map[peer.ID]beat
}

// beat is one heartbeat as received: the sender's metrics and this
// peer's clock when it arrived (clocks of peers are never compared).
type beat struct {
	m  api.Metrics
	at time.Time
}

func newMonitor(p *Peer, interval, ttl time.Duration) *monitor {
	return &monitor{p: p, interval: interval, ttl: ttl, started: time.Now(), last: map[peer.ID]beat{}}
}

// record stores a heartbeat from id.
func (m *monitor) record(id peer.ID, met api.Metrics) {
	m.mu.Lock()
	m.last[id] = beat{m: met, at: time.Now()}
	m.mu.Unlock()
}

// alive reports whether id's last heartbeat is within the TTL.
func (m *monitor) alive(id peer.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.last[id]
	return ok && time.Since(b.at) < m.ttl
}

// downFor is how long id has been down: 0 while it is alive. A peer never
// heard from counts as down since this monitor started.
func (m *monitor) downFor(id peer.ID) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	since := m.started
	if b, ok := m.last[id]; ok {
		since = b.at
	}
	if d := time.Since(since) - m.ttl; d > 0 {
		return d
	}
	return 0
}

// metrics returns id's last metrics and whether they are fresh.
func (m *monitor) metrics(id peer.ID) (api.Metrics, time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.last[id]
	return b.m, b.at, ok && time.Since(b.at) < m.ttl
}

// run sends this peer's heartbeat to every member (itself included, to
// keep one code path) until ctx ends.
func (m *monitor) run(ctx context.Context) {
	tick := time.NewTicker(m.interval)
	defer tick.Stop()
	for {
		m.beat(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (m *monitor) beat(ctx context.Context) {
	self := m.p.host.ID()
	met := m.p.localMetrics()
	m.record(self, met)
	members, err := m.p.cons.Peers(ctx)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.interval)
	defer cancel()
	var wg sync.WaitGroup
	for _, mb := range members {
		if mb.ID == self {
			continue
		}
		wg.Go(func() { _ = m.p.call(ctx, mb.ID, protoMetrics, met, &struct{}{}) })
	}
	wg.Wait()
}

// localMetrics are this peer's figures now.
func (p *Peer) localMetrics() api.Metrics {
	in := p.localInfo()
	queue, failed := p.tracker.load()
	return api.Metrics{
		Name:     p.cfg.PeerName,
		Capacity: in.Capacity,
		Used:     in.Used,
		Reserved: in.Reserved,
		Free:     in.Free,
		Shards:   p.store.Count(),
		Pins:     p.cons.State().Len(),
		Queue:    queue,
		Errors:   failed,
		TTL:      p.monitor.ttl.String(),
	}
}

func (p *Peer) serveMetrics(_ context.Context, from peer.ID, m api.Metrics) (any, error) {
	p.monitor.record(from, m)
	return struct{}{}, nil
}

// Health reports every member's last heartbeat and metrics.
func (b backend) Health(ctx context.Context) ([]api.PeerHealth, error) {
	members, err := b.p.cons.Peers(ctx)
	if err != nil {
		return nil, mapErr(err)
	}
	out := make([]api.PeerHealth, 0, len(members))
	for _, mb := range members {
		met, at, fresh := b.p.monitor.metrics(mb.ID)
		h := api.PeerHealth{ID: mb.ID.String(), Name: met.Name, Alive: fresh}
		if !at.IsZero() {
			h.LastSeen = at.UTC()
			h.Metrics = &met
		}
		out = append(out, h)
	}
	return out, nil
}
