package consensus

import "errors"

// Sentinel errors. Callers branch on them with errors.Is; each error the
// package returns wraps one of them (or a raft or libp2p error) together
// with what was attempted on which CID or peer.
var (
	// ErrInvalidConfig: Config.Validate found a field out of range or two
	// fields that contradict each other.
	ErrInvalidConfig = errors.New("invalid consensus configuration")

	// ErrInvalidOp: an op is malformed (bad encoding, field out of range,
	// unknown type or format version). Never retried.
	ErrInvalidOp = errors.New("invalid op")

	// ErrNotPinned: an unpin named a CID the pinset does not hold.
	ErrNotPinned = errors.New("not pinned")

	// ErrNoLeader: no leader was known or reachable within
	// Config.WaitForLeaderTimeout (or the caller's context).
	ErrNoLeader = errors.New("no reachable Raft leader")

	// ErrNotLeader: the peer asked to act as leader is not (any more). The
	// op was not applied; Commit retries on it by itself.
	ErrNotLeader = errors.New("not the Raft leader")

	// ErrOutcomeUnknown: the op reached the leader but it lost leadership
	// (or the caller gave up) before the op committed; it may or may not
	// be applied. Read the state to find out.
	ErrOutcomeUnknown = errors.New("outcome unknown")

	// ErrNoSuchAdd: an add op named an add in progress that does not
	// exist (never begun, committed or aborted already).
	ErrNoSuchAdd = errors.New("no such add in progress")

	// ErrUnknownPeer: RemovePeer named a peer that is not in the cluster.
	ErrUnknownPeer = errors.New("not a cluster peer")

	// ErrClosed: the Consensus is closed (or closing).
	ErrClosed = errors.New("consensus closed")

	// ErrStale: a repair or re-allocation was decided on holders that
	// have changed since (another decision came first). Not applied;
	// decide again on the current state.
	ErrStale = errors.New("stale decision")

	// ErrForbidden: the leader refused an op a member forwarded, as one
	// that member may not make (authority.go). Never retried.
	ErrForbidden = errors.New("not allowed")

	// ErrCorruptSnapshot: a snapshot stream does not follow the format.
	ErrCorruptSnapshot = errors.New("corrupt pinset snapshot")

	// ErrBadExport: ReadExport found a file that is not a whole, valid
	// state export (export.go).
	ErrBadExport = errors.New("not a valid shoal state export")

	// ErrUnsupportedFormat: consensus data on disk (a snapshot or a log
	// entry) is in a format version this build does not read, typically
	// one written by a newer shoal.
	ErrUnsupportedFormat = errors.New("consensus data in an unsupported format")
)
