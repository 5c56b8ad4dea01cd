package consensus

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config configures a Consensus. Start from DefaultConfig, set DataDir,
// and call Validate (New does too). New never modifies its Config.
type Config struct {
	// DataDir holds Raft's state: DataDir/raft/wal/raft.db (log and stable store, BoltDB)
	// and DataDir/raft/snapshots.
	DataDir string

	// HeartbeatTimeout: a follower that hears nothing from the leader for
	// this long (randomised up to twice it) starts an election. The leader
	// sends heartbeats ten times as often.
	HeartbeatTimeout time.Duration
	// ElectionTimeout: a candidate that wins no election in this long
	// (randomised up to twice it) starts another.
	ElectionTimeout time.Duration
	// CommitTimeout: the longest a follower waits to hear that an entry
	// committed when no new entries come.
	CommitTimeout time.Duration
	// LeaderLeaseTimeout: a leader that hears from no quorum for this long
	// steps down, so a leader cut off in a minority stops accepting ops.
	LeaderLeaseTimeout time.Duration
	// WaitForLeaderTimeout bounds how long Commit, AddPeer and RemovePeer
	// wait for a reachable leader before failing with ErrNoLeader.
	WaitForLeaderTimeout time.Duration
	// ReadTimeout bounds ReadBarrier: a consistent read that no leader
	// confirms in this long (no quorum, a minority partition) fails with
	// ErrNoLeader instead of answering from a state that may be stale.
	ReadTimeout time.Duration

	// SnapshotInterval: how often Raft checks whether SnapshotThreshold
	// entries accumulated since the last snapshot.
	SnapshotInterval time.Duration
	// SnapshotThreshold: entries since the last snapshot that trigger a new
	// one (and let the log be truncated).
	SnapshotThreshold uint64
	// SnapshotsRetained: snapshots kept on disk.
	SnapshotsRetained int
	// TrailingLogs: log entries kept behind a snapshot, so that a follower
	// that lags by fewer entries catches up from the log instead of being
	// sent the whole snapshot. The log on disk holds at most about
	// SnapshotThreshold + TrailingLogs entries, plus what arrives between
	// two looks (Raft looks every one to two SnapshotIntervals).
	TrailingLogs uint64

	// Voters is the number of voting peers the cluster aims for: AddPeer
	// adds voters until there are this many, and non-voters after.
	Voters int
	// PromoteAfter: a voter the leader has had no contact with for this
	// long is demoted to non-voter, and the live non-voter with the lowest
	// peer ID is promoted in its place, so that the cluster survives one
	// more failure again. Nothing changes while no non-voter is live. 0
	// turns this off (RemovePeer still promotes).
	PromoteAfter time.Duration

	// ShutdownTimeout bounds Close. Half of it goes to a graceful Raft
	// shutdown; then every Raft stream is torn down to unblock it.
	ShutdownTimeout time.Duration

	// Logger receives Raft's log lines; nil logs warnings and errors to
	// stderr.
	Logger hclog.Logger
}

// DefaultConfig returns the configuration for a LAN cluster.
func DefaultConfig() Config {
	return Config{
		// hashicorp/raft's defaults (1s, 1s, 50ms, 500ms), also what IPFS
		// Cluster ships: a leader is replaced 1-2 s after it dies, and a
		// loaded peer on a busy network does not trigger elections.
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		CommitTimeout:      50 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		// 15s, IPFS Cluster's default: several election rounds, so a commit
		// made during a leader change waits for the new leader instead of
		// failing.
		WaitForLeaderTimeout: 15 * time.Second,
		// 5s: an election takes 1-2 s with the timeouts above, so a read
		// made while the leader changes still succeeds, and a read on a
		// peer cut off from its quorum fails well before a script or a
		// load balancer would give up on it.
		ReadTimeout: 5 * time.Second,
		// hashicorp/raft's defaults: check every 2 minutes, snapshot after
		// 8192 entries. A snapshot of 10^6 pins is ~150 MB and takes
		// seconds, so snapshotting more often costs more than replaying
		// 8192 small entries at startup. Under a steady stream of pins the
		// log so stays under 8192 entries plus up to four minutes' worth
		// (Raft looks every one to two intervals), plus TrailingLogs.
		SnapshotInterval:  2 * time.Minute,
		SnapshotThreshold: 8192,
		// Two: the newest, and one to fall back to if it is damaged. Each
		// is a whole copy of the pinset, so disk use is twice the pinset.
		SnapshotsRetained: 2,
		// hashicorp/raft's default, 10240 entries of ~100-200 bytes (a pin
		// op with three allocations is ~150): ~2 MB of log buys a follower
		// that was away for ~10^4 pins a catch-up from the log instead of a
		// snapshot transfer that for 10^6 pins is ~200 MB.
		TrailingLogs: 10240,
		// Three voters survive one failure; each voter more makes every
		// commit wait for one more disk sync, and five are only worth it
		// to survive two failures.
		Voters: 3,
		// 5 minutes: a restart (seconds; restoring 10^6 pins takes ~2 s)
		// or an upgrade or reboot (a minute or two) keeps the peer a
		// voter, which it will be again right away; a peer still gone
		// after that is likely gone for good, and until it is replaced the
		// cluster is one more failure away from losing its quorum.
		PromoteAfter: 5 * time.Minute,
		// "A few seconds": long enough for a graceful shutdown on a loaded
		// machine, short enough for a daemon's stop.
		ShutdownTimeout: 5 * time.Second,
	}
}

// minPromoteElections is the shortest PromoteAfter, in election timeouts.
const minPromoteElections = 5

// Bounds on the retention settings, so that no setting lets the log or
// the snapshots grow without limit.
const (
	// maxLogEntries: 2^24 entries of ~150 bytes are ~2.5 GB of log, more
	// than a snapshot of 10^7 pins; past that a snapshot is always cheaper.
	maxLogEntries = 1 << 24
	// maxSnapshotInterval: a day.
	maxSnapshotInterval = 24 * time.Hour
	// maxSnapshotsRetained: each snapshot is a whole copy of the pinset.
	maxSnapshotsRetained = 100
)

// Validate reports the first problem with the configuration, checking
// fields against each other the way hashicorp/raft does and more.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("consensus config: %s: %w", fmt.Sprintf(format, args...), ErrInvalidConfig)
	}
	switch {
	case c.DataDir == "":
		return bad("DataDir is empty")
	case c.HeartbeatTimeout < 5*time.Millisecond:
		return bad("HeartbeatTimeout %s is below raft's minimum of 5ms", c.HeartbeatTimeout)
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return bad("ElectionTimeout %s is below HeartbeatTimeout %s", c.ElectionTimeout, c.HeartbeatTimeout)
	case c.LeaderLeaseTimeout < 5*time.Millisecond:
		return bad("LeaderLeaseTimeout %s is below raft's minimum of 5ms", c.LeaderLeaseTimeout)
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return bad("LeaderLeaseTimeout %s exceeds HeartbeatTimeout %s (raft requires lease <= heartbeat)", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.CommitTimeout < time.Millisecond:
		return bad("CommitTimeout %s is below raft's minimum of 1ms", c.CommitTimeout)
	case c.CommitTimeout > c.HeartbeatTimeout:
		// Followers would learn of commits later than of a dead leader.
		return bad("CommitTimeout %s exceeds HeartbeatTimeout %s", c.CommitTimeout, c.HeartbeatTimeout)
	case c.WaitForLeaderTimeout < 2*c.ElectionTimeout:
		// One election takes up to 2*ElectionTimeout; waiting less fails
		// every commit made while the leader changes.
		return bad("WaitForLeaderTimeout %s is under twice ElectionTimeout %s", c.WaitForLeaderTimeout, c.ElectionTimeout)
	case c.ReadTimeout < 2*c.ElectionTimeout:
		// As for WaitForLeaderTimeout: a read during an election would fail.
		return bad("ReadTimeout %s is under twice ElectionTimeout %s", c.ReadTimeout, c.ElectionTimeout)
	case c.SnapshotInterval < 5*time.Millisecond:
		return bad("SnapshotInterval %s is below raft's minimum of 5ms", c.SnapshotInterval)
	case c.SnapshotInterval > maxSnapshotInterval:
		// The log grows unchecked between two looks.
		return bad("SnapshotInterval %s exceeds %s: the log would grow for that long under a stream of pins", c.SnapshotInterval, maxSnapshotInterval)
	case c.SnapshotThreshold < 1 || c.SnapshotThreshold > maxLogEntries:
		return bad("SnapshotThreshold %d is not in 1..%d", c.SnapshotThreshold, maxLogEntries)
	case c.TrailingLogs > maxLogEntries:
		return bad("TrailingLogs %d exceeds %d", c.TrailingLogs, maxLogEntries)
	case c.SnapshotsRetained < 1 || c.SnapshotsRetained > maxSnapshotsRetained:
		return bad("SnapshotsRetained %d is not in 1..%d", c.SnapshotsRetained, maxSnapshotsRetained)
	case c.Voters < 1 || c.Voters%2 == 0:
		// An even count survives no more failures than one fewer voter but
		// needs a larger quorum.
		return bad("Voters %d must be odd and positive", c.Voters)
	case c.PromoteAfter < 0:
		return bad("PromoteAfter %s is negative (0 turns promotion off)", c.PromoteAfter)
	case c.PromoteAfter > 0 && c.PromoteAfter < minPromoteElections*c.ElectionTimeout:
		// The leader looks once per ElectionTimeout, and a voter that is
		// merely slow, or caught in a leader change, misses that much
		// contact now and then: swapping voters sooner would reshuffle
		// them on every hiccup.
		return bad("PromoteAfter %s is under %d times ElectionTimeout %s", c.PromoteAfter, minPromoteElections, c.ElectionTimeout)
	case c.ShutdownTimeout < 2*c.HeartbeatTimeout/10:
		return bad("ShutdownTimeout %s is too short to stop Raft", c.ShutdownTimeout)
	}
	return nil
}
