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
			if best < 0 || c.Free > cands[best].Free || (c.Free == cands[best].Free && c.ID < cands[best].ID) {
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

// TestAllocateMatchesNaive: random inputs, the same answer as the naive
// reference; no new peer over capacity; rmin met or an error.
func TestAllocateMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		n := r.IntN(8)
		cands := make([]Candidate, n)
		for j := range cands {
			cands[j] = Candidate{ID: fmt.Sprintf("p%d", r.IntN(10)), Free: int64(r.IntN(5) * 100)}
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
