package consensus

import (
	"io"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// changes returns the keys touched since *pos, as strings, and moves *pos.
func changes(t *testing.T, s *State, pos *uint64) []string {
	t.Helper()
	keys, next, complete := s.Changes(*pos)
	if !complete {
		t.Fatalf("changes since %d: incomplete", *pos)
	}
	*pos = next
	var out []string
	for _, k := range keys {
		out = append(out, k.String())
	}
	return out
}

// TestIndexAndJournal walks plain and sharded pins, a shared shard, an
// abort and a restore through the state and checks, after each op, what
// the journal reports and what Wants answers for two peers.
func TestIndexAndJournal(t *testing.T) {
	s := newState()
	a, b := fixedPeer(t, 1), fixedPeer(t, 2)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	must := func(op Op) {
		t.Helper()
		if err := s.apply(0, op); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
	}
	c := func(name string) cid.Cid { return fixedCID(t, true, name) }
	wants := func(key cid.Cid, p peer.ID, want bool) {
		t.Helper()
		if got := s.Wants(key, p); got != want {
			t.Fatalf("Wants(%s, peer %d) = %v, want %v", key, map[peer.ID]int{a: 1, b: 2}[p], got, want)
		}
	}
	same := func(got []string, want ...cid.Cid) {
		t.Helper()
		var ws []string
		for _, w := range want {
			ws = append(ws, w.String())
		}
		if !slices.Equal(got, ws) {
			t.Fatalf("journal %v, want %v", got, ws)
		}
	}

	if _, next, complete := s.Changes(0); complete || next != 1 {
		t.Fatalf("a new state's journal: next %d complete %v, want 1 false", next, complete)
	}
	pos := uint64(1)

	plain := NewPin(c("plain"))
	plain.RMin, plain.RMax, plain.Allocations = 1, 1, []peer.ID{a}
	must(PinOp(plain, at(1)))
	same(changes(t, s, &pos), c("plain"))
	wants(c("plain"), a, true)
	wants(c("plain"), b, false)

	every := NewPin(c("every"))
	every.RMin, every.RMax = Everywhere, Everywhere
	must(PinOp(every, at(2)))
	same(changes(t, s, &pos), c("every"))
	wants(c("every"), b, true)

	// Two sharded files share shard "s": a holds it for the first, b for
	// the second.
	shard := func(name string, p peer.ID) Shard {
		return Shard{CID: c(name), Size: 10, Blocks: 1, Length: 5, Allocations: []peer.ID{p}}
	}
	must(AddBeginOp(Add{ID: "1", Name: "f1", RMin: 1, RMax: 1, Owner: a}, at(3)))
	same(changes(t, s, &pos))
	must(AddShardOp("1", 0, shard("s", a), at(4)))
	same(changes(t, s, &pos), c("s"))
	wants(c("s"), a, true) // an add in progress keeps its shards
	wants(c("s"), b, false)
	must(AddShardOp("1", 1, shard("t", a), at(5)))
	must(AddCommitOp("1", c("root1"), c("cdag1"), 20, []peer.ID{a}, at(6)))
	same(changes(t, s, &pos), c("t"), c("root1"), c("cdag1"), c("s"), c("t"))
	wants(c("cdag1"), a, true)
	wants(c("cdag1"), b, false)

	must(AddBeginOp(Add{ID: "2", Name: "f2", RMin: 1, RMax: 1, Owner: b}, at(7)))
	must(AddShardOp("2", 0, shard("s", b), at(8)))
	must(AddCommitOp("2", c("root2"), c("cdag2"), 10, []peer.ID{b}, at(9)))
	changes(t, s, &pos)
	wants(c("s"), a, true)
	wants(c("s"), b, true)
	if r, ok := s.ShardOwner(c("t")); !ok || r != c("root1") {
		t.Fatalf("owner of t: %s %v", r, ok)
	}

	must(UnpinOp(c("root1"), at(10)))
	same(changes(t, s, &pos), c("root1"), c("cdag1"), c("s"), c("t"))
	wants(c("s"), a, false)
	wants(c("s"), b, true)
	wants(c("t"), a, false)
	if s.Referenced(c("t")) || !s.Referenced(c("s")) || s.Referenced(c("cdag1")) {
		t.Fatal("Referenced disagrees with the pins")
	}
	if _, ok := s.ShardOwner(c("t")); ok {
		t.Fatal("an unpinned shard still has an owner")
	}

	// An aborted add's shards are journaled: they are wanted no more.
	must(AddBeginOp(Add{ID: "3", Name: "f3", RMin: 1, RMax: 1, Owner: a}, at(11)))
	must(AddShardOp("3", 0, shard("u", a), at(12)))
	wants(c("u"), a, true)
	changes(t, s, &pos)
	must(AddAbortOp("3", at(13)))
	same(changes(t, s, &pos), c("u"))
	wants(c("u"), a, false)

	// A restore rebuilds the index and loses the journal.
	sink := &memSink{}
	snap, _ := fsm{s}.Snapshot()
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	r := newState()
	if err := (fsm{r}).Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatal(err)
	}
	s = r
	if _, _, complete := s.Changes(pos); complete {
		t.Fatal("the journal survived a restore")
	}
	wants(c("s"), b, true)
	wants(c("s"), a, false)
	wants(c("cdag2"), b, true)
	wants(c("plain"), a, true)

	// A reader that falls behind by more than the journal holds is told so.
	_, pos, _ = s.Changes(0)
	for i := range journalLen / 2 {
		p := NewPin(fixedCID(t, true, strconv.Itoa(i)))
		p.RMin, p.RMax = Everywhere, Everywhere
		must(PinOp(p, at(20)))
		must(PinOp(p, at(21))) // replaced: two journal entries
	}
	if _, _, complete := s.Changes(pos); complete {
		t.Fatal("an overrun journal claims to be complete")
	}
	n := 0
	s.Each(func(Pin) bool { n++; return true })
	if n != s.Len() {
		t.Fatalf("Each saw %d pins of %d", n, s.Len())
	}
}
