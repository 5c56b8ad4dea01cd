package consensus

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-project/shoal/p2p"
)

// newStoppedPeer is a testPeer that has not started, so that a test can
// lay out its data first.
func newStoppedPeer(t *testing.T, name string) *testPeer {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, p2p.SecretSize)
	p := &testPeer{t: t, name: name, key: key, secret: secret, dir: filepath.Join(t.TempDir(), "consensus")}
	p.cfg = fastConfig(p.dir)
	p.cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Error, Output: testWriter{t}})
	t.Cleanup(p.stop)
	return p
}

// TestReadStateReplaysSnapshotAndLog: offline, ReadState gives the state
// the peer had: from its snapshot plus the log entries after it, with
// sharded adds, unpins and failed ops among them.
func TestReadStateReplaysSnapshotAndLog(t *testing.T) {
	peers := newCluster(t, 1, nil)
	p := peers[0]
	ctx := ctxT(t, 20*time.Second)
	pinN(t, p, 0, 10)
	if err := p.c.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	pinN(t, p, 10, 15)
	for _, op := range []Op{
		UnpinOp(testCID(3), time.Now()),
		AddBeginOp(Add{ID: "a1", Name: "big", RMin: 1, RMax: 1, Owner: p.id()}, time.Now()),
		AddShardOp("a1", 0, Shard{CID: testCID(100), Size: 10, Blocks: 1, Length: 5}, time.Now()),
	} {
		if err := p.c.Commit(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.c.Commit(ctx, UnpinOp(testCID(3), time.Now())); !errors.Is(err, ErrNotPinned) {
		t.Fatalf("second unpin: %v", err)
	}
	want := exportBytes(t, p.c.State())
	p.stop()

	s, rep, err := ReadState(p.dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := exportBytes(t, s); !bytes.Equal(got, want) {
		t.Fatalf("offline state\n%s\nwant\n%s", got, want)
	}
	if rep.Snapshot == "" || rep.SnapshotIndex == 0 || rep.Entries != 9 || rep.LastIndex <= rep.SnapshotIndex {
		t.Fatalf("replay %+v: want a snapshot and 9 commands after it", rep)
	}
	// Read-only: the data still starts as it was.
	p.start()
	if _, err := p.c.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	// A restarted leader applies its log once it commits its first entry.
	waitFor(t, 5*time.Second, "the restarted peer has its state back", func() bool {
		return bytes.Equal(exportBytes(t, p.c.State()), want)
	})

	if _, _, err := ReadState(t.TempDir()); !errors.Is(err, ErrNoState) {
		t.Fatalf("ReadState of an empty dir = %v, want ErrNoState", err)
	}
}

// TestResetState: a state written by ResetState starts as a one-peer
// cluster with exactly that state, which takes new commits; a second
// reset keeps the first one's data, with those commits, as a backup.
func TestResetState(t *testing.T) {
	p := newStoppedPeer(t, "solo")
	s := exportGoldenState(t)
	backup, err := ResetState(p.dir, p.id(), s, t0)
	if err != nil || backup != "" {
		t.Fatalf("ResetState of a new dir = %q, %v", backup, err)
	}
	if ents, _ := filepath.Glob(p.dir + ".*"); len(ents) != 0 {
		t.Fatalf("left behind %v", ents)
	}
	p.start()
	ctx := ctxT(t, 20*time.Second)
	if l, err := p.c.WaitForLeader(ctx); err != nil || l != p.id() {
		t.Fatalf("leader %s, %v; want itself", l, err)
	}
	sameState(t, p.c.State(), s)
	members, err := p.c.Peers(ctx)
	if err != nil || len(members) != 1 || members[0].ID != p.id() {
		t.Fatalf("members %+v, %v", members, err)
	}
	pinN(t, p, 0, 3)
	if p.c.State().Len() != s.Len()+3 {
		t.Fatalf("%d pins after 3 commits on %d", p.c.State().Len(), s.Len())
	}
	after := exportBytes(t, p.c.State())
	p.stop()

	backup, err = ResetState(p.dir, p.id(), newState(), t0)
	if want := p.dir + ".backup-20261125T120000Z"; err != nil || backup != want {
		t.Fatalf("second ResetState = %q, %v; want backup %s", backup, err, want)
	}
	old, _, err := ReadState(backup)
	if err != nil || !bytes.Equal(exportBytes(t, old), after) {
		t.Fatalf("backup does not hold the old state: %v", err)
	}
	now, _, err := ReadState(p.dir)
	if err != nil || now.Len() != 0 {
		t.Fatalf("after reset to empty: %v, %d pins", err, now.Len())
	}
	// Same second: the backup gets a suffix instead of failing.
	backup, err = ResetState(p.dir, p.id(), s, t0)
	if want := p.dir + ".backup-20261125T120000Z-2"; err != nil || backup != want {
		t.Fatalf("third ResetState = %q, %v; want backup %s", backup, err, want)
	}
}

// TestResetStateFailureKeepsOldData: when the new data cannot be written,
// the old data stays in place, untouched, and nothing is left beside it.
func TestResetStateFailureKeepsOldData(t *testing.T) {
	p := newStoppedPeer(t, "solo")
	s := goldenState(t)
	if _, err := ResetState(p.dir, p.id(), s, t0); err != nil {
		t.Fatal(err)
	}
	before := exportBytes(t, s)
	// A state that snapshots but does not restore: a name longer than a
	// pin may have (only a bug could make one).
	bad := newState()
	long := NewPin(fixedCID(t, true, "long"))
	long.Name = strings.Repeat("n", MaxNameLen+1)
	bad.pins[long.CID] = &long
	_, err := ResetState(p.dir, p.id(), bad, t0)
	if err == nil || !strings.Contains(err.Error(), "exceeds the limit 4096") {
		t.Fatalf("ResetState of a state that does not read back = %v", err)
	}
	got, _, err := ReadState(p.dir)
	if err != nil || !bytes.Equal(exportBytes(t, got), before) {
		t.Fatalf("old data changed: %v", err)
	}
	if ents, _ := filepath.Glob(p.dir + ".*"); len(ents) != 0 {
		t.Fatalf("left behind %v", ents)
	}
}

// TestResetStateCrash: a crash during ResetState's swap, after its intent
// is written and between its two renames (when no data directory exists),
// is completed by the next New: the peer starts with the new state, the
// old one in the backup, and nothing left beside; so is one found by
// FinishReset, which the state tools run. A crash before the intent
// leaves the old data in place.
func TestResetStateCrash(t *testing.T) {
	for _, step := range []string{"intent", "aside"} {
		t.Run(step, func(t *testing.T) {
			p := newStoppedPeer(t, "solo")
			old := goldenState(t)
			if _, err := ResetState(p.dir, p.id(), old, t0); err != nil {
				t.Fatal(err)
			}
			oldBytes := exportBytes(t, old)
			s := exportGoldenState(t)
			_, err := resetState(p.dir, p.id(), s, t0.Add(time.Hour), func(at string) bool { return at == step })
			if !errors.Is(err, errCrashed) {
				t.Fatalf("resetState stopped at %s: %v", step, err)
			}
			if _, err := os.Stat(p.dir); step == "aside" && !os.IsNotExist(err) {
				t.Fatalf("stopped between the renames, %s is there (%v): not the window", p.dir, err)
			}
			p.start()
			ctx := ctxT(t, 20*time.Second)
			if l, err := p.c.WaitForLeader(ctx); err != nil || l != p.id() {
				t.Fatalf("leader %s, %v; want itself", l, err)
			}
			sameState(t, p.c.State(), s)
			p.stop()
			backup := p.dir + ".backup-20261125T130000Z"
			if got, _, err := ReadState(backup); err != nil || !bytes.Equal(exportBytes(t, got), oldBytes) {
				t.Fatalf("backup %s does not hold the old state: %v", backup, err)
			}
			if ents, _ := filepath.Glob(p.dir + ".*"); len(ents) != 1 || ents[0] != backup {
				t.Fatalf("beside the data: %v, want the backup only", ents)
			}
		})
	}
	t.Run("FinishReset", func(t *testing.T) {
		p := newStoppedPeer(t, "solo")
		s := exportGoldenState(t)
		if _, err := resetState(p.dir, p.id(), s, t0, func(string) bool { return true }); !errors.Is(err, errCrashed) {
			t.Fatal(err)
		}
		if _, _, err := ReadState(p.dir); !errors.Is(err, ErrNoState) {
			t.Fatalf("before FinishReset, ReadState = %v; want ErrNoState", err)
		}
		if err := FinishReset(p.dir); err != nil {
			t.Fatal(err)
		}
		got, _, err := ReadState(p.dir)
		if err != nil {
			t.Fatal(err)
		}
		sameState(t, got, s)
		if err := FinishReset(p.dir); err != nil {
			t.Fatalf("a second FinishReset: %v", err)
		}
	})
	t.Run("damaged intent", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "consensus")
		for _, text := range []string{"", "shoal-reset 2\nnew consensus.import-1\nbackup \n",
			"shoal-reset 1\nnew ../etc\nbackup \n", "shoal-reset 1\nnew consensus.import-1\nbackup /tmp/x\n"} {
			if err := os.WriteFile(dir+intentSuffix, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := FinishReset(dir); err == nil || !strings.Contains(err.Error(), dir+intentSuffix) {
				t.Errorf("FinishReset with intent %q = %v; want an error naming the file", text, err)
			}
		}
	})
}

// TestNewRefusesUnknownFormats: a peer whose data holds a snapshot or a
// log entry in a format newer than it reads refuses to start, saying why,
// rather than skip it and run with another state; so does ReadState.
func TestNewRefusesUnknownFormats(t *testing.T) {
	t.Run("log entry", func(t *testing.T) {
		p := newStoppedPeer(t, "solo")
		if _, err := ResetState(p.dir, p.id(), goldenState(t), t0); err != nil {
			t.Fatal(err)
		}
		good, _ := PinOp(NewPin(testCID(1)), t0).MarshalBinary()
		newer := append([]byte{OpFormatVersion + 1}, good[1:]...)
		w, err := openWAL(filepath.Join(p.dir, "raft", "wal"), nil)
		if err != nil {
			t.Fatal(err)
		}
		err = w.StoreLogs([]*raft.Log{
			{Index: 2, Term: 2, Type: raft.LogCommand, Data: good},
			{Index: 3, Term: 2, Type: raft.LogCommand, Data: newer},
		})
		if cerr := w.Close(); err != nil || cerr != nil {
			t.Fatal(err, cerr)
		}
		want := fmt.Sprintf("consensus data in %s: log entry 3 is in op format 2, and this shoal reads format 1; "+
			"upgrade shoal, or export the state with the shoal that wrote it and import it here: "+
			"consensus data in an unsupported format", p.dir)
		checkRefused(t, p, want)
	})
	t.Run("snapshot", func(t *testing.T) {
		p := newStoppedPeer(t, "solo")
		if _, err := ResetState(p.dir, p.id(), goldenState(t), t0); err != nil {
			t.Fatal(err)
		}
		snaps, err := openSnapshots(filepath.Join(p.dir, "raft"))
		if err != nil {
			t.Fatal(err)
		}
		_, trans := raft.NewInmemTransport("x")
		defer trans.Close()
		sink, err := snaps.Create(raft.SnapshotVersionMax, 5, 2, raft.Configuration{Servers: []raft.Server{{ID: "x", Address: "x"}}}, 1, trans)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sink.Write([]byte("shoal-pinset 5\nwhatever comes next\n")); err != nil {
			t.Fatal(err)
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("consensus data in %s: snapshot %s is in pinset format 5, and this shoal reads formats 1 to 4; "+
			"upgrade shoal, or export the state with the shoal that wrote it and import it here: "+
			"consensus data in an unsupported format", p.dir, sink.ID())
		checkRefused(t, p, want)
	})
}

func checkRefused(t *testing.T, p *testPeer, want string) {
	t.Helper()
	if _, _, err := ReadState(p.dir); !errors.Is(err, ErrUnsupportedFormat) || err.Error() != want {
		t.Fatalf("ReadState =\n  %v\nwant\n  %s", err, want)
	}
	hc := p2p.DefaultConfig()
	hc.ListenAddrs = []ma.Multiaddr{ma.StringCast(anyLoopbackPort)}
	hc.PrivKey, hc.Secret = p.key, p.secret
	h, err := p2p.New(hc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := New(h, p.cfg)
	if err == nil {
		_ = c.Close()
		t.Fatal("New started on data in a newer format")
	}
	if !errors.Is(err, ErrUnsupportedFormat) || err.Error() != want {
		t.Fatalf("New =\n  %v\nwant\n  %s", err, want)
	}
	// New let go of the log: it opens again.
	if _, _, err := ReadState(p.dir); !strings.Contains(fmt.Sprint(err), "unsupported format") {
		t.Fatalf("after New: %v", err)
	}
}

// TestPastFormatsRead: every format version there has been, kept as a
// fixture in testdata, still reads: each snapshot version through a
// peer's data directory (the startup check accepts it and the state
// replays), and each export version through ReadExport.
func TestPastFormatsRead(t *testing.T) {
	snapshots := map[string]*State{
		"snapshot-v1.hex": goldenState(t),
		"snapshot-v2.hex": shardedGoldenState(t),
	}
	for name, want := range snapshots {
		t.Run(name, func(t *testing.T) {
			text, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			b, err := hex.DecodeString(strings.ReplaceAll(string(text), "\n", ""))
			if err != nil {
				t.Fatal(err)
			}
			p := newStoppedPeer(t, "solo")
			if _, err := ResetState(p.dir, p.id(), newState(), t0); err != nil {
				t.Fatal(err)
			}
			snaps, err := openSnapshots(filepath.Join(p.dir, "raft"))
			if err != nil {
				t.Fatal(err)
			}
			_, trans := raft.NewInmemTransport("x")
			defer trans.Close()
			sink, err := snaps.Create(raft.SnapshotVersionMax, 7, 2, raft.Configuration{Servers: []raft.Server{
				{ID: raft.ServerID(p.id().String()), Address: raft.ServerAddress(p.id().String())}}}, 1, trans)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sink.Write(b); err != nil {
				t.Fatal(err)
			}
			if err := sink.Close(); err != nil {
				t.Fatal(err)
			}
			got, rep, err := ReadState(p.dir)
			if err != nil || rep.Snapshot != sink.ID() {
				t.Fatalf("ReadState: %v, %+v", err, rep)
			}
			sameState(t, got, want)
		})
	}
	exports, _ := filepath.Glob(filepath.Join("testdata", "export-v*.jsonl"))
	if len(exports) != ExportVersion {
		t.Fatalf("%d export fixtures for %d versions: keep one of each", len(exports), ExportVersion)
	}
	for _, path := range exports {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ReadExport(bytes.NewReader(b)); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
}

// BenchmarkCheckFormats measures the startup check over a log as long as
// the default retention lets it get between snapshots
// (SnapshotThreshold + TrailingLogs entries).
func BenchmarkCheckFormats(b *testing.B) {
	dir := b.TempDir()
	if _, err := ResetState(dir, fixedPeer(b, 1), newState(), t0); err != nil {
		b.Fatal(err)
	}
	w, err := openWAL(filepath.Join(dir, "raft", "wal"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	cfg := DefaultConfig()
	n := int(cfg.SnapshotThreshold + cfg.TrailingLogs)
	logs := make([]*raft.Log, 0, n)
	for i := range n {
		p := NewPin(testCID(i))
		p.RMin, p.RMax, p.Allocations = 2, 3, []peer.ID{fixedPeer(b, 1), fixedPeer(b, 2), fixedPeer(b, 3)}
		data, err := PinOp(p, t0).MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: uint64(i + 2), Term: 1, Type: raft.LogCommand, Data: data})
	}
	if err := w.StoreLogs(logs); err != nil {
		b.Fatal(err)
	}
	snaps, err := openSnapshots(filepath.Join(dir, "raft"))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if err := checkFormats(dir, w, snaps); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n), "entries")
}

// TestPruneBackups keeps the newest backups by their stamps, and touches
// nothing else beside the data directory.
func TestPruneBackups(t *testing.T) {
	parent := t.TempDir()
	data := filepath.Join(parent, "consensus")
	names := []string{"consensus.backup-20261201T000000Z", "consensus.backup-20261203T000000Z",
		"consensus.backup-20261203T000000Z-2", "consensus.backup-20261202T000000Z", "consensus", "consensus.import-x", "other.backup-1"}
	for _, n := range names {
		if err := os.MkdirAll(filepath.Join(parent, n, "raft"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	gone, err := PruneBackups(data, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(parent, "consensus.backup-20261201T000000Z"), filepath.Join(parent, "consensus.backup-20261202T000000Z")}
	if !slices.Equal(gone, want) {
		t.Fatalf("deleted %v, want %v", gone, want)
	}
	ents, _ := os.ReadDir(parent)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if want := []string{"consensus", "consensus.backup-20261203T000000Z", "consensus.backup-20261203T000000Z-2", "consensus.import-x", "other.backup-1"}; !slices.Equal(left, want) {
		t.Fatalf("left %v, want %v", left, want)
	}
	if gone, err := PruneBackups(data, 0); err != nil || len(gone) != 2 {
		t.Fatalf("keep 0: deleted %v, %v", gone, err)
	}
}
