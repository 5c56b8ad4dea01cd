// Package consensus keeps the cluster's shared pinset consistent on every
// peer with Raft (hashicorp/raft), over libp2p streams of a p2p.Host.
//
// Glossary:
//
//   - pinset: the replicated state, a set of Pins keyed by CID (State).
//   - Pin: a CID with a name, replication factors (RMin, RMax; -1 means
//     every peer), the peers it is allocated to, a Kind, and the times the
//     proposer stamped on it.
//   - op: one change to the pinset (Op: OpPin adds or updates, OpUnpin
//     removes), encoded compactly and versioned; one Raft log entry each.
//   - Apply: the FSM step that applies a committed op to the State. It is
//     deterministic: no I/O, clock, randomness or network; its result (nil
//     or an error such as ErrNotPinned) goes back to the committer.
//   - leader, follower, voter, non-voter: Raft's roles. Voters elect the
//     leader and make up the quorum; non-voters only replicate. The
//     cluster keeps Config.Voters voters (3 by default) and makes the rest
//     non-voters, so that adding peers does not slow down commits.
//   - snapshot: the whole pinset written as one stream (format in
//     snapshot.go), after which Raft can drop the log before it.
//   - export: the whole pinset as text, one JSON object a line
//     (State.WriteExport, ReadExport; format in export.go and
//     docs/state.md), for people and for moving a pinset between peers.
//   - format version: every format this package stores names its version
//     (an op's first byte, a snapshot's header line, an export's header).
//     New refuses data whose newest snapshot, or any log entry after it,
//     is in a version it does not read (ErrUnsupportedFormat), rather
//     than skip it and run with another state; testdata keeps a fixture
//     of every version that a test reads.
//
// With Raft stopped (package cluster holds the peer's lock), ReadState
// replays a data directory into a State as Raft would on restart, and
// ResetState replaces it with a given State and a configuration of one
// peer, writing aside and swapping so that a failure changes nothing and
// a crash midway is completed by FinishReset (which New runs): what
// `shoal state export` and `import` run (recover.go).
//
// Using it:
//
//  1. Build a p2p.Host, then New(host, cfg); wire it into the host with
//     host.SetMembership(c) and host.SetOnJoin (calling c.AddPeer).
//  2. On the first peer of a new cluster only, call Bootstrap. Other peers
//     call host.Join with the address of any member; the member's hook
//     adds them to Raft.
//  3. Change the pinset with Commit on any peer; read it with State.
//  4. Close before closing the host.
//
// Commit, AddPeer and RemovePeer work on any peer. A follower forwards
// the request to the leader over CommitProtocol, and retries while the
// leader is unknown, changing or unreachable, for up to
// WaitForLeaderTimeout:
//
//	client        follower F                  leader L              followers
//	  | Commit(op)    |                            |                       |
//	  |-------------->| /shoal/commit/1: op ------>| raft.Apply            |
//	  |               |                            |-- AppendEntries ----->|
//	  |               |                            |<-------------- acks --|
//	  |               |                            | Apply(op) on L's FSM  |
//	  |               |<---- result of Apply ------|                       |
//	  |<--- error ----|                            |   (each FSM applies   |
//	  |               |                            |    the op in turn)    |
//
// Raft's RPCs travel on RaftProtocol streams: a raft.ServerAddress is the
// peer's ID, and its network addresses come from the host's peerstore.
// Peers learn each other's addresses from the join handshake, from the
// add-peer request the leader receives, and by asking the leader for
// members they have none for (every ElectionTimeout). Addresses are not
// persisted: after a restart the daemon must seed the peerstore.
//
// Goroutines: Raft owns its own (main loop, FSM, snapshots, replication);
// the State is written only by Raft's FSM goroutine and read by anyone
// under its RWMutex. Consensus adds one goroutine (the address loop) plus
// one per raft future being waited on; Close waits for all of them and
// bounds Raft's own shutdown by ShutdownTimeout.
//
// Failure behaviour, measured by the tests with 200ms heartbeat and
// election timeouts on two shared cores (go test ./consensus -run
// 'FailsOver|Minority|Quorum' -v prints the figures):
//
//   - closing the leader hands leadership over: both followers know the
//     new leader ~12ms after Close begins;
//   - a leader cut off from the others steps down after
//     LeaderLeaseTimeout (its pending commit fails with ErrOutcomeUnknown
//     after ~100ms) and the majority elects another within ~370-410ms;
//   - a follower cut off alone fails commits with ErrNoLeader; entries a
//     minority proposed never appear anywhere once the partition heals;
//   - Close of a leader whose followers froze returns after
//     ShutdownTimeout/2 plus ~60ms, where Raft alone would wait for the
//     transport timeout (10s by default).
//
// Size: a snapshot of 1,000,000 pins (three allocations and a name each)
// is ~200 bytes a pin; persisting it through raft's file store takes ~3.2 s
// and restoring it ~2.1 s, with a peak RSS of ~630 MiB holding both copies
// (go test ./consensus -run '^$' -bench SnapshotRestore1M -benchtime 1x).
package consensus
