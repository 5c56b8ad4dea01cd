package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/shard"
)

// stallingReader serves data up to at, then waits until ready says so,
// cancels the add's context (the client goes away) and fails.
type stallingReader struct {
	data   []byte
	at     int
	off    int
	ready  func() bool
	cancel context.CancelFunc
}

func (r *stallingReader) Read(p []byte) (int, error) {
	if r.off >= r.at {
		for !r.ready() {
			time.Sleep(10 * time.Millisecond)
		}
		r.cancel()
		return 0, context.Canceled
	}
	n := copy(p, r.data[r.off:r.at])
	r.off += n
	return n, nil
}

// TestShardedAddResumes: an add whose client goes away keeps its recorded
// shards; the same add sent again resumes after them without sending them
// to any peer again, and ends with the same root and shards as an
// uninterrupted add. Different bytes under the same name are refused
// without harm.
func TestShardedAddResumes(t *testing.T) {
	var mu sync.Mutex
	received := map[string]int{} // shard CID -> receipts on the peers
	peers := newTestPeersOpts(t, 3, nil, func(_ int, o *Options) {
		o.receiveHook = func(info shard.Info) error {
			mu.Lock()
			received[info.CID.String()]++
			mu.Unlock()
			return nil
		}
	})
	b := backend{peers[0]}
	data := seeded("resume", 8<<20+321)
	ap := api.AddParams{Name: "big", Chunker: "size-65536", Shard: true, ShardSize: 1 << 20, RMin: 2, RMax: 2}
	recorded := func() int {
		adds := peers[0].cons.State().Adds()
		if len(adds) != 1 {
			return 0
		}
		return len(adds[0].Shards)
	}
	ctx, cancel := context.WithCancel(context.Background())
	_, err := b.Add(ctx, &stallingReader{data: data, at: 5 << 20, ready: func() bool { return recorded() >= 3 }, cancel: cancel}, ap)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted add: %v", err)
	}
	adds := peers[0].cons.State().Adds()
	if len(adds) != 1 || len(adds[0].Shards) < 3 {
		t.Fatalf("after the interruption, adds in progress %+v; want one with its shards", adds)
	}
	kept := adds[0].Shards
	mu.Lock()
	before := map[string]int{}
	for k, v := range received {
		before[k] = v
	}
	mu.Unlock()

	res, err := b.Add(context.Background(), bytes.NewReader(data), ap)
	if err != nil {
		t.Fatalf("resumed add: %v", err)
	}
	for i, sh := range kept {
		if res.Shards[i].CID != sh.CID.String() {
			t.Fatalf("resumed shard %d is %s, was %s", i, res.Shards[i].CID, sh.CID)
		}
		mu.Lock()
		again := received[sh.CID.String()] - before[sh.CID.String()]
		mu.Unlock()
		if again != 0 {
			t.Fatalf("shard %d was sent again (%d receipts)", i, again)
		}
	}
	if len(peers[0].cons.State().Adds()) != 0 {
		t.Fatal("the resumed add is still in progress")
	}
	// The same file once more, uninterrupted: identical shards.
	if _, err := b.Unpin(context.Background(), res.CID); err != nil {
		t.Fatal(err)
	}
	fresh, err := b.Add(context.Background(), bytes.NewReader(data), ap)
	if err != nil || fresh.CID != res.CID || len(fresh.Shards) != len(res.Shards) {
		t.Fatalf("uninterrupted add: %v, %s with %d shards; resumed %s with %d", err, fresh.CID, len(fresh.Shards), res.CID, len(res.Shards))
	}
	for i := range fresh.Shards {
		if fresh.Shards[i].CID != res.Shards[i].CID {
			t.Fatalf("shard %d: uninterrupted %s, resumed %s", i, fresh.Shards[i].CID, res.Shards[i].CID)
		}
	}

	// Interrupted again, then other bytes under the same name: refused,
	// and the add is gone.
	ap.Name = "other"
	ctx, cancel = context.WithCancel(context.Background())
	_, err = b.Add(ctx, &stallingReader{data: data, at: 5 << 20, ready: func() bool { return recorded() >= 2 }, cancel: cancel}, ap)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("second interrupted add: %v", err)
	}
	other := bytes.Clone(data)
	other[10] ^= 1
	_, err = b.Add(context.Background(), bytes.NewReader(other), ap)
	if !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), "the input differs from the interrupted add this one resumes, at shard 0") {
		t.Fatalf("resume with other bytes: %v", err)
	}
	waitFor(t, 5*time.Second, func() error {
		if n := len(peers[0].cons.State().Adds()); n != 0 {
			return fmt.Errorf("%d adds in progress", n)
		}
		return nil
	})
	if _, err := b.Add(context.Background(), io.MultiReader(bytes.NewReader(other)), ap); err != nil {
		t.Fatalf("adding the other bytes afresh: %v", err)
	}
}
