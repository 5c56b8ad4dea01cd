package consensus

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

// bigState builds n plain pins with a name and three allocations among
// five peers, as Apply would store them.
func bigState(tb testing.TB, n int) *State {
	tb.Helper()
	peers := make([]peer.ID, 5)
	for i := range peers {
		peers[i] = fixedPeer(tb, byte(i+1))
	}
	s := newState()
	s.pins = make(map[cid.Cid]*Pin, n)
	var seed [8]byte
	for i := range n {
		binary.BigEndian.PutUint64(seed[:], uint64(i))
		h, err := mh.Sum(seed[:], mh.SHA2_256, -1)
		if err != nil {
			tb.Fatal(err)
		}
		c := cid.NewCidV1(cid.Raw, h)
		at := t0.Add(time.Duration(i) * time.Millisecond)
		s.pins[c] = &Pin{
			CID: c, Name: "backups/host-" + strconv.Itoa(i%1000) + "/day.tar", RMin: 2, RMax: 3,
			Allocations: []peer.ID{peers[i%5], peers[(i+1)%5], peers[(i+2)%5]},
			Created:     at, Updated: at, Kind: KindPlain,
		}
	}
	return s
}

// BenchmarkSnapshotRestore1M persists a 1,000,000-pin state through raft's
// file snapshot store (CRC, fsync) into a temp dir and restores it into a
// fresh state, reporting each phase and the process's peak RSS:
//
//	go test ./consensus -run '^$' -bench SnapshotRestore1M -benchtime 1x
//
// Target: snapshot+restore under 10 s and 1 GiB RSS.
func BenchmarkSnapshotRestore1M(b *testing.B) {
	const n = 1_000_000
	s := bigState(b, n)
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		store, err := raft.NewFileSnapshotStore(b.TempDir(), 1, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		snap, err := fsm{s: s}.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		sink, err := store.Create(raft.SnapshotVersionMax, 1, 1, raft.Configuration{}, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := snap.Persist(sink); err != nil {
			b.Fatal(err)
		}
		persisted := time.Since(start)

		metas, err := store.List()
		if err != nil || len(metas) != 1 {
			b.Fatalf("list snapshots: %v %d", err, len(metas))
		}
		_, rc, err := store.Open(metas[0].ID)
		if err != nil {
			b.Fatal(err)
		}
		restored := newState()
		rstart := time.Now()
		if err := (fsm{s: restored}).Restore(rc); err != nil {
			b.Fatal(err)
		}
		restoredIn := time.Since(rstart)
		if restored.Len() != n {
			b.Fatalf("restored %d pins", restored.Len())
		}
		b.ReportMetric(persisted.Seconds(), "persist-s")
		b.ReportMetric(restoredIn.Seconds(), "restore-s")
		b.ReportMetric(float64(metas[0].Size)/n, "bytes/pin")
		b.ReportMetric(peakRSS(b)/(1<<20), "peak-RSS-MiB")
	}
}

// peakRSS reads VmHWM, the process's peak resident set, from /proc.
func peakRSS(tb testing.TB) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%f kB", &kb); err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}
