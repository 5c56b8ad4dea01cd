package allocate

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestAllocate(t *testing.T) {
	cands := []Candidate{{ID: "a", Free: 100}, {ID: "b", Free: 300}, {ID: "c", Free: 200}, {ID: "d", Free: 300}, {ID: "e", Free: 10}}
	tests := []struct {
		name string
		req  Request
		want []string
		err  string
	}{
		{"most free first, ties by id", Request{Size: 50, RMin: 2, RMax: 3}, []string{"b", "d", "c"}, ""},
		{"current holders stay", Request{Size: 50, RMin: 2, RMax: 3, Current: []string{"e", "a"}}, []string{"e", "a", "b"}, ""},
		{"current holder gone", Request{Size: 50, RMin: 1, RMax: 2, Current: []string{"zz"}}, []string{"b", "d"}, ""},
		{"everywhere", Request{Size: 0, RMin: -1, RMax: -1}, []string{"b", "d", "c", "a", "e"}, ""},
		{"too big for most", Request{Size: 250, RMin: 2, RMax: 3}, []string{"b", "d"}, ""},
		{"too big for rmin", Request{Size: 250, RMin: 3, RMax: 3}, nil, "not enough peers: 2 of 5 peers can take 250 bytes, replication minimum is 3"},
		{"rmin > rmax", Request{RMin: 3, RMax: 2}, nil, "replication 3..2 is not valid"},
		{"zero", Request{RMin: 0, RMax: 2}, nil, "replication 0..2 is not valid"},
		{"unknown strategy", Request{RMin: 1, RMax: 2, Strategy: "random"}, nil, `allocation strategy "random" is not known; use freespace or balanced`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Allocate(tt.req, cands)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// naive is the reference: try every peer in order of (free desc, id asc)
// after the current holders, by brute force.
func naive(req Request, cands []Candidate) ([]string, bool) {
	var out []string
	in := func(id string) bool { return slices.Contains(out, id) }
	want := req.RMax
	if want == Everywhere {
		want = len(cands)
	}
	for _, id := range req.Current {
		for _, c := range cands {
			if c.ID == id && !in(id) && len(out) < want {
				out = append(out, id)
			}
		}
	}
	for len(out) < want {
		best := -1
		for i, c := range cands {
			if in(c.ID) || c.Free < req.Size {
				continue
			}
			if best < 0 || naiveBetter(req, c, cands[best], func(c, b Candidate) int { return naiveFree(req, b) - naiveFree(req, c) }) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		out = append(out, cands[best].ID)
	}
	need := req.RMin
	if need == Everywhere {
		need = 1
	}
	return out, len(out) >= need
}

// naiveFree is c's free space in whole req.Units, by repeated subtraction.
func naiveFree(req Request, c Candidate) int {
	if req.Unit <= 1 {
		return int(c.Free)
	}
	n := 0
	for f := c.Free; f >= req.Unit; f -= req.Unit {
		n++
	}
	return n
}

// naiveBetter says whether c goes before b: not in the previous item's
// peers, then by the strategy's figures (primary < 0: c first), then used
// longest ago in req.Recent, then in fewest entries of it, then by ID;
// found by scanning Recent.
func naiveBetter(req Request, c, b Candidate, primary func(c, b Candidate) int) bool {
	prev := func(id string) bool { return len(req.Recent) > 0 && slices.Contains(req.Recent[0], id) }
	age := func(id string) int {
		for i, ids := range req.Recent {
			if slices.Contains(ids, id) {
				return i
			}
		}
		return 1 << 30
	}
	count := func(id string) int {
		n := 0
		for _, ids := range req.Recent {
			for _, x := range ids {
				if x == id {
					n++
				}
			}
		}
		return n
	}
	switch {
	case prev(c.ID) != prev(b.ID):
		return !prev(c.ID)
	case primary(c, b) != 0:
		return primary(c, b) < 0
	case age(c.ID) != age(b.ID):
		return age(c.ID) > age(b.ID)
	case count(c.ID) != count(b.ID):
		return count(c.ID) < count(b.ID)
	}
	return c.ID < b.ID
}

// randomRecent returns up to 3 earlier allocations of peers p0..p9.
func randomRecent(r *rand.Rand) [][]string {
	var out [][]string
	for range r.IntN(4) {
		var ids []string
		for range 1 + r.IntN(2) {
			ids = append(ids, fmt.Sprintf("p%d", r.IntN(10)))
		}
		out = append(out, ids)
	}
	return out
}

// TestAllocateMatchesNaive: random inputs, the same answer as the naive
// reference; no new peer over capacity; rmin met or an error.
func TestAllocateMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		n := r.IntN(8)
		cands := make([]Candidate, n)
		for j := range cands {
			cands[j] = Candidate{ID: fmt.Sprintf("p%d", r.IntN(10)), Free: int64(r.IntN(5)*100 + r.IntN(3)*10)}
		}
		// IDs must be unique among candidates.
		slices.SortFunc(cands, func(a, b Candidate) int { return cmpStr(a.ID, b.ID) })
		cands = slices.CompactFunc(cands, func(a, b Candidate) bool { return a.ID == b.ID })
		rmin := 1 + r.IntN(4)
		req := Request{Size: int64(r.IntN(5) * 100), RMin: rmin, RMax: rmin + r.IntN(3)}
		if r.IntN(5) == 0 {
			req.RMin, req.RMax = Everywhere, Everywhere
		}
		for range r.IntN(3) {
			req.Current = append(req.Current, fmt.Sprintf("p%d", r.IntN(10)))
		}
		req.Recent = randomRecent(r)
		req.Unit = []int64{0, 1, 100, 250}[r.IntN(4)]
		got, err := Allocate(req, cands)
		want, ok := naive(req, cands)
		if ok != (err == nil) {
			t.Fatalf("case %d: %+v %+v: err %v, naive ok %v", i, req, cands, err, ok)
		}
		if err != nil {
			if !errors.Is(err, ErrNotEnoughPeers) {
				t.Fatalf("case %d: unexpected error %v", i, err)
			}
			continue
		}
		if !slices.Equal(got, want) {
			t.Fatalf("case %d: %+v %+v: got %v, naive %v", i, req, cands, got, want)
		}
		for _, id := range got {
			if slices.Contains(req.Current, id) {
				continue
			}
			for _, c := range cands {
				if c.ID == id && c.Free < req.Size {
					t.Fatalf("case %d: %s over capacity", i, id)
				}
			}
		}
	}
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestSpreadsConsecutiveShards places the shards of one add in turn, as
// the sharded add does (Recent: the last shards' peers), and checks the
// spread: peers that tie (one shared disk) take turns, no peer takes two
// consecutive shards while another has room, none is ever overfilled.
func TestSpreadsConsecutiveShards(t *testing.T) {
	tests := []struct {
		name       string
		free       []int64 // per peer, before the add
		stale      bool    // metrics never updated during the add
		rmax       int
		shards     int
		wantCounts []int // shards per peer at the end; nil: not checked
	}{
		{"shared disk, rmax 1", []int64{5000, 5000, 5000}, true, 1, 30, []int{10, 10, 10}},
		{"shared disk, rmax 2", []int64{5000, 5000, 5000, 5000}, true, 2, 30, []int{15, 15, 15, 15}},
		{"shared disk, rmax 2 of 3", []int64{5000, 5000, 5000}, true, 2, 30, []int{20, 20, 20}},
		{"fresh metrics, different sizes", []int64{1500, 900, 600}, false, 1, 30, []int{15, 9, 6}},
		{"stale metrics, different sizes", []int64{3000, 2000, 1000}, true, 1, 30, []int{15, 15, 0}},
	}
	const size = 100
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			free := slices.Clone(tt.free)
			counts := make([]int, len(free))
			var recent [][]string
			for s := range tt.shards {
				cands := make([]Candidate, len(free))
				for i, f := range free {
					cands[i] = Candidate{ID: fmt.Sprintf("p%d", i), Free: f}
					if tt.stale {
						cands[i].Free = tt.free[i]
					}
				}
				got, err := Allocate(Request{Size: size, RMin: 1, RMax: tt.rmax, Recent: recent}, cands)
				if err != nil {
					t.Fatalf("shard %d: %v", s, err)
				}
				for _, id := range got {
					var i int
					fmt.Sscanf(id, "p%d", &i)
					if free[i] -= size; free[i] < 0 {
						t.Fatalf("shard %d: %s overfilled", s, id)
					}
					counts[i]++
					if len(recent) > 0 && slices.Contains(recent[0], id) && len(cands) >= 2*tt.rmax {
						t.Fatalf("shard %d: %s took the previous shard too, with %d peers for %d copies", s, id, len(cands), tt.rmax)
					}
				}
				recent = append([][]string{got}, recent[:min(len(recent), 31)]...)
			}
			if tt.wantCounts != nil && !slices.Equal(counts, tt.wantCounts) {
				t.Fatalf("shards per peer %v, want %v", counts, tt.wantCounts)
			}
		})
	}
}

// TestUnitTies: free space a fraction of a Unit apart ties, so the least
// recently used peer takes the item, not the one that reported a few
// bytes more; a whole Unit more still wins.
func TestUnitTies(t *testing.T) {
	cands := []Candidate{{ID: "a", Free: 1000}, {ID: "b", Free: 1090}, {ID: "c", Free: 1050}}
	recent := [][]string{{"c"}, {"b"}} // c took the previous item, b the one before
	for _, tt := range []struct {
		unit  int64
		cands []Candidate
		want  string
	}{
		{0, cands, "b"},   // by bytes
		{1, cands, "b"},   // the same
		{100, cands, "a"}, // a, b tie; a was not used lately
		{100, []Candidate{{ID: "a", Free: 1000}, {ID: "b", Free: 1100}}, "b"},
		{1000, []Candidate{{ID: "a", Free: 1999}, {ID: "b", Free: 1000}}, "a"}, // floor: both one unit; a is older
	} {
		got, err := Allocate(Request{Size: 100, RMin: 1, RMax: 1, Unit: tt.unit, Recent: recent}, tt.cands)
		if err != nil || len(got) != 1 || got[0] != tt.want {
			t.Errorf("unit %d, %+v: %v %v, want %s", tt.unit, tt.cands, got, err, tt.want)
		}
	}
}
