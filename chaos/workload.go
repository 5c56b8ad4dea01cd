package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
)

// Timeouts of one client operation: past them the outcome is unknown.
const (
	writeTimeout = 10 * time.Second
	readTimeout  = 6 * time.Second
	shardTimeout = 45 * time.Second
)

func httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     30 * time.Second,
	}}
}

// keyData is the content of key k: small, distinct, a plain pin.
func keyData(seed uint64, k int) []byte {
	return fmt.Appendf(nil, "chaos seed %d key %d\n", seed, k)
}

// seeded is n bytes of ChaCha8 from seed and i.
func seeded(seed uint64, i, n int) []byte {
	var key [32]byte
	copy(key[:], fmt.Sprintf("chaos %d/%d", seed, i))
	r := rand.NewChaCha8(key)
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

// shardedFile is one sharded add: Out is ok (acknowledged) or unknown.
type shardedFile struct {
	Index int    `json:"index"`
	Size  int    `json:"size"`
	Sum   string `json:"sha256"`
	Root  string `json:"root,omitempty"`
	Out   string `json:"out"`
	Err   string `json:"err,omitempty"`
	Node  int    `json:"node"`
	// Removed is the outcome of its pin rm ("": not removed): the client
	// keeps a few files and removes the oldest, so that stores do not
	// fill up and deletions are exercised too.
	Removed string `json:"removed,omitempty"`
}

// keepSharded is how many acknowledged sharded files the client keeps.
const keepSharded = 8

// workload drives the clients against random nodes.
type workload struct {
	c     *cluster
	h     *history
	seed  uint64
	keys  int
	cids  []string // key -> CID
	byCID map[string]int

	mu      sync.Mutex
	sharded []shardedFile
	// catBad are cats that answered and returned other bytes: anomalies.
	catBad []string
	cats   int
	catErr int
}

func (w *workload) node(r *rand.Rand) *node { return w.c.nodes[r.IntN(len(w.c.nodes))] }

// pinClient does adds, rms and reads of the keys until ctx ends.
func (w *workload) pinClient(ctx context.Context, id int, r *rand.Rand) {
	for ctx.Err() == nil {
		n := w.node(r)
		k := r.IntN(w.keys)
		switch p := r.IntN(100); {
		case p < 25:
			w.add(ctx, id, n, k)
		case p < 45:
			w.rm(ctx, id, n, k)
		case p < 85:
			w.status(ctx, id, n, k)
		default:
			w.ls(ctx, id, n)
		}
	}
}

func (w *workload) add(ctx context.Context, id int, n *node, k int) {
	o := op{Client: id, Kind: opAdd, Node: n.i, Key: k, Call: w.h.now()}
	cctx, cancel := context.WithTimeout(ctx, writeTimeout)
	res, err := n.client.Add(cctx, bytes.NewReader(keyData(w.seed, k)), fmt.Sprintf("key%d", k), api.AddParams{})
	cancel()
	o.Return = w.h.now()
	switch {
	case err == nil && res.CID != w.cids[k]:
		o.Out, o.Err = outUnknown, fmt.Sprintf("add answered CID %s, want %s", res.CID, w.cids[k])
	case err == nil:
		o.Out = outOK
	default:
		// Also when the run ended during the call: it may have
		// committed all the same.
		o.Out, o.Err = outUnknown, err.Error()
	}
	w.h.add(o)
}

func (w *workload) rm(ctx context.Context, id int, n *node, k int) {
	o := op{Client: id, Kind: opRm, Node: n.i, Key: k, Call: w.h.now()}
	cctx, cancel := context.WithTimeout(ctx, writeTimeout)
	_, err := n.client.Unpin(cctx, w.cids[k])
	cancel()
	o.Return = w.h.now()
	switch {
	case err == nil:
		o.Out = outOK
	case errors.Is(err, api.ErrNotFound):
		o.Out, o.Err = outAbsent, err.Error()
	default:
		o.Out, o.Err = outUnknown, err.Error()
	}
	w.h.add(o)
}

func (w *workload) status(ctx context.Context, id int, n *node, k int) {
	o := op{Client: id, Kind: opStatus, Node: n.i, Key: k, Call: w.h.now()}
	cctx, cancel := context.WithTimeout(ctx, readTimeout)
	st, err := n.client.Status(cctx, w.cids[k], false)
	cancel()
	o.Return = w.h.now()
	switch {
	case err == nil && st.CID == w.cids[k]:
		o.Out = outPresent
	case err == nil:
		o.Err = fmt.Sprintf("status answered CID %q", st.CID)
	case ctx.Err() != nil:
		return
	case errors.Is(err, api.ErrNotFound):
		o.Out = outAbsent
	default:
		o.Err = err.Error() // a failed read: no outcome
	}
	w.h.add(o)
}

func (w *workload) ls(ctx context.Context, id int, n *node) {
	o := op{Client: id, Kind: opLs, Node: n.i, Key: -1, Call: w.h.now()}
	cctx, cancel := context.WithTimeout(ctx, readTimeout)
	pins, err := n.client.Pins(cctx)
	cancel()
	o.Return = w.h.now()
	switch {
	case err == nil:
		o.Present = make([]bool, w.keys)
		for _, p := range pins {
			if k, ok := w.byCID[p.CID]; ok {
				o.Present[k] = true
			}
		}
	case ctx.Err() != nil:
		return
	default:
		o.Err = err.Error()
	}
	w.h.add(o)
}

// shardClient adds small sharded files and reads back acknowledged ones.
func (w *workload) shardClient(ctx context.Context, r *rand.Rand) {
	for i := 0; ctx.Err() == nil; i++ {
		switch {
		case len(w.acknowledged()) > keepSharded:
			w.shardRm(ctx, r)
		case r.IntN(3) > 0 || len(w.acknowledged()) == 0:
			w.shardAdd(ctx, r, i)
		default:
			w.cat(ctx, r)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(200+r.IntN(800)) * time.Millisecond):
		}
	}
}

func (w *workload) shardAdd(ctx context.Context, r *rand.Rand, i int) {
	size := 1<<20 + r.IntN(2<<20)
	data := seeded(w.seed, i, size)
	n := w.node(r)
	f := shardedFile{Index: i, Size: size, Sum: fmt.Sprintf("%x", sha256.Sum256(data)), Node: n.i}
	cctx, cancel := context.WithTimeout(ctx, shardTimeout)
	res, err := n.client.Add(cctx, bytes.NewReader(data), fmt.Sprintf("sharded%d", i),
		api.AddParams{Shard: true, ShardSize: 512 << 10, RMin: 2, RMax: 3, Name: fmt.Sprintf("sharded%d", i)})
	cancel()
	switch {
	case err == nil:
		f.Root, f.Out = res.CID, outOK
	case ctx.Err() != nil:
		// The run ended during the add: its outcome is unknown too.
		f.Out, f.Err = outUnknown, "the run ended during the add"
	default:
		f.Out, f.Err = outUnknown, err.Error()
	}
	w.mu.Lock()
	w.sharded = append(w.sharded, f)
	w.mu.Unlock()
}

// acknowledged are the acknowledged files not removed.
func (w *workload) acknowledged() []shardedFile {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []shardedFile
	for _, f := range w.sharded {
		if f.Out == outOK && f.Removed == "" {
			out = append(out, f)
		}
	}
	return out
}

// shardRm removes the oldest acknowledged file.
func (w *workload) shardRm(ctx context.Context, r *rand.Rand) {
	f := w.acknowledged()[0]
	n := w.node(r)
	cctx, cancel := context.WithTimeout(ctx, writeTimeout)
	_, err := n.client.Unpin(cctx, f.Root)
	cancel()
	out := outOK
	if err != nil {
		out = outUnknown
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range w.sharded {
		if w.sharded[i].Index == f.Index {
			w.sharded[i].Removed = out
		}
	}
}

// cat reads an acknowledged file back from a random node: an error is
// allowed while faults go on, other bytes never are.
func (w *workload) cat(ctx context.Context, r *rand.Rand) {
	files := w.acknowledged()
	f := files[r.IntN(len(files))]
	n := w.node(r)
	cctx, cancel := context.WithTimeout(ctx, shardTimeout)
	defer cancel()
	sum, size, err := catSum(cctx, n.client, f.Root)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cats++
	switch {
	case err != nil:
		w.catErr++
	case sum != f.Sum || size != f.Size:
		w.catBad = append(w.catBad, fmt.Sprintf("cat of sharded%d (%s) on %s read %d bytes, sha256 %s; want %d bytes, %s",
			f.Index, f.Root, n.name, size, sum, f.Size, f.Sum))
	}
}

// catSum reads root through cl and returns the SHA-256 and length of what
// it read.
func catSum(ctx context.Context, cl *client.Client, root string) (string, int, error) {
	cr, err := cl.Cat(ctx, root, 0, -1)
	if err != nil {
		return "", 0, err
	}
	defer cr.Close()
	h := sha256.New()
	n, err := io.Copy(h, cr)
	if err != nil {
		return "", int(n), err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), int(n), nil
}
