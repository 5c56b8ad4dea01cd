package cluster

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/consensus"
)

// What an operator asks of the trackers (shoal recover, shoal sync), on
// one peer or, through /shoal/tracker/1, on every member.

// protoTracker asks a peer's tracker to retry its failures or to walk
// everything now.
const protoTracker protocol.ID = "/shoal/tracker/1"

// syncTimeout bounds how long a sync waits for a tracker busy with a
// fetch: the walk starts once that fetch ends.
const syncTimeout = time.Minute

type trackerReq struct {
	// Action is "recover" or "sync".
	Action string `json:"action"`
	// Parts are the store keys to retry (recover); none: every failure.
	Parts []string `json:"parts,omitempty"`
}

// recheck makes the next round look at c again.
func (t *tracker) recheck(c cid.Cid) {
	t.mu.Lock()
	t.recheckKeys = append(t.recheckKeys, c)
	t.mu.Unlock()
	t.wake()
}

// syncWanted reports whether a caller waits for a full walk.
func (t *tracker) syncWanted() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.syncWaiters) > 0
}

// sync makes the tracker walk the whole state and store, and returns once
// it did (or ctx ended).
func (t *tracker) sync(ctx context.Context) error {
	done := make(chan struct{})
	t.mu.Lock()
	t.syncWaiters = append(t.syncWaiters, done)
	t.mu.Unlock()
	t.wake()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		t.mu.Lock()
		var fetching []string
		for c := range t.fetching {
			fetching = append(fetching, c.String())
		}
		t.mu.Unlock()
		if len(fetching) > 0 {
			slices.Sort(fetching)
			return fmt.Errorf("the tracker is busy fetching %s; the walk runs once that ends", strings.Join(fetching, ", "))
		}
		return ctx.Err()
	}
}

// retryNow clears the backoff of the failed parts that match (all with
// nil) so the next round fetches them, and returns how many.
func (t *tracker) retryNow(match func(cid.Cid) bool) int {
	now, n := time.Now(), 0
	t.mu.Lock()
	for c, f := range t.failed {
		if match == nil || match(c) {
			f.next, f.tries = now, 0
			t.failed[c] = f
			n++
		}
	}
	if n > 0 {
		t.nextRetry = now
	}
	t.mu.Unlock()
	t.wake()
	return n
}

// failures returns up to api.MaxFailures failed parts, by CID, and how
// many there are.
func (t *tracker) failures() ([]api.Failure, int) {
	t.mu.Lock()
	out := make([]api.Failure, 0, len(t.failed))
	for c, f := range t.failed {
		out = append(out, api.Failure{CID: c.String(), Error: f.msg.Value()})
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b api.Failure) int { return cmp.Compare(a.CID, b.CID) })
	return out[:min(len(out), api.MaxFailures)], len(out)
}

// serveTracker runs an operator's request on this peer's tracker.
func (p *Peer) serveTracker(ctx context.Context, _ peer.ID, req trackerReq) (any, error) {
	rep := api.TrackerReport{Peer: p.host.ID().String(), Name: p.cfg.PeerName}
	switch req.Action {
	case "recover":
		var match func(cid.Cid) bool
		if len(req.Parts) > 0 {
			want := map[cid.Cid]bool{}
			for _, k := range req.Parts {
				c, err := cid.Decode(k)
				if err != nil {
					return nil, fmt.Errorf("%q is not a CID", k)
				}
				want[c] = true
			}
			match = func(c cid.Cid) bool { return want[c] }
		}
		rep.Retried = p.tracker.retryNow(match)
	case "sync":
		ctx, cancel := context.WithTimeout(ctx, syncTimeout)
		defer cancel()
		if err := p.tracker.sync(ctx); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown tracker action %q", req.Action)
	}
	rep.Queued, _ = p.tracker.load()
	rep.Failures, rep.Failed = p.tracker.failures()
	rep.Unknown, rep.UnknownBytes = p.tracker.unknownTotals()
	return rep, nil
}

// onTrackers runs req on this peer (local) or on every member, and
// returns the reports sorted by peer name.
func (b backend) onTrackers(ctx context.Context, req trackerReq, local bool) ([]api.TrackerReport, error) {
	self := b.p.host.ID()
	ids := []peer.ID{self}
	if !local {
		members, err := b.p.cons.Peers(ctx)
		if err != nil {
			return nil, mapErr(err)
		}
		ids = ids[:0]
		for _, m := range members {
			ids = append(ids, m.ID)
		}
	}
	out := make([]api.TrackerReport, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			var rep api.TrackerReport
			var err error
			if id == self {
				var body any
				if body, err = b.p.serveTracker(ctx, self, req); err == nil {
					rep = body.(api.TrackerReport)
				}
			} else {
				err = b.p.callFor(ctx, id, protoTracker, req, &rep, syncTimeout+b.p.rpcTimeout)
			}
			if err != nil {
				met, _, _ := b.p.monitor.metrics(id)
				rep = api.TrackerReport{Peer: id.String(), Name: met.Name, Error: err.Error()}
			}
			out[i] = rep
		})
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b api.TrackerReport) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Peer, b.Peer))
	})
	return out, nil
}

// partsOf returns the store keys of pin c's parts, or c alone when c is a
// shard or cluster-DAG of a pin; ErrNotFound when the state knows neither.
func (b backend) partsOf(s string) ([]string, error) {
	c, err := parseCID(s)
	if err != nil {
		return nil, err
	}
	st := b.p.cons.State()
	pin, ok := st.Get(c)
	if !ok {
		if _, ok := st.Part(c); ok {
			return []string{c.String()}, nil
		}
		return nil, fmt.Errorf("%w: %s is not pinned", api.ErrNotFound, c)
	}
	keys := []string{pin.CID.String()}
	if pin.Kind == consensus.KindSharded {
		keys = append(keys, pin.ClusterDAG.String())
		for _, sh := range pin.Shards {
			keys = append(keys, sh.CID.String())
		}
	}
	return keys, nil
}

// Recover retries the failed parts of pin s (every failure when s is "")
// at once.
func (b backend) Recover(ctx context.Context, s string, local bool) ([]api.TrackerReport, error) {
	req := trackerReq{Action: "recover"}
	if s != "" {
		keys, err := b.partsOf(s)
		if err != nil {
			return nil, err
		}
		req.Parts = keys
	}
	return b.onTrackers(ctx, req, local)
}

// Sync makes the trackers walk the whole state and store now.
func (b backend) Sync(ctx context.Context, local bool) ([]api.TrackerReport, error) {
	return b.onTrackers(ctx, trackerReq{Action: "sync"}, local)
}

var _ api.TrackerControl = backend{}
