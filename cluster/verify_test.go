package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/ingest"
)

// corruptShard flips one byte in the middle of the data of peer p's
// stored shard key, on disk.
func corruptShard(t *testing.T, p *Peer, key string) {
	t.Helper()
	path := filepath.Join(p.dir, config.StoreDir, "shards", key+".car")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	off := 4096 + (fi.Size()-4096)/2
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{^b[0]}, off); err != nil {
		t.Fatal(err)
	}
}

// waitApplied waits until every peer's state shows the pin root.
func waitApplied(t *testing.T, peers []*Peer, root cid.Cid) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		for _, p := range peers {
			if _, ok := p.cons.State().Get(root); !ok {
				return fmt.Errorf("%s has not applied the pin of %s", p.cfg.PeerName, root)
			}
		}
		return nil
	})
}

// TestVerifyRepairs: a byte flipped in one stored shard is reported by
// Verify of the pin (every peer) as exactly that part corrupt on exactly
// that peer, everything else ok; the shard is quarantined and fetched
// again, a second Verify finds everything ok, and the file reads back
// identical.
func TestVerifyRepairs(t *testing.T) {
	peers := newTestPeersWith(t, 3, fastHealth)
	ctx := context.Background()
	data := seeded("verify", 3<<20+99)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "v", Chunker: "size-65536",
		Shard: true, ShardSize: 1 << 20, RMin: 2, RMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := cid.Decode(res.CID)
	waitApplied(t, peers, root)
	pin, _ := peers[0].cons.State().Get(root)
	sh := pin.Shards[1]
	var victim *Peer
	for _, p := range peers {
		if slices.Contains(sh.Allocations, p.ID()) {
			victim = p
			break
		}
	}
	waitFor(t, 10*time.Second, func() error {
		if !victim.store.HasShard(sh.CID.String()) {
			return fmt.Errorf("%s does not hold shard 1 yet", victim.cfg.PeerName)
		}
		return nil
	})
	corruptShard(t, victim, sh.CID.String())

	// Asked through another peer: the RPC path.
	asker := peers[0]
	if asker == victim {
		asker = peers[1]
	}
	got, err := backend{asker}.Verify(ctx, res.CID, false)
	if err != nil {
		t.Fatal(err)
	}
	parts := 1 + len(pin.Shards) // the cluster-DAG and the shards
	if len(got) != 2*parts {
		t.Fatalf("%d results, want %d (every part on its 2 holders): %+v", len(got), 2*parts, got)
	}
	for _, r := range got {
		damaged := r.Peer == victim.ID().String() && r.Part == sh.CID.String()
		switch {
		case damaged && (r.Status != api.VerifyCorrupt || r.Kind != api.PartShard || r.Root != res.CID ||
			!strings.HasPrefix(r.Error, "shard "+sh.CID.String()+": ")):
			t.Errorf("damaged part: %+v", r)
		case !damaged && (r.Status != api.VerifyOK || r.Error != ""):
			t.Errorf("healthy part: %+v", r)
		}
	}
	if q := victim.store.Quarantined(); len(q) != 1 || q[0].Key != sh.CID.String() {
		t.Fatalf("quarantined: %+v", q)
	}
	waitFor(t, 20*time.Second, func() error {
		got, err := backend{victim}.Verify(ctx, res.CID, true)
		if err != nil {
			return err
		}
		for _, r := range got {
			if r.Status != api.VerifyOK {
				return fmt.Errorf("%s: %s %s", r.Part, r.Status, r.Error)
			}
		}
		return nil
	})
	var out bufWriter
	if err := (backend{victim}).Cat(ctx, res.CID, 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("read back: %v (%d of %d bytes)", err, out.Len(), len(data))
	}

	// A part the state gives the victim that its store lost behind the
	// tracker's back: verify of everything lists it as missing.
	lost := pin.Shards[0]
	if !slices.Contains(lost.Allocations, victim.ID()) {
		lost = pin.Shards[1]
	}
	if err := victim.store.Delete(lost.CID.String()); err != nil {
		t.Fatal(err)
	}
	all, err := backend{victim}.Verify(ctx, "", true)
	if err != nil {
		t.Fatal(err)
	}
	missing := 0
	for _, r := range all {
		switch {
		case r.Part == lost.CID.String():
			missing++
			if r.Status != api.VerifyMissing || r.Kind != api.PartShard || r.Root != res.CID ||
				!strings.HasPrefix(r.Error, "not stored here; the tracker says ") {
				t.Errorf("lost part: %+v", r)
			}
		case r.Status != api.VerifyOK:
			t.Errorf("stored part: %+v", r)
		}
	}
	if missing != 1 {
		t.Fatalf("verify of everything on %s lists the lost part %d times: %+v", victim.cfg.PeerName, missing, all)
	}

	// Input errors.
	if _, err := (backend{asker}).Verify(ctx, sh.CID.String(), false); err == nil ||
		err.Error() != fmt.Sprintf("bad request: %s is part of the sharded pin %s; verify %s instead", sh.CID, res.CID, res.CID) {
		t.Errorf("verify of a shard: %v", err)
	}
}

// TestPeriodicVerify: with health.verify_interval set, each peer finds
// and repairs a damaged shard by itself.
func TestPeriodicVerify(t *testing.T) {
	peers := newTestPeersWith(t, 2, func(i int, cfg *config.Config) {
		fastHealth(i, cfg)
		cfg.Health.VerifyInterval = config.Duration(500 * time.Millisecond)
	})
	ctx := context.Background()
	data := seeded("periodic", 1<<20+5)
	res, err := backend{peers[0]}.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "p", Chunker: "size-65536",
		Shard: true, ShardSize: 512 << 10, RMin: 2, RMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := cid.Decode(res.CID)
	waitApplied(t, peers, root)
	pin, _ := peers[1].cons.State().Get(root)
	key := pin.Shards[0].CID.String()
	waitFor(t, 10*time.Second, func() error {
		if !peers[1].store.HasShard(key) {
			return fmt.Errorf("peer1 does not hold shard 0 yet")
		}
		return nil
	})
	corruptShard(t, peers[1], key)
	waitFor(t, 20*time.Second, func() error {
		if q := peers[1].store.Quarantined(); len(q) != 1 || q[0].Key != key {
			return fmt.Errorf("quarantined: %+v", q)
		}
		if !peers[1].store.HasShard(key) {
			return fmt.Errorf("not fetched again yet")
		}
		return peers[1].store.Verify(ctx, key)
	})
}

// TestRecoverRetriesNow: a pin nobody can provide is a pin_error that
// waits out its backoff (10 s at first). When its content appears in one
// peer's store without any op (nothing wakes the others), recover makes
// the others fetch it at once instead of at their next retry.
func TestRecoverRetriesNow(t *testing.T) {
	peers := newTestPeers(t, 3)
	ctx := context.Background()
	data := seeded("shoal-golden-1048577", 1048577)
	const root = "QmdSaj6ufqXz4byUKYGoeZ2gohe4K7H74eeqsWjw49vkUQ"
	c := cid.MustParse(root)
	if _, err := (backend{peers[2]}).Pin(ctx, api.PinRequest{CID: root, Name: "later", RMin: -1, RMax: -1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		for _, p := range peers {
			if st := p.tracker.status(c); st.Status != api.StatusPinError {
				return fmt.Errorf("%s: %s %q", p.cfg.PeerName, st.Status, st.Error)
			}
		}
		return nil
	})
	failedAt := time.Now()
	// The blocks reach peer 0's store directly, as a plain add writes
	// them, but without the pin op that add would commit.
	params, err := api.AddParams{}.DAGOptions().Params()
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ingest.Config{Params: params})
	if err != nil {
		t.Fatal(err)
	}
	w, err := peers[0].store.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := in.AddReader(ctx, bytes.NewReader(data), "", ingest.AddOptions{}, sinkFunc(w.Put), nil)
	if err != nil || got.CID != c {
		t.Fatalf("ingest: %v, %s", err, got.CID)
	}
	if _, err := w.Commit(ctx, root, c); err != nil {
		t.Fatal(err)
	}
	// Nothing tells peer 1 that peer 0 holds it now: peer 1 tries again
	// when its backoff ends, not before. Two of its tracker rounds that
	// began after the commit show it: each fails a pin, committed for
	// that purpose, of content nobody holds. A round reads the changes
	// when it begins, so the second marker fails in a round after the one
	// that failed the first, which has then ended, with any fetch it
	// queued: a retry not due would have made c pinned (or pinning) by
	// then.
	for i := range 2 {
		marker := rawBlock(t, fmt.Appendf(nil, "tracker round marker %d", i)).CID
		if _, err := (backend{peers[2]}).Pin(ctx, api.PinRequest{CID: marker.String(), Name: "marker", RMin: -1, RMax: -1}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, func() error {
			if st := peers[1].tracker.status(marker); st.Status != api.StatusPinError {
				return fmt.Errorf("peer 1, marker %d: %s %q", i, st.Status, st.Error)
			}
			return nil
		})
	}
	if st := peers[1].tracker.status(c); st.Status != api.StatusPinError {
		t.Fatalf("peer 1 without recover: %s %q, want pin_error until its retry", st.Status, st.Error)
	}
	reports, err := backend{peers[2]}.Recover(ctx, root, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 3 {
		t.Fatalf("%d tracker reports, want one per peer: %+v", len(reports), reports)
	}
	waitFor(t, 5*time.Second, func() error {
		for _, p := range peers[1:] {
			if st := p.tracker.status(c); st.Status != api.StatusPinned {
				return fmt.Errorf("%s: %s %q", p.cfg.PeerName, st.Status, st.Error)
			}
		}
		return nil
	})
	if took := time.Since(failedAt); took >= 10*time.Second {
		t.Fatalf("pinned %s after the failure: that is the backoff's retry, not recover's", took)
	}
	for _, p := range peers[1:] {
		var out catBuf
		if err := (backend{p}).Cat(ctx, root, 0, -1, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("%s: cat after recover: %v, %d bytes", p.cfg.PeerName, err, out.Len())
		}
	}
}
