package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/store"
)

// logBuffer is a daemon's log, kept for the test to read and passed on to
// t.Log.
type logBuffer struct {
	t  *testing.T
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestTrackerKeepsUnknown: after `state cleanup` a peer's new, empty state
// knows none of its shards, and the tracker keeps every one through full
// walks and a restart, says so once, and counts them; one the new state
// pins becomes the state's and goes on unpin like any other; the offline
// prune deletes the rest. Before the rule, the first round deleted them
// all.
func TestTrackerKeepsUnknown(t *testing.T) {
	ctx := context.Background()
	p := startTestPeer(t, 0, nil, nil)
	dir := p.dir
	var roots []string
	var sizes int64
	for i := range 3 {
		res, err := backend{p}.Add(ctx, bytes.NewReader(seeded(fmt.Sprint("unknown-", i), 100_000+i)), api.AddParams{RMin: 1, RMax: 1})
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, res.CID)
	}
	slices.Sort(roots)
	for _, sh := range p.store.Shards() {
		sizes += sh.Size
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	off, err := OpenOffline(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := off.Cleanup(); err != nil {
		t.Fatal(err)
	}
	off.Close()

	logs := &logBuffer{t: t}
	restart := func() *Peer {
		t.Helper()
		p, err := Start(ctx, dir, Options{Logger: log.New(logs, "peer0: ", 0)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	keys := func(p *Peer) []string {
		var out []string
		for _, sh := range p.store.Shards() {
			out = append(out, sh.Key)
		}
		slices.Sort(out)
		return out
	}
	unknown := func(p *Peer, want []string, bytes int64) {
		t.Helper()
		// A sync returns after a round that walked the whole state and
		// store: the round that deleted them all before.
		for range 2 {
			if err := p.tracker.sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if got := keys(p); !slices.Equal(got, want) {
			t.Fatalf("the store holds %v, want %v", got, want)
		}
		if n, b := p.tracker.unknownTotals(); n != len(want) || b != bytes {
			t.Fatalf("%d unknown shards of %d bytes, want %d of %d", n, b, len(want), bytes)
		}
		listed, err := readUnknown(filepath.Join(dir, config.ConsensusDir, unknownFile))
		if slices.Sort(listed); err != nil || !slices.Equal(listed, want) {
			t.Fatalf("the list holds %v (%v), want %v", listed, err, want)
		}
	}

	p = restart()
	unknown(p, roots, sizes)
	const said = "keeping 3 shards ("
	if n := strings.Count(logs.String(), said); n != 1 {
		t.Fatalf("logged %q %d times, want once", said, n)
	}
	// The new state pins one: it is the state's now, and goes on unpin.
	b := backend{p}
	if _, err := b.Pin(ctx, api.PinRequest{CID: roots[0], RMin: 1, RMax: 1}); err != nil {
		t.Fatal(err)
	}
	kept := roots[1:]
	keptBytes := int64(0)
	for _, sh := range p.store.Shards() {
		if sh.Key != roots[0] {
			keptBytes += sh.Size
		}
	}
	waitFor(t, 10*time.Second, func() error {
		if n, _ := p.tracker.unknownTotals(); n != 2 {
			return fmt.Errorf("%d unknown shards, want 2 once one is pinned", n)
		}
		return nil
	})
	if _, err := b.Unpin(ctx, roots[0]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		if got := keys(p); !slices.Equal(got, kept) {
			return fmt.Errorf("the store holds %v, want %v: the unpinned one gone, the unknown kept", got, kept)
		}
		return nil
	})
	unknown(p, kept, keptBytes)
	if !strings.Contains(logs.String(), "keeping 2 shards (") {
		t.Fatal("the new count was not logged")
	}

	// The list outlives a restart with the same state.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p = restart()
	unknown(p, kept, keptBytes)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	off, err = OpenOffline(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	shards, err := off.UnknownShards()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sh := range shards {
		got = append(got, sh.Key)
	}
	if !slices.Equal(got, kept) {
		t.Fatalf("UnknownShards = %v, want %v", got, kept)
	}
	if err := off.DeleteUnknown(shards); err != nil {
		t.Fatal(err)
	}
	if again, err := off.UnknownShards(); err != nil || len(again) != 0 || len(off.store.Shards()) != 0 {
		t.Fatalf("after DeleteUnknown: unknown %v (%v), store %v", again, err, off.store.Shards())
	}
	if listed, err := readUnknown(filepath.Join(dir, config.ConsensusDir, unknownFile)); err != nil || len(listed) != 0 {
		t.Fatalf("the list holds %v (%v) after DeleteUnknown", listed, err)
	}
}

// putShard commits a shard of one raw block of data under the block's CID.
func putShard(t *testing.T, st *store.Store, data string) string {
	t.Helper()
	h, err := mh.Sum([]byte(data), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	c := cid.NewCidV1(cid.Raw, h)
	w, err := st.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Put(dag.Block{CID: c, Data: []byte(data)}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(context.Background(), c.String(), c); err != nil {
		t.Fatal(err)
	}
	return c.String()
}

// TestLoadUnknown: which keys count as unknown when a daemon starts: all
// stored ones for a new state (no Raft data, or no list) or a damaged
// list, the listed ones still stored otherwise; a newer format refuses to
// start.
func TestLoadUnknown(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, b := putShard(t, st, "a"), putShard(t, st, "b")
	both := []string{a, b}
	slices.Sort(both)
	gone := putShard(t, st, "gone")
	if err := st.Delete(gone); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		fresh bool
		file  string // "": none
		want  []string
		err   string
		said  string
	}{
		{name: "fresh", fresh: true, file: unknownHeader + "1\n", want: both},
		{name: "no list", want: both},
		{name: "listed", file: unknownHeader + "1\n" + a + "\n" + gone + "\n", want: []string{a}},
		{name: "empty", file: unknownHeader + "1\n", want: nil},
		{name: "damaged", file: unknownHeader + "1\nnot-a-cid\n", want: both, said: `"not-a-cid" is not a shard key`},
		{name: "truncated", file: unknownHeader + "1\n" + a, want: both, said: "is truncated"},
		{name: "not a list", file: "hello\n", want: both, said: "is not a list of unknown shards"},
		{name: "newer", file: unknownHeader + "2\n", err: `is in format "2", and this shoal reads format 1; upgrade shoal`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "consensus", unknownFile)
			if tt.file != "" {
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var said []string
			got, err := loadUnknown(path, st, tt.fresh, func(f string, args ...any) { said = append(said, fmt.Sprintf(f, args...)) })
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, errNewerUnknown) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for k, size := range got {
				if size <= 0 {
					t.Errorf("%s: size %d", k, size)
				}
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, tt.want) {
				t.Fatalf("unknown %v, want %v", keys, tt.want)
			}
			if (tt.said == "") != (len(said) == 0) || tt.said != "" && !strings.Contains(said[0], tt.said) {
				t.Fatalf("logged %q, want %q", said, tt.said)
			}
			// What the daemon goes on with is on disk.
			listed, err := readUnknown(path)
			if slices.Sort(listed); err != nil || tt.file == "" || tt.fresh || tt.said != "" {
				if err != nil || !slices.Equal(listed, tt.want) {
					t.Fatalf("the list holds %v (%v), want %v", listed, err, tt.want)
				}
			}
		})
	}
}

func TestSizeText(t *testing.T) {
	for n, want := range map[int64]string{0: "0 bytes", 1023: "1023 bytes", 1024: "1.0 KiB", 412 << 20: "412 MiB",
		3 << 30: "3.0 GiB", 15<<40 + 1: "15 TiB"} {
		if got := sizeText(n); got != want {
			t.Errorf("sizeText(%d) = %q, want %q", n, got, want)
		}
	}
}
