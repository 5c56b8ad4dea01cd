package allocate

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBalanced(t *testing.T) {
	cands := []Candidate{
		{ID: "a", Free: 100, Used: 500, Shards: 5},
		{ID: "b", Free: 900, Used: 900, Shards: 9},
		{ID: "c", Free: 50, Used: 100, Shards: 1},
		{ID: "d", Free: 300, Used: 100, Shards: 3},
		{ID: "e", Free: 400, Used: 100, Shards: 3},
		{ID: "f", Free: 400, Used: 100, Shards: 3},
	}
	tests := []struct {
		name string
		req  Request
		want []string
	}{
		// c holds least bytes and fewest shards; then d, e, f hold as
		// many bytes and shards: most free first, then lowest ID.
		{"fewest bytes, shards, most free, id", Request{Size: 10, RMin: 2, RMax: 5}, []string{"c", "e", "f", "d", "a"}},
		{"no room: skipped", Request{Size: 60, RMin: 2, RMax: 3}, []string{"e", "f", "d"}},
		{"current holders stay", Request{Size: 60, RMin: 2, RMax: 3, Current: []string{"b", "c"}}, []string{"b", "c", "e"}},
		{"everywhere", Request{Size: 200, RMin: -1, RMax: -1}, []string{"e", "f", "d", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Strategy = Balanced
			got, err := Allocate(tt.req, cands)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// naiveBalanced is the reference: current holders, then repeatedly the
// candidate with room that is best by (used, shards, -free, id), found by
// a linear scan.
func naiveBalanced(req Request, cands []Candidate) ([]string, bool) {
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
	better := func(c, b Candidate) bool {
		return naiveBetter(req, c, b, func(c, b Candidate) int {
			switch {
			case c.Used != b.Used:
				return int(c.Used - b.Used)
			case c.Shards != b.Shards:
				return c.Shards - b.Shards
			}
			return naiveFree(req, b) - naiveFree(req, c)
		})
	}
	for len(out) < want {
		best := -1
		for i, c := range cands {
			if in(c.ID) || c.Free < req.Size {
				continue
			}
			if best < 0 || better(c, cands[best]) {
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

// TestBalancedMatchesNaive: random inputs with many ties, the same answer
// as the naive reference.
func TestBalancedMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 5000 {
		cands := make([]Candidate, r.IntN(8))
		for j := range cands {
			cands[j] = Candidate{ID: fmt.Sprintf("p%d", r.IntN(10)), Free: int64(r.IntN(4)*100 + r.IntN(3)*10),
				Used: int64(r.IntN(3) * 100), Shards: r.IntN(3)}
		}
		slices.SortFunc(cands, func(a, b Candidate) int { return cmpStr(a.ID, b.ID) })
		cands = slices.CompactFunc(cands, func(a, b Candidate) bool { return a.ID == b.ID })
		r.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
		rmin := 1 + r.IntN(4)
		req := Request{Size: int64(r.IntN(4) * 100), RMin: rmin, RMax: rmin + r.IntN(3), Strategy: Balanced,
			Unit: []int64{0, 1, 100, 250}[r.IntN(4)]}
		if r.IntN(5) == 0 {
			req.RMin, req.RMax = Everywhere, Everywhere
		}
		for range r.IntN(3) {
			req.Current = append(req.Current, fmt.Sprintf("p%d", r.IntN(10)))
		}
		req.Recent = randomRecent(r)
		got, err := Allocate(req, cands)
		want, ok := naiveBalanced(req, cands)
		if ok != (err == nil) || (err != nil && !errors.Is(err, ErrNotEnoughPeers)) {
			t.Fatalf("case %d: %+v %+v: err %v, naive ok %v", i, req, cands, err, ok)
		}
		if err == nil && !slices.Equal(got, want) {
			t.Fatalf("case %d: %+v %+v: got %v, naive %v", i, req, cands, got, want)
		}
	}
}
