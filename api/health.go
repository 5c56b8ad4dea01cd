package api

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Outcomes of verifying one stored part (VerifyResult.Status).
const (
	// VerifyOK: every block re-hashed to its CID and the index matched.
	VerifyOK = "ok"
	// VerifyCorrupt: damage found; the part was quarantined and the
	// peer fetches a good copy from another holder.
	VerifyCorrupt = "corrupt"
	// VerifyMissing: the part is allocated to the peer but not stored
	// there (yet): status says whether it is queued, pinning or failing.
	VerifyMissing = "missing"
	// VerifyError: the part could not be read (not damage: an I/O
	// error, a cancelled request).
	VerifyError = "error"
	// VerifyUnreachable: the peer did not answer; Part is empty.
	VerifyUnreachable = "unreachable"
)

// Kinds of part (VerifyResult.Kind).
const (
	PartPlain      = "plain"       // a plain pin's whole DAG
	PartShard      = "shard"       // a shard of a sharded pin
	PartClusterDAG = "cluster-dag" // a sharded pin's list of shards
	PartUnknown    = "unknown"     // stored, but no pin accounts for it
)

// VerifyResult is one peer's verification of one stored part (`shoal
// verify --json`).
type VerifyResult struct {
	Peer string `json:"peer"`
	Name string `json:"name"`
	// Root is the pin the part belongs to (empty for PartUnknown); Part
	// the store key (a CID).
	Root   string `json:"root,omitempty"`
	Part   string `json:"part,omitempty"`
	Kind   string `json:"kind,omitempty"`
	Status string `json:"status"`
	// Error is the store's description of the damage (which block, at
	// which offset) or why the peer could not be asked.
	Error string `json:"error,omitempty"`
}

// Verifier is the part of a Backend that re-hashes stored parts (POST
// /verify); without it the server answers 501.
type Verifier interface {
	// Verify re-hashes the parts of the pin cid (every stored part when
	// cid is "") that this peer holds, or with local false every
	// member. Damaged parts are quarantined and fetched again. It
	// returns ErrNotFound for a cid that is not pinned. It is called on
	// the request's goroutine and takes as long as reading the data.
	Verify(ctx context.Context, cid string, local bool) ([]VerifyResult, error)
}

// TrackerReport is one peer's answer to recover or sync (`shoal recover
// --json`, `shoal sync --json`).
type TrackerReport struct {
	Peer string `json:"peer"`
	Name string `json:"name"`
	// Retried is how many failed parts recover queued again at once.
	Retried int `json:"retried"`
	// Queued and Failed are the parts waiting to be fetched and those
	// that failed and wait for a retry, after the action.
	Queued int `json:"queued"`
	Failed int `json:"failed"`
	// Failures are up to MaxFailures of the failed parts, by CID.
	Failures []Failure `json:"failures,omitempty"`
	// Unknown is how many shards the peer stores that its state does not
	// know (stored before the state began: state cleanup or import, a new
	// cluster), and UnknownBytes their size: kept, never deleted by the
	// tracker, until the state wants them or `shoal state prune`.
	Unknown      int   `json:"unknown"`
	UnknownBytes int64 `json:"unknown_bytes"`
	// Error says why the peer could not be asked.
	Error string `json:"error,omitempty"`
}

// MaxFailures bounds TrackerReport.Failures.
const MaxFailures = 100

// Failure is a part a peer could not fetch, and why.
type Failure struct {
	CID   string `json:"cid"`
	Error string `json:"error"`
}

// TrackerControl is the part of a Backend that drives the peers' trackers
// (POST /recover, POST /sync); without it the server answers 501.
type TrackerControl interface {
	// Recover retries at once the failed parts of pin cid (every failed
	// part when cid is ""), on this peer with local, else on every
	// member.
	Recover(ctx context.Context, cid string, local bool) ([]TrackerReport, error)
	// Sync makes the trackers walk the whole state and store now and
	// answers once they did.
	Sync(ctx context.Context, local bool) ([]TrackerReport, error)
}

// DrainProgress is one step of emptying a peer before its removal (POST
// /peers/{id}/drain).
type DrainProgress struct {
	Peer string `json:"peer"`
	// Parts are the parts the state still allocates to the peer; Copying
	// how many of them are being copied to new holders first.
	Parts   int `json:"parts"`
	Copying int `json:"copying"`
	// Moved is how many parts this step took off the peer.
	Moved int `json:"moved"`
	// Problems are parts that cannot move now, one sentence each (at
	// most MaxFailures).
	Problems []string `json:"problems,omitempty"`
}

// Drainer is the part of a Backend that moves a peer's parts to other
// peers before the peer is removed; without it the server answers 501.
type Drainer interface {
	// Drain takes one step: parts whose other holders are at least
	// their rmin drop the peer; the others get new holders, which copy
	// them, and drop the peer once they hold them. A caller repeats it
	// until Parts is 0.
	Drain(ctx context.Context, id string) (DrainProgress, error)
}

// StatusFilter selects pins by the states of their peers (`shoal status
// --filter`): a pin matches when any of its peers, for the pin or any of
// its shards, is in one of the states. The zero value matches every pin.
type StatusFilter []string

// FilterError matches pin_error: the state of a peer that failed to fetch
// its part, whose message status shows.
const FilterError = "error"

var filterStates = []string{StatusQueued, StatusPinning, StatusPinned, StatusPinError, StatusUnpinning,
	StatusUnpinned, StatusRemote, StatusUnreachable}

// ParseStatusFilter reads a comma-separated list of per-peer states
// (queued, pinning, pinned, pin_error or error, unpinning, unpinned,
// remote, unreachable). An empty string matches every pin.
func ParseStatusFilter(s string) (StatusFilter, error) {
	if s == "" {
		return nil, nil
	}
	var f StatusFilter
	for v := range strings.SplitSeq(s, ",") {
		v = strings.TrimSpace(v)
		if v == FilterError {
			v = StatusPinError
		}
		if !slices.Contains(filterStates, v) {
			return nil, fmt.Errorf("%q is not a peer state to filter on; use %s or error", v, strings.Join(filterStates, ", "))
		}
		if !slices.Contains(f, v) {
			f = append(f, v)
		}
	}
	return f, nil
}

// String is the filter as ParseStatusFilter reads it.
func (f StatusFilter) String() string { return strings.Join(f, ",") }

// Match reports whether st passes the filter.
func (f StatusFilter) Match(st PinStatus) bool {
	if len(f) == 0 {
		return true
	}
	for _, ps := range st.Peers {
		if slices.Contains(f, ps.Status) {
			return true
		}
	}
	for _, sh := range st.Shards {
		for _, s := range sh.Peers {
			if slices.Contains(f, s) {
				return true
			}
		}
	}
	return false
}
