package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ingest"
)

// TestShedOnFullDisk is the regression test of the chaos suite's long
// run: a peer allocated a pin whose disk then fills up cannot store it.
// It used to stay in pin_error for good; now, since the other holders
// have it pinned at rmin, it gives up its allocation. The store of peer 2
// is a 4 MiB tmpfs (so it needs root), filled once the pin is allocated.
func TestShedOnFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts a tmpfs: needs root")
	}
	var store string
	beforeStart = func(t *testing.T, i int, dir string) {
		if i != 2 {
			return
		}
		store = filepath.Join(dir, config.StoreDir)
		if err := os.MkdirAll(store, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", store, "tmpfs", 0, "size=4m"); err != nil {
			t.Skipf("mount a tmpfs: %v", err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(store, syscall.MNT_DETACH) })
	}
	t.Cleanup(func() { beforeStart = nil })
	peers := newTestPeersWith(t, 3, fastHealth)
	ctx := context.Background()
	data := seeded("shed", 3<<20+1)
	// The pin comes first, its content later: every peer is allocated it
	// (rmax 3) while peer 2 still has room.
	params, err := api.AddParams{}.DAGOptions().Params()
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ingest.Config{Params: params})
	if err != nil {
		t.Fatal(err)
	}
	root, err := in.AddReader(ctx, bytes.NewReader(data), "", ingest.AddOptions{}, sinkFunc(func(dag.Block) error { return nil }), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := root.CID
	pin, err := (backend{peers[0]}).Pin(ctx, api.PinRequest{CID: c.String(), Name: "shed", RMin: 1, RMax: 3})
	if err != nil || len(pin.Allocations) != 3 {
		t.Fatalf("pin: %+v, %v; want it on all three peers", pin, err)
	}
	// Now peer 2's disk fills up.
	var st syscall.Statfs_t
	if err := syscall.Statfs(store, &st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store, "filler"), make([]byte, int64(st.Bavail)*st.Bsize-32<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	// The content reaches peer 0's store, and the others fetch it.
	w, err := peers[0].store.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.AddReader(ctx, bytes.NewReader(data), "", ingest.AddOptions{}, sinkFunc(w.Put), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(ctx, c.String(), c); err != nil {
		t.Fatal(err)
	}
	if _, err := (backend{peers[0]}).Recover(ctx, c.String(), false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() error {
		p, ok := peers[0].cons.State().Get(c)
		if !ok {
			return fmt.Errorf("pin gone")
		}
		if slices.Contains(p.Allocations, peers[2].ID()) {
			return fmt.Errorf("still allocated to peer 2 (%s): %+v", peers[2].tracker.status(c).Error, p.Allocations)
		}
		for _, q := range peers[:2] {
			if s := q.tracker.status(c); s.Status != api.StatusPinned {
				return fmt.Errorf("%s: %s %s", q.cfg.PeerName, s.Status, s.Error)
			}
		}
		return nil
	})
	if st := peers[2].tracker.status(c); st.Status == api.StatusPinError && !strings.HasPrefix(st.Error, "this peer's disk is full") {
		t.Fatalf("peer 2: %+v", st)
	}
}
