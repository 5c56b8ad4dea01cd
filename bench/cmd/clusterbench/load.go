package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
	"github.com/shoal-project/shoal/bench"
)

// testCIDs returns n distinct CIDv1 raw sha2-256 CIDs, the digests of
// (seed, i): content that no peer holds, which is fine for pinning (the
// pin is allocated and committed; fetching it fails later, in the
// background).
func testCIDs(seed uint64, from, n int) []string {
	out := make([]string, n)
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], seed)
	for i := range out {
		binary.BigEndian.PutUint64(b[8:], uint64(from+i))
		h, _ := mh.Sum(b[:], mh.SHA2_256, -1) // cannot fail for sha2-256
		out[i] = cid.NewCidV1(cid.Raw, h).String()
	}
	return out
}

// loadClients returns one API client per daemon, each with a connection
// pool that keeps up to conns idle connections, as a client that issues
// concurrent requests would: the default keeps 2 and opens a new TCP
// connection for most requests.
func loadClients(c *bench.Cluster, conns int) ([]*client.Client, error) {
	out := make([]*client.Client, len(c.Peers))
	for i, d := range c.Peers {
		hc := &http.Client{Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns,
			IdleConnTimeout: time.Minute}}
		cl, err := client.New(d.API, client.WithHTTPClient(hc))
		if err != nil {
			return nil, err
		}
		out[i] = cl
	}
	return out, nil
}

// pinResult is what one batch of pin adds measured.
type pinResult struct {
	wall     time.Duration
	ok       int
	errs     int
	firstErr error
	lat      []time.Duration // of the successful requests, sorted
}

// pinAll pins cids from conc goroutines; goroutine g sends its requests
// to clients[g % len(clients)], so the load is spread over the peers, two
// thirds of it to followers that forward to the leader.
func pinAll(ctx context.Context, clients []*client.Client, cids []string, conc int, m mode) pinResult {
	var next atomic.Int64
	lats := make([][]time.Duration, conc)
	errs := make([]int, conc)
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for g := range conc {
		wg.Go(func() {
			cl := clients[g%len(clients)]
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(cids) {
					return
				}
				t0 := time.Now()
				_, err := cl.Pin(ctx, api.PinRequest{CID: cids[i], Name: fmt.Sprintf("bench-%d", i), RMin: m.rmin, RMax: m.rmax})
				if err != nil {
					errs[g]++
					once.Do(func() { firstErr = fmt.Errorf("pin %s: %w", cids[i], err) })
					continue
				}
				lats[g] = append(lats[g], time.Since(t0))
			}
		})
	}
	wg.Wait()
	r := pinResult{wall: time.Since(start), firstErr: firstErr}
	for g := range conc {
		r.lat = append(r.lat, lats[g]...)
		r.errs += errs[g]
	}
	r.ok = len(r.lat)
	slices.Sort(r.lat)
	return r
}

// rate is successful pins per second.
func (r pinResult) rate() float64 {
	if r.wall <= 0 {
		return 0
	}
	return float64(r.ok) / r.wall.Seconds()
}

// usage samples the CPU time of the daemons, of this process and of the
// whole machine, so that a phase can be charged to each.
type usage struct {
	daemons []time.Duration
	self    time.Duration
	busy    time.Duration // -1 if /proc/stat is unreadable
	at      time.Time
}

func sampleUsage(c *bench.Cluster) usage {
	u := usage{self: bench.SelfCPU(), at: time.Now()}
	for _, d := range c.Peers {
		pu, _ := d.Usage()
		u.daemons = append(u.daemons, pu.CPU)
	}
	if b, err := bench.MachineBusy(); err == nil {
		u.busy = b
	} else {
		u.busy = -1
	}
	return u
}

// phase is the CPU use between two samples.
type phase struct {
	wall    time.Duration
	daemons []time.Duration // each daemon's CPU time
	self    time.Duration   // clusterbench's (the clients)
	others  time.Duration   // everything else on the machine; -1 unknown
}

func between(a, b usage) phase {
	p := phase{wall: b.at.Sub(a.at), self: b.self - a.self, others: -1}
	var sum time.Duration
	for i := range a.daemons {
		d := b.daemons[i] - a.daemons[i]
		p.daemons = append(p.daemons, d)
		sum += d
	}
	if a.busy >= 0 && b.busy >= 0 {
		p.others = max(0, b.busy-a.busy-sum-p.self)
	}
	return p
}

func (p phase) daemonCPU() time.Duration {
	var s time.Duration
	for _, d := range p.daemons {
		s += d
	}
	return s
}
