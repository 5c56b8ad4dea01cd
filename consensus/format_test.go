package consensus

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// Fixed inputs for golden vectors: nothing here may depend on randomness
// or the clock.

func fixedPeer(t testing.TB, seed byte) peer.ID {
	t.Helper()
	sk, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func fixedCID(t testing.TB, v1 bool, data string) cid.Cid {
	t.Helper()
	h, err := mh.Sum([]byte(data), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	if v1 {
		return cid.NewCidV1(cid.Raw, h)
	}
	return cid.NewCidV0(h)
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC)

func goldenOps(t testing.TB) map[string]Op {
	p1, p2 := fixedPeer(t, 1), fixedPeer(t, 2)
	return map[string]Op{
		"op-pin-plain-everywhere": PinOp(NewPin(fixedCID(t, false, "a")), t0),
		"op-pin-allocated": PinOp(Pin{
			CID: fixedCID(t, true, "b"), Name: "photos/2026.tar", RMin: 2, RMax: 3,
			Allocations: []peer.ID{p1, p2}, Kind: KindPlain,
		}, t0.Add(time.Second)),
		"op-unpin": UnpinOp(fixedCID(t, true, "b"), t0.Add(2*time.Second)),
		"op-add-begin": AddBeginOp(Add{ID: "add-0001", Name: "big.iso", RMin: 2, RMax: 3, Owner: p1},
			t0.Add(3*time.Second)),
		"op-add-shard": AddShardOp("add-0001", 0, Shard{CID: fixedCID(t, true, "s0"), Size: 104857600,
			Blocks: 401, Offset: 0, Length: 104726528, Allocations: []peer.ID{p2, p1}}, t0.Add(4*time.Second)),
		"op-add-commit": AddCommitOp("add-0001", fixedCID(t, false, "root"), fixedCID(t, true, "cdag"),
			104726528, []peer.ID{p1, p2}, t0.Add(5*time.Second)),
		"op-add-abort": AddAbortOp("add-0002", t0.Add(6*time.Second)),
		"op-repair": RepairOp(fixedCID(t, false, "root"), fixedCID(t, true, "s0"), []peer.ID{p2, p1},
			[]peer.ID{fixedPeer(t, 3)}, t0.Add(8*time.Second)),
		"op-realloc": ReallocOp(fixedCID(t, false, "root"), fixedCID(t, true, "s0"), []peer.ID{p2, p1},
			[]peer.ID{p1, fixedPeer(t, 3)}, t0.Add(9*time.Second)),
		"op-removed": RemovedOp(fixedPeer(t, 4), t0.Add(10*time.Second)),
	}
}

// checkGolden compares got with testdata/name.hex (hex, 32 bytes a line).
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".hex")
	var lines []string
	for b := got; len(b) > 0; b = b[min(32, len(b)):] {
		lines = append(lines, hex.EncodeToString(b[:min(32, len(b))]))
	}
	text := strings.Join(lines, "\n") + "\n"
	if *update {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if string(want) != text {
		t.Fatalf("%s changed: the format is frozen; bump its version instead.\ngot:\n%swant:\n%s", path, text, want)
	}
}

func TestOpGolden(t *testing.T) {
	for name, op := range goldenOps(t) {
		t.Run(name, func(t *testing.T) {
			b, err := op.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, name, b)
			got, err := DecodeOp(b)
			if err != nil {
				t.Fatal(err)
			}
			want := op
			want.Time = want.Time.UTC()
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestOpEncodingLayout(t *testing.T) {
	// The first bytes are the format version and the op type, whatever
	// the rest: readers dispatch on them.
	for _, op := range goldenOps(t) {
		b, _ := op.MarshalBinary()
		if b[0] != OpFormatVersion || OpType(b[1]) != op.Type {
			t.Fatalf("%s starts %x", op, b[:2])
		}
	}
	b, _ := UnpinOp(fixedCID(t, true, "b"), t0).MarshalBinary()
	if len(b) > 50 {
		t.Fatalf("an unpin takes %d bytes; the encoding should be compact", len(b))
	}
}

func TestOpValidateAndDecodeRefuse(t *testing.T) {
	c := fixedCID(t, true, "x")
	p1 := fixedPeer(t, 1)
	good := PinOp(NewPin(c), t0)
	enc := func(op Op) []byte {
		b, err := op.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name   string
		mutate func(*Op)
	}{
		{"no time", func(o *Op) { o.Time = time.Time{} }},
		{"time out of range", func(o *Op) { o.Time = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"no cid", func(o *Op) { o.Pin.CID = cid.Undef }},
		{"unknown type", func(o *Op) { o.Type = 9 }},
		{"zero kind", func(o *Op) { o.Pin.Kind = 0 }},
		{"rmin zero", func(o *Op) { o.Pin.RMin, o.Pin.RMax = 0, 3 }},
		{"rmax below rmin", func(o *Op) { o.Pin.RMin, o.Pin.RMax = 3, 2 }},
		{"everywhere min with finite max", func(o *Op) { o.Pin.RMin, o.Pin.RMax = -1, 2 }},
		{"rmin too large", func(o *Op) { o.Pin.RMin, o.Pin.RMax = MaxReplication+1, -1 }},
		{"name too long", func(o *Op) { o.Pin.Name = strings.Repeat("n", MaxNameLen+1) }},
		{"duplicate allocation", func(o *Op) { o.Pin.Allocations = []peer.ID{p1, p1} }},
		{"bad allocation", func(o *Op) { o.Pin.Allocations = []peer.ID{"not a multihash"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := good
			tt.mutate(&op)
			if _, err := op.MarshalBinary(); !errors.Is(err, ErrInvalidOp) {
				t.Fatalf("MarshalBinary = %v, want ErrInvalidOp", err)
			}
		})
	}

	raw := enc(good)
	bad := map[string][]byte{
		"empty":           {},
		"version 2":       append([]byte{2}, raw[1:]...),
		"unknown type":    append([]byte{1, 77}, raw[2:]...),
		"truncated":       raw[:len(raw)-1],
		"trailing byte":   append(append([]byte(nil), raw...), 0),
		"huge cid length": {1, 1, 2, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad cid":         {1, 2, 2, 3, 1, 2, 3},
	}
	for name, b := range bad {
		t.Run("decode "+name, func(t *testing.T) {
			if _, err := DecodeOp(b); !errors.Is(err, ErrInvalidOp) {
				t.Fatalf("DecodeOp = %v, want ErrInvalidOp", err)
			}
		})
	}
}

func FuzzDecodeOp(f *testing.F) {
	for _, op := range goldenOps(f) {
		b, _ := op.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte{1, 1})
	f.Add([]byte{1, 2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		op, err := DecodeOp(b)
		if !bytes.Equal(b, orig) {
			t.Fatal("DecodeOp modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidOp) {
				t.Fatalf("error %v does not wrap ErrInvalidOp", err)
			}
			return
		}
		// What decodes re-encodes, and decodes to the same op: no state
		// can be reached through the decoder that the encoder refuses.
		b2, err := op.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded op %+v does not encode: %v", op, err)
		}
		op2, err := DecodeOp(b2)
		if err != nil || !reflect.DeepEqual(op, op2) {
			t.Fatalf("re-encoded op decodes to %+v, %v; want %+v", op2, err, op)
		}
		// Applying it to a state must not panic either.
		_ = newState().apply(0, op)
	})
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

func snapshotBytes(t testing.TB, s *State) []byte {
	t.Helper()
	snap, err := fsm{s: s}.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	return sink.Bytes()
}

func goldenState(t testing.TB) *State {
	s := newState()
	ops := goldenOps(t)
	for _, name := range []string{"op-pin-allocated", "op-pin-plain-everywhere"} {
		if err := s.apply(0, ops[name]); err != nil {
			t.Fatal(err)
		}
	}
	// An update keeps Created and moves Updated.
	up := ops["op-pin-allocated"]
	up.Time = t0.Add(time.Hour)
	up.Pin.Name = "photos/2026-renamed.tar"
	if err := s.apply(0, up); err != nil {
		t.Fatal(err)
	}
	return s
}

// shardedGoldenState is goldenState plus a committed sharded pin and an
// add in progress.
func shardedGoldenState(t testing.TB) *State {
	s := goldenState(t)
	ops := goldenOps(t)
	for _, name := range []string{"op-add-begin", "op-add-shard"} {
		if err := s.apply(0, ops[name]); err != nil {
			t.Fatal(err)
		}
	}
	second := ops["op-add-shard"]
	second.Index, second.Shard.CID, second.Shard.Offset = 1, fixedCID(t, true, "s1"), 104726528
	second.Shard.Length, second.Shard.Allocations = 123, []peer.ID{fixedPeer(t, 3)}
	for _, op := range []Op{second, ops["op-add-commit"]} {
		if err := s.apply(0, op); err != nil {
			t.Fatal(err)
		}
	}
	pending := ops["op-add-begin"]
	pending.Add.ID = "add-0002"
	for _, op := range []Op{pending, AddShardOp("add-0002", 0, Shard{CID: fixedCID(t, true, "p0"), Size: 9, Blocks: 1,
		Length: 5, Allocations: []peer.ID{fixedPeer(t, 1)}}, t0.Add(7*time.Second))} {
		if err := s.apply(0, op); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// repairedGoldenState is shardedGoldenState with a repair in progress.
func repairedGoldenState(t testing.TB) *State {
	s := shardedGoldenState(t)
	if err := s.apply(0, goldenOps(t)["op-repair"]); err != nil {
		t.Fatal(err)
	}
	return s
}

// removedGoldenState is repairedGoldenState with two peers removed (one
// recorded twice: the first time stays).
func removedGoldenState(t testing.TB) *State {
	s := repairedGoldenState(t)
	op := goldenOps(t)["op-removed"]
	again := op
	again.Time = op.Time.Add(time.Hour)
	for _, o := range []Op{op, RemovedOp(fixedPeer(t, 5), t0.Add(11*time.Second)), again} {
		if err := s.apply(0, o); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// restoreGolden restores testdata/name.hex, a snapshot of an older format.
func restoreGolden(t *testing.T, name string) *State {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("testdata", name+".hex"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.ReplaceAll(string(text), "\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	restored := newState()
	if err := (fsm{s: restored}).Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	return restored
}

// TestSnapshotV3StillReads: a snapshot of the third format (no removed
// peers) restores into the current state.
func TestSnapshotV3StillReads(t *testing.T) {
	restored, want := restoreGolden(t, "snapshot-v3"), repairedGoldenState(t)
	if !reflect.DeepEqual(restored.Pins(), want.Pins()) || !reflect.DeepEqual(restored.Adds(), want.Adds()) ||
		!reflect.DeepEqual(restored.Repairs(), want.Repairs()) {
		t.Fatalf("v3 restored\n%+v\nwant\n%+v", restored.Pins(), want.Pins())
	}
	if r := restored.Removed(); len(r) != 0 {
		t.Fatalf("v3 snapshot produced removed peers: %v", r)
	}
}

// TestSnapshotV2StillReads: a snapshot of the second format (no repairs)
// restores into the current state.
func TestSnapshotV2StillReads(t *testing.T) {
	restored, want := restoreGolden(t, "snapshot-v2"), shardedGoldenState(t)
	if !reflect.DeepEqual(restored.Pins(), want.Pins()) || !reflect.DeepEqual(restored.Adds(), want.Adds()) {
		t.Fatalf("v2 restored\n%+v\nwant\n%+v", restored.Pins(), want.Pins())
	}
	if len(restored.Repairs()) != 0 {
		t.Fatal("v2 snapshot produced repairs")
	}
}

// TestSnapshotV1StillReads: a snapshot written by the first format (plain
// pins only) restores into the current state: the migration path.
func TestSnapshotV1StillReads(t *testing.T) {
	restored := restoreGolden(t, "snapshot-v1")
	if want := goldenState(t).Pins(); !reflect.DeepEqual(restored.Pins(), want) {
		t.Fatalf("v1 restored\n%+v\nwant\n%+v", restored.Pins(), want)
	}
	if len(restored.Adds()) != 0 {
		t.Fatal("v1 snapshot produced adds")
	}
}

func TestSnapshotGoldenAndRoundTrip(t *testing.T) {
	s := removedGoldenState(t)
	b := snapshotBytes(t, s)
	if !bytes.HasPrefix(b, []byte("shoal-pinset 4\n")) {
		t.Fatalf("snapshot starts %q", b[:min(len(b), 20)])
	}
	checkGolden(t, "snapshot-v4", b)
	if r := s.Removed(); len(r) != 2 || !s.IsRemoved(fixedPeer(t, 4)) || !s.IsRemoved(fixedPeer(t, 5)) || s.IsRemoved(fixedPeer(t, 1)) {
		t.Fatalf("removed peers: %v", r)
	}
	if at := s.removed[fixedPeer(t, 4)]; !at.Equal(t0.Add(10 * time.Second)) {
		t.Fatalf("removed again moved the time to %s", at)
	}
	if rs := s.Repairs(); len(rs) != 1 || rs[0].Part != fixedCID(t, true, "s0") || len(rs[0].Pending) != 1 {
		t.Fatalf("repairs: %+v", rs)
	}
	if adds := s.Adds(); len(adds) != 1 || adds[0].ID != "add-0002" || len(adds[0].Shards) != 1 {
		t.Fatalf("adds in progress: %+v", adds)
	}
	root, _ := s.Get(fixedCID(t, false, "root"))
	if root.Kind != KindSharded || len(root.Shards) != 2 || root.Name != "big.iso" || root.Size != 104726528 {
		t.Fatalf("sharded pin: %+v", root)
	}

	restored := newState()
	if err := (fsm{s: restored}).Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(restored.Pins(), s.Pins()) || !reflect.DeepEqual(restored.Adds(), s.Adds()) ||
		!reflect.DeepEqual(restored.Repairs(), s.Repairs()) || !reflect.DeepEqual(restored.removed, s.removed) {
		t.Fatalf("restored\n%+v\nwant\n%+v", restored.Pins(), s.Pins())
	}
	// Deterministic: the same state gives the same bytes.
	if b2 := snapshotBytes(t, restored); !bytes.Equal(b, b2) {
		t.Fatal("snapshot of the restored state differs")
	}
	// And an empty state.
	empty := snapshotBytes(t, newState())
	if err := (fsm{s: restored}).Restore(io.NopCloser(bytes.NewReader(empty))); err != nil || restored.Len() != 0 {
		t.Fatalf("restore of an empty snapshot: %v, %d pins", err, restored.Len())
	}
}

func TestRestoreRefusesCorruptSnapshots(t *testing.T) {
	s := goldenState(t)
	good := snapshotBytes(t, s)
	swapped := func() []byte {
		// Two records in the wrong order.
		ptrs := s.sortedPins()
		ptrs[0], ptrs[1] = ptrs[1], ptrs[0]
		var buf bytes.Buffer
		if err := writeSnapshot(&buf, ptrs, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}()
	tests := map[string][]byte{
		"empty":            nil,
		"wrong header":     append([]byte("shoal-pinset 9\n"), good[15:]...),
		"truncated":        good[:len(good)-3],
		"trailing garbage": append(bytes.Clone(good), 1),
		"count too high":   append(append([]byte("shoal-pinset 2\n"), 9), good[16:]...),
		"out of order":     swapped,
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			st := goldenState(t)
			before := st.Pins()
			err := (fsm{s: st}).Restore(io.NopCloser(bytes.NewReader(b)))
			if !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("Restore = %v, want ErrCorruptSnapshot", err)
			}
			if !reflect.DeepEqual(st.Pins(), before) {
				t.Fatal("a failed Restore changed the state")
			}
		})
	}
}

func FuzzReadSnapshot(f *testing.F) {
	f.Add(snapshotBytes(f, goldenState(f)))
	f.Add(snapshotBytes(f, shardedGoldenState(f)))
	f.Add(snapshotBytes(f, newState()))
	f.Add(snapshotBytes(f, repairedGoldenState(f)))
	f.Fuzz(func(t *testing.T, b []byte) {
		sd, err := readSnapshot(bytes.NewReader(b))
		pins := sd.pins
		if err != nil {
			if !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("error %v does not wrap ErrCorruptSnapshot", err)
			}
			return
		}
		for _, p := range pins {
			if err := p.Validate(); err != nil {
				t.Fatalf("restored an invalid pin: %v", err)
			}
		}
	})
}

func TestApplySemantics(t *testing.T) {
	s := newState()
	c := fixedCID(t, true, "z")
	p1, p2 := fixedPeer(t, 1), fixedPeer(t, 2)
	p := Pin{CID: c, Name: "first", RMin: 1, RMax: 2, Allocations: []peer.ID{p1}, Kind: KindPlain}
	apply := func(op Op) error {
		b, err := op.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		// Through raft.FSM, as Raft calls it.
		res := fsm{s: s}.Apply(&raft.Log{Index: 1, Data: b})
		if res == nil {
			return nil
		}
		return res.(error)
	}
	if err := apply(PinOp(p, t0)); err != nil {
		t.Fatal(err)
	}
	p.Name, p.RMax, p.Allocations = "second", 3, []peer.ID{p2, p1}
	if err := apply(PinOp(p, t0.Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 1 {
		t.Fatalf("re-pinning duplicated the pin: %d pins", s.Len())
	}
	got, ok := s.Get(c)
	want := p
	want.Created, want.Updated = t0, t0.Add(time.Minute)
	if !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("after update got %+v, want %+v", got, want)
	}
	// Get returns a copy: changing it does not change the state.
	got.Allocations[0] = p1
	if again, _ := s.Get(c); again.Allocations[0] != p2 {
		t.Fatal("Get exposed the state's Allocations")
	}
	if err := apply(UnpinOp(c, t0)); err != nil {
		t.Fatal(err)
	}
	if err := apply(UnpinOp(c, t0)); !errors.Is(err, ErrNotPinned) {
		t.Fatalf("second unpin = %v, want ErrNotPinned", err)
	}
	if res := (fsm{s: s}).Apply(&raft.Log{Index: 9, Data: []byte{1, 2, 3}}); !errors.Is(res.(error), ErrInvalidOp) {
		t.Fatalf("garbage entry = %v, want ErrInvalidOp", res)
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.DataDir = t.TempDir()
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"default", func(*Config) {}, true},
		{"test timings", func(c *Config) { *c = fastConfig(c.DataDir) }, true},
		{"no data dir", func(c *Config) { c.DataDir = "" }, false},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout }, false},
		{"election below heartbeat", func(c *Config) { c.ElectionTimeout = c.HeartbeatTimeout / 2 }, false},
		{"commit above heartbeat", func(c *Config) { c.CommitTimeout = 2 * c.HeartbeatTimeout }, false},
		{"leader wait shorter than an election", func(c *Config) { c.WaitForLeaderTimeout = c.ElectionTimeout }, false},
		{"even voters", func(c *Config) { c.Voters = 4 }, false},
		{"no voters", func(c *Config) { c.Voters = 0 }, false},
		{"no snapshots kept", func(c *Config) { c.SnapshotsRetained = 0 }, false},
		{"heartbeat too fast for raft", func(c *Config) { c.HeartbeatTimeout = time.Millisecond }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}
