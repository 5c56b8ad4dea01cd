package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// RebalanceMove is one part moving from a fuller peer to an emptier one.
type RebalanceMove struct {
	Root string `json:"root"`
	Part string `json:"part"`
	From string `json:"from"`
	To   string `json:"to"`
	Size int64  `json:"size"`
}

// RebalanceProgress is one step of `shoal rebalance` (POST /rebalance).
type RebalanceProgress struct {
	// Moves are the moves this step started (or, in a dry run, would
	// start); Copying how many started moves are still copying.
	Moves   []RebalanceMove `json:"moves"`
	Copying int             `json:"copying"`
	// Spread is the difference in free bytes between the emptiest and
	// the fullest live peer once the moves are done; the cluster is
	// balanced when it is at most Tolerance.
	Spread    int64 `json:"spread"`
	Tolerance int64 `json:"tolerance"`
	// Done: nothing to move and nothing copying.
	Done bool `json:"done"`
	// Problems are moves that failed, one sentence each.
	Problems []string `json:"problems,omitempty"`
}

// Rebalancer is the part of a Backend that moves parts toward emptier
// peers; without it the server answers 501.
type Rebalancer interface {
	// Rebalance takes one step: it ends the moves whose copies are done
	// (dropping the part from the peer it left) and starts new ones
	// while the free-space spread is above tolerance (0: automatic).
	// With dryRun it only plans. A caller repeats it until Done.
	Rebalance(ctx context.Context, dryRun bool, tolerance int64) (RebalanceProgress, error)
}

// postRebalance takes one rebalancing step (Rebalancer).
func (s *Server) postRebalance(w http.ResponseWriter, r *http.Request, q url.Values) error {
	rb, ok := s.b.(Rebalancer)
	if !ok {
		return &statusError{http.StatusNotImplemented, "this peer cannot rebalance"}
	}
	dry := false
	if v := q.Get("dry-run"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return badRequest("dry-run %q is not true or false", v)
		}
		dry = b
	}
	if !dry && q.Get("consistency") == ConsistencyStale {
		return badRequest("a rebalance that moves parts reads the state consistently; --consistency stale goes only with --dry-run")
	}
	tol, err := int64Param(q, "tolerance", 0, 0)
	if err != nil {
		return err
	}
	pr, err := rb.Rebalance(r.Context(), dry, tol)
	if err != nil {
		return err
	}
	if pr.Moves == nil {
		pr.Moves = []RebalanceMove{}
	}
	writeJSON(w, http.StatusOK, pr)
	return nil
}
