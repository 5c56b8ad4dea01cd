package transfer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/shard"
	"github.com/shoal-project/shoal/store"
)

// TestReceiverRefuses plays a hostile or broken sender with raw frames:
// each transfer is refused with a reason, and the receiver keeps nothing
// of it (no shard, no temporary file).
func TestReceiverRefuses(t *testing.T) {
	nodes := newCluster(t, 2)
	from, to := nodes[0], nodes[1]
	to.srv.Free = func() int64 { return 64 << 20 }
	rng := mrand.New(mrand.NewPCG(21, 22))
	blocks := testBlocks(t, rng, 12, 16<<10)
	const width = 2 // list trees of several levels

	// body writes blocks, then the end frame of info and nodes.
	body := func(blocks []dag.Block, info shard.Info, nodes []dag.Block) []byte {
		var b []byte
		for _, blk := range blocks {
			b = rawFrame(b, blk.CID, blk.Data)
		}
		return rawEnd(b, info, nodes)
	}
	good := func() (shard.Info, []dag.Block) { return shardOf(t, blocks, width) }
	// listOf sends blocks sent under the list of blocks listed, with an
	// Info that counts what is sent, so that only the list is wrong.
	listOf := func(sent, listed []dag.Block) (shard.Info, []dag.Block) {
		info, nodes := shardOf(t, listed, width)
		info.Blocks = len(sent)
		return fixSize(info, sent, nodes), nodes
	}
	other := testBlocks(t, rng, 1, 100)[0]

	tests := []struct {
		name    string
		header  []byte
		body    func() []byte
		refused string // in the answer to the header, or else
		failed  string // in the final answer
	}{
		{name: "no room for the announced size", header: rawHeader(1, 100<<20),
			refused: "no room: 64.0 MiB free, the shard needs up to 100.0 MiB"},
		{name: "unknown version", header: rawHeader(2, 1<<20),
			refused: "transfer version 2 is not supported"},
		{name: "corrupt block", header: rawHeader(1, 1<<20), body: func() []byte {
			bad := append([]dag.Block(nil), blocks...)
			bad[3].Data = bytes.Clone(bad[3].Data)
			bad[3].Data[7] ^= 1
			info, nodes := good()
			return body(bad, info, nodes)
		}, failed: "the bytes of block " + blocks[3].CID.String() + " do not hash to its CID"},
		{name: "corrupt identity block", header: rawHeader(1, 1<<20), body: func() []byte {
			bad := append([]dag.Block(nil), blocks...)
			bad[6].Data = bytes.Repeat([]byte("x"), len(bad[6].Data)) // same size: only the hash tells
			info, nodes := good()
			return body(bad, info, nodes)
		}, failed: "do not hash to its CID"},
		{name: "list omits a block", header: rawHeader(1, 1<<20), body: func() []byte {
			info, nodes := listOf(blocks, append(append([]dag.Block(nil), blocks[:5]...), blocks[6:]...))
			return body(blocks, info, nodes)
		}, failed: "the shard list names 11 blocks, 12 were received"},
		{name: "list in another order", header: rawHeader(1, 1<<20), body: func() []byte {
			swapped := append([]dag.Block(nil), blocks...)
			swapped[2], swapped[8] = swapped[8], swapped[2]
			info, nodes := listOf(blocks, swapped)
			return body(blocks, info, nodes)
		}, failed: "does not name the blocks received, in their order"},
		{name: "list names another block", header: rawHeader(1, 1<<20), body: func() []byte {
			changed := append([]dag.Block(nil), blocks...)
			changed[4] = other
			info, nodes := listOf(blocks, changed)
			return body(blocks, info, nodes)
		}, failed: "does not name the blocks received, in their order"},
		{name: "list node missing", header: rawHeader(1, 1<<20), body: func() []byte {
			info, nodes := good()
			info.Size -= sectionCost(nodes[0].CID.ByteLen(), len(nodes[0].Data))
			return body(blocks, info, nodes[1:])
		}, failed: "not among the list nodes sent"},
		{name: "extra list node", header: rawHeader(1, 1<<20), body: func() []byte {
			info, nodes := good()
			_, extra := shardOf(t, blocks[:3], width)
			nodes = append(append([]dag.Block(nil), extra[0]), nodes...)
			info.Size += sectionCost(extra[0].CID.ByteLen(), len(extra[0].Data))
			return body(blocks, info, nodes)
		}, failed: "was sent but is not in the tree"},
		{name: "root not last", header: rawHeader(1, 1<<20), body: func() []byte {
			info, nodes := good()
			nodes = append([]dag.Block{nodes[len(nodes)-1]}, nodes[:len(nodes)-1]...)
			return body(blocks, info, nodes)
		}, failed: "do not end with the root"},
		{name: "size lie", header: rawHeader(1, 1<<20), body: func() []byte {
			info, nodes := good()
			info.Size--
			return body(blocks, info, nodes)
		}, failed: "the shard's info says"},
		{name: "block count lie", header: rawHeader(1, 1<<20), body: func() []byte {
			info, nodes := good()
			info.Blocks++
			return body(blocks, info, nodes)
		}, failed: "the shard's info counts 13 blocks, 12 were received"},
		{name: "more than announced", header: rawHeader(1, 50<<10), body: func() []byte {
			info, nodes := good()
			return body(blocks, info, nodes)
		}, failed: "exceeds the 51200 bytes announced"},
		{name: "CID too long", header: rawHeader(1, 1<<20), body: func() []byte {
			return binary.AppendUvarint(nil, 200)
		}, failed: "CID length 200 is above the limit of 128"},
		{name: "block too long", header: rawHeader(1, 32<<20), body: func() []byte {
			b := rawFrame(nil, blocks[0].CID, nil)
			b = b[:len(b)-1]
			return binary.AppendUvarint(b, 9<<20)
		}, failed: "block length 9437184 is above the limit of 8388608"},
		{name: "malformed CID", header: rawHeader(1, 1<<20), body: func() []byte {
			return append(binary.AppendUvarint(nil, 3), 1, 2, 3)
		}, failed: "malformed CID"},
		{name: "too many list nodes", header: rawHeader(1, 1<<20), body: func() []byte {
			info, _ := good()
			b := body(blocks, info, nil)
			b = b[:len(b)-1]
			return binary.AppendUvarint(b, 1000)
		}, failed: "number of list nodes 1000 is above the limit of 28"},
		{name: "cut short", header: rawHeader(1, 1<<20), body: func() []byte {
			info, nodes := good()
			b := body(blocks, info, nodes)
			return b[:len(b)/2]
		}, failed: "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b []byte
			if tt.body != nil {
				b = tt.body()
			}
			first, second := rawSend(t, from.h, to.h.ID(), tt.header, b)
			switch {
			case tt.refused != "":
				if first.status == statusOK || !strings.Contains(first.reason, tt.refused) {
					t.Fatalf("answer to the header: %d %q, want a refusal with %q", first.status, first.reason, tt.refused)
				}
			case first.status != statusOK:
				t.Fatalf("header refused: %q", first.reason)
			case second.status == statusOK || !strings.Contains(second.reason, tt.failed):
				t.Fatalf("final answer: %d %q, want a failure with %q", second.status, second.reason, tt.failed)
			}
			assertEmpty(t, to)
		})
	}

	// The same raw sender, honest, is confirmed: the cases above fail for
	// their flaw alone.
	info, listNodes := good()
	first, second := rawSend(t, from.h, to.h.ID(), rawHeader(1, 1<<20), body(blocks, info, listNodes))
	if first.status != statusOK || second.status != statusOK {
		t.Fatalf("honest transfer answered %+v, %+v", first, second)
	}
	if err := to.st.Verify(t.Context(), info.CID.String()); err != nil {
		t.Fatal(err)
	}
}

// fixSize sets info.Size to what sent blocks and nodes take.
func fixSize(info shard.Info, sent, nodes []dag.Block) shard.Info {
	info.Size = 0
	for _, b := range sent {
		info.Size += sectionCost(b.CID.ByteLen(), len(b.Data))
	}
	for _, n := range nodes {
		info.Size += sectionCost(n.CID.ByteLen(), len(n.Data))
	}
	return info
}

// TestReceiverBusy: transfers beyond MaxConcurrent are refused at once.
func TestReceiverBusy(t *testing.T) {
	nodes := newCluster(t, 2)
	nodes[1].srv.MaxConcurrent = 1
	holdSlot(t, nodes)
	first, _ := rawSend(t, nodes[0].h, nodes[1].h.ID(), rawHeader(1, 1<<20), nil)
	if first.status == statusOK || !strings.Contains(first.reason, "busy") {
		t.Fatalf("second transfer answered %+v, want busy", first)
	}
}

// holdSlot starts a transfer of one block from nodes[0] to nodes[1] and
// sends nothing after its header, so it holds one of the receiver's slots.
// It returns the reader of the receiver's answers.
func holdSlot(t *testing.T, nodes []*node) *bufio.Reader {
	t.Helper()
	s, err := nodes[0].h.NewStream(t.Context(), nodes[1].h.ID(), Protocol)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Reset() })
	if _, err := s.Write(rawHeader(1, 1<<20)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(s)
	if a, err := readAnswer(br); err != nil || a.status != statusOK {
		t.Fatalf("the transfer holding a slot: %+v, %v", a, err)
	}
	return br
}

// FuzzReceive feeds arbitrary bytes to a receiver: it never panics, and
// whatever it confirms is a whole, verified shard.
func FuzzReceive(f *testing.F) {
	rng := mrand.New(mrand.NewPCG(31, 32))
	blocks := testBlocks(f, rng, 5, 300)
	info, nodes := shardOf(f, blocks, 2)
	var good []byte
	good = rawHeader(1, 1<<20)
	for _, b := range blocks {
		good = rawFrame(good, b.CID, b.Data)
	}
	good = rawEnd(good, info, nodes)
	f.Add(good)
	f.Add(good[:len(good)-3])
	// The security review's stream: root {L, L}, the blocks twice, L sent
	// genuine then with other bytes; it was confirmed and failed Verify.
	twice, tinfo, tnodes := twiceShard(f, rng)
	tnodes = []dag.Block{tnodes[0], {CID: tnodes[0].CID, Data: bogus(f, twice)}, tnodes[2]}
	f.Add(append(rawHeader(1, 1<<20), stream(twice, fixSize(tinfo, twice, tnodes), tnodes)...))
	f.Add(rawHeader(1, 10))
	f.Add([]byte{1, 0, 0})
	dir := f.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	srv := &Server{Store: st}
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		err := srv.serve(bytes.NewReader(in), &out, "")
		answers := out.Bytes()
		if err == nil {
			if !bytes.HasSuffix(answers, []byte{statusOK, 0}) || len(answers) != 4 {
				t.Fatalf("confirmed with answers %x", answers)
			}
			for _, sh := range st.Shards() {
				if err := st.Verify(t.Context(), sh.Key); err != nil {
					t.Fatal(err)
				}
			}
		}
		ents, _ := os.ReadDir(filepath.Join(dir, "tmp"))
		if len(ents) != 0 {
			t.Fatalf("temporary files left: %v", ents)
		}
	})
}

// TestReservedRoom: a transfer's announced size is reserved while it runs,
// counted against the room the next one sees, and given back after.
func TestReservedRoom(t *testing.T) {
	s := &Server{Free: func() int64 { return 100 }}
	release, err := s.reserve(60)
	if err != nil || s.Reserved() != 60 {
		t.Fatalf("reserve 60 of 100: %v, reserved %d", err, s.Reserved())
	}
	if _, err := s.reserve(50); err == nil || err.Error() != "no room: 40 bytes free, the shard needs up to 50 bytes" {
		t.Fatalf("second reserve: %v", err)
	}
	release()
	if s.Reserved() != 0 {
		t.Fatalf("reserved %d after release", s.Reserved())
	}
	if (*Server)(nil).Reserved() != 0 {
		t.Fatal("a nil server reserves room")
	}

	// Hold: the ingesting peer's own copy counts as reserved, against the
	// room a transfer sees, until released; releasing twice is harmless.
	hold := s.Hold(70)
	if s.Reserved() != 70 {
		t.Fatalf("reserved %d while holding 70", s.Reserved())
	}
	if _, err := s.reserve(40); err == nil || err.Error() != "no room: 30 bytes free, the shard needs up to 40 bytes" {
		t.Fatalf("reserve beside a hold: %v", err)
	}
	hold()
	hold()
	if s.Reserved() != 0 {
		t.Fatalf("reserved %d after the hold's release", s.Reserved())
	}
}

// TestReceiverIdleTimeout: a sender that stops sending after its header
// holds its slot (others are refused as busy) only until the idle timeout,
// when the receiver fails its transfer; the next transfer is admitted.
func TestReceiverIdleTimeout(t *testing.T) {
	nodes := newCluster(t, 2)
	nodes[1].srv.MaxConcurrent = 1
	nodes[1].srv.IdleTimeout = 300 * time.Millisecond
	br := holdSlot(t, nodes)
	start := time.Now()
	if busy, _ := rawSend(t, nodes[0].h, nodes[1].h.ID(), rawHeader(1, 1<<20), nil); busy.status == statusOK ||
		busy.reason != "busy: already receiving 1 shards" {
		t.Fatalf("transfer beside the stalled one answered %+v, want busy", busy)
	}
	a, err := readAnswer(br)
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("the stalled transfer ended after %v, want the idle timeout (300ms) and a little", d)
	}
	if err != nil || a.status != statusFailed || a.reason != "read CID length: i/o deadline reached" {
		t.Fatalf("stalled transfer ended with %+v, %v; want failed on the deadline", a, err)
	}
	if next, _ := rawSend(t, nodes[0].h, nodes[1].h.ID(), rawHeader(1, 1<<20), nil); next.status != statusOK {
		t.Fatalf("the next transfer answered %+v, want it admitted", next)
	}
	assertEmpty(t, nodes[1])
}
