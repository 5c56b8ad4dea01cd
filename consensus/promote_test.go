package consensus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// promoteAfter is the PromoteAfter of the promotion tests: five election
// timeouts of fastConfig, the shortest Validate allows.
const promoteAfter = time.Second

func withPromoteAfter(c *Config) { c.PromoteAfter = promoteAfter }

// suffrage returns the members of p's latest configuration: voter or not.
func suffrage(t testing.TB, p *testPeer) map[peer.ID]bool {
	t.Helper()
	m, err := p.c.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[peer.ID]bool{}
	for _, x := range m {
		out[x.ID] = x.Voter
	}
	return out
}

func describe(peers []*testPeer, v map[peer.ID]bool) string {
	var s []string
	for _, p := range peers {
		voter, ok := v[p.id()]
		switch {
		case !ok:
			s = append(s, p.name+":-")
		case voter:
			s = append(s, p.name+":voter")
		default:
			s = append(s, p.name+":non-voter")
		}
	}
	return fmt.Sprint(s)
}

// TestDeadVoterIsReplaced runs 3 voters and 1 non-voter with PromoteAfter
// 1s, takes one voter down in each of the ways a voter goes down, and
// checks that the leader demotes it and promotes the non-voter, not before
// PromoteAfter and within a bound; that commits go on; and that the
// cluster then survives the loss of one more of the original voters,
// which without the swap would leave one voter of three.
func TestDeadVoterIsReplaced(t *testing.T) {
	tests := []struct {
		name string
		// down takes victim out; the others are the rest of the cluster.
		down func(t *testing.T, victim *testPeer, others []*testPeer)
		// late: how long after going down the victim looks out of
		// contact to the leader, at the least and at the most.
		late func(cfg Config) (least, most time.Duration)
		// leader: the victim is the leader rather than a follower.
		leader bool
	}{
		{name: "closed follower", down: func(_ *testing.T, v *testPeer, _ []*testPeer) { v.stop() }},
		{name: "closed leader", leader: true, down: func(_ *testing.T, v *testPeer, _ []*testPeer) { v.stop() },
			// The new leader starts the clock when it is elected.
			late: func(cfg Config) (time.Duration, time.Duration) {
				return 0, 2*cfg.ElectionTimeout + 2*cfg.HeartbeatTimeout
			}},
		{name: "cut-off follower", down: func(_ *testing.T, v *testPeer, others []*testPeer) {
			partition([]*testPeer{v}, others, true)
		}},
		{
			// The process hangs: its connections stay up, so only the
			// leader's failing heartbeats tell that it is gone; the
			// first fails after the transport timeout.
			name: "frozen follower",
			down: func(t *testing.T, v *testPeer, _ []*testPeer) {
				if err := v.c.Close(); err != nil {
					t.Fatal(err)
				}
				v.host.Handle(RaftProtocol, func(s network.Stream) {
					_, _ = io.Copy(io.Discard, s) // read requests, answer none, until reset
					_ = s.Reset()
				})
			},
			late: func(cfg Config) (time.Duration, time.Duration) {
				// The next heartbeat leaves within HeartbeatTimeout/10
				// and fails after the transport timeout. (One cut by
				// the Close may fail at once.)
				return 0, transportTimeout(cfg) + cfg.HeartbeatTimeout
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peers := newCluster(t, 4, withPromoteAfter) // Voters = 3: peer3 joins as a non-voter
			spare := peers[3]
			if v := suffrage(t, peers[0]); v[spare.id()] {
				t.Fatalf("membership %s: want peer3 a non-voter", describe(peers, v))
			}
			leader, followers := leaderOf(t, peers[:3])
			victim := followers[0]
			if tt.leader {
				victim = leader
			}
			var rest, voters []*testPeer // rest: all but the victim; voters: the voters to be
			for _, p := range peers {
				if p != victim {
					rest = append(rest, p)
					voters = append(voters, p)
				}
			}
			cfg := victim.cfg
			var least, most time.Duration
			if tt.late != nil {
				least, most = tt.late(cfg)
			}

			start := time.Now()
			tt.down(t, victim, rest)
			var judge *testPeer // a live voter whose view we wait on
			waitFor(t, 5*time.Second, "a live leader", func() bool {
				for _, p := range voters[:2] {
					if p.c.Leader() == p.id() {
						judge = p
						return true
					}
				}
				return false
			})
			// Ticks come every ElectionTimeout, and the commit of two
			// configuration changes takes a few heartbeats more.
			bound := promoteAfter + most + 2*cfg.ElectionTimeout + 3*time.Second
			var last map[peer.ID]bool
			took := waitFor(t, bound, "the non-voter replaces the dead voter", func() bool {
				last = suffrage(t, judge)
				return len(last) == 4 && !last[victim.id()] && last[voters[0].id()] && last[voters[1].id()] && last[voters[2].id()]
			})
			t.Logf("%s: %s after the voter went down (PromoteAfter %s): %s",
				tt.name, took.Round(time.Millisecond), promoteAfter, describe(peers, last))
			// The leader last saw the victim in contact at a tick up to
			// one ElectionTimeout before it looked out of contact.
			if early := promoteAfter + least - cfg.ElectionTimeout; time.Since(start) < early {
				t.Fatalf("replaced after %s, before PromoteAfter %s (+%s to notice)", time.Since(start), promoteAfter, least)
			}

			// Commits go on, through the promoted peer too.
			pinN(t, spare, 0, 3)
			waitSameState(t, rest, 3)

			// The cluster again survives one more failure: take down the
			// original voter that is not the leader; the leader and
			// the promoted peer are a quorum of the three voters.
			l, _ := leaderOf(t, rest)
			var third *testPeer
			for _, p := range peers[:3] {
				if p != victim && p != l {
					third = p
					break
				}
			}
			third.stop()
			pinN(t, l, 3, 5)
			waitSameState(t, []*testPeer{l, spare}, 5)
		})
	}
}

// TestNoLiveNonVoterKeepsVoters: with the only non-voter down as well, the
// dead voter stays a voter (the cluster goes on with two of three), and
// once the non-voter is back, it replaces the dead voter.
func TestNoLiveNonVoterKeepsVoters(t *testing.T) {
	peers := newCluster(t, 4, withPromoteAfter)
	spare := peers[3]
	leader, followers := leaderOf(t, peers[:3])
	victim := followers[0]
	before := suffrage(t, leader)

	spare.stop()
	victim.stop()
	// The leader counts the victim dead from its first tick PromoteAfter
	// after it last saw it in contact, at the latest a moment after stop
	// returned; it then decides at every tick, and with no live
	// non-voter it must leave the membership alone.
	membershipHolds(t, peers, leader, before, time.Now().Add(promoteAfter), "with no live non-voter")
	pinN(t, followers[1], 0, 2)
	waitSameState(t, []*testPeer{leader, followers[1]}, 2)

	// The non-voter comes back (on a new port, which the others learn) and
	// is promoted within a few ticks: the voter has been down for long.
	start := time.Now()
	spare.start()
	spare.tellAddrs(peers...)
	var last map[peer.ID]bool
	took := waitFor(t, promoteAfter+5*time.Second, "the returning non-voter replaces the dead voter", func() bool {
		last = suffrage(t, leader)
		return last[spare.id()] && !last[victim.id()] && len(last) == 4
	})
	t.Logf("the non-voter replaced the dead voter %s after it came back (%s since start): %s",
		took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), describe(peers, last))
	pinN(t, spare, 2, 3)
	waitSameState(t, []*testPeer{leader, followers[1], spare}, 3)
}

// TestPromotionOff: PromoteAfter 0 leaves a dead voter a voter.
func TestPromotionOff(t *testing.T) {
	peers := newCluster(t, 4, func(c *Config) { c.PromoteAfter = 0 })
	leader, followers := leaderOf(t, peers[:3])
	before := suffrage(t, leader)
	followers[0].stop()
	// Off means never. What can be checked is that 0 is not read as any
	// PromoteAfter that Validate accepts: the shortest is
	// minPromoteElections election timeouts.
	membershipHolds(t, peers, leader, before, time.Now().Add(minPromoteElections*leader.cfg.ElectionTimeout), "with promotion off")
}

// membershipHolds checks that leader's membership stays before, all the
// way until decideTicks of its voter checks have passed since dead: the
// moment from which a voter that went down counts as dead to it. The
// leader checks every ElectionTimeout and changes nothing when it
// decides against a swap, so no event marks that decision: a window of
// ticks, each of which had to decide, is what the code promises to act
// within. It fails at the first change.
func membershipHolds(t *testing.T, peers []*testPeer, leader *testPeer, before map[peer.ID]bool, dead time.Time, why string) {
	t.Helper()
	end := time.NewTimer(time.Until(dead.Add(decideTicks * leader.cfg.ElectionTimeout)))
	defer end.Stop()
	poll := time.NewTicker(leader.cfg.ElectionTimeout / 10)
	defer poll.Stop()
	for {
		if got := suffrage(t, leader); !maps(got, before) {
			t.Fatalf("membership changed %s: %s, was %s", why, describe(peers, got), describe(peers, before))
		}
		select {
		case <-poll.C:
		case <-end.C:
			if got := suffrage(t, leader); !maps(got, before) {
				t.Fatalf("membership changed %s: %s, was %s", why, describe(peers, got), describe(peers, before))
			}
			return
		}
	}
}

// decideTicks is how many of the leader's voter checks membershipHolds
// watches once a voter is dead: one already decides, the others are the
// margin for a loaded machine that runs them late.
const decideTicks = 5

func maps(a, b map[peer.ID]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestPlanSwaps checks the planner's rules on their own: whom it demotes,
// whom it promotes, in which order, and when it does nothing.
func TestPlanSwaps(t *testing.T) {
	const after = time.Minute
	ids := make([]raft.ServerID, 8)
	for i := range ids {
		ids[i] = raft.ServerID(fixedPeer(t, byte(i+1)).String())
	}
	// Name members by their rank in peer ID order, as the planner sorts.
	slices.SortFunc(ids, func(a, b raft.ServerID) int { return cmp.Compare(peer.ID(a), peer.ID(b)) })
	name := map[raft.ServerID]string{}
	for i, id := range ids {
		name[id] = fmt.Sprint(i)
	}
	// m describes a member: "v" voter or "n" non-voter, then "+" live,
	// "-" down longer than after, "~" down for less.
	m := func(i int, kind string) memberState {
		s := memberState{Server: raft.Server{ID: ids[i], Address: raft.ServerAddress(ids[i])}}
		s.Suffrage = raft.Voter
		if kind[0] == 'n' {
			s.Suffrage = raft.Nonvoter
		}
		switch kind[1] {
		case '+':
			s.Live = true
		case '-':
			s.Down = after + time.Second
		case '~':
			s.Down = after - time.Second
		}
		return s
	}
	tests := []struct {
		name    string
		voters  int
		members []memberState
		want    string // "promote>demote" steps; "_" promotes nobody
	}{
		{"all live", 3, []memberState{m(0, "v+"), m(1, "v+"), m(2, "v+"), m(3, "n+")}, ""},
		{"one dead, one spare", 3, []memberState{m(0, "v+"), m(1, "v-"), m(2, "v+"), m(3, "n+")}, "3>1"},
		{"down, but not for long", 3, []memberState{m(0, "v+"), m(1, "v~"), m(2, "v+"), m(3, "n+")}, ""},
		{"no spare", 3, []memberState{m(0, "v+"), m(1, "v-"), m(2, "v+")}, ""},
		{"spare down too", 3, []memberState{m(0, "v+"), m(1, "v-"), m(2, "v+"), m(3, "n-")}, ""},
		{"lowest live spare", 3, []memberState{m(0, "v+"), m(1, "v-"), m(2, "v+"), m(3, "n-"), m(5, "n+"), m(4, "n+")}, "4>1"},
		{"no quorum in contact", 3, []memberState{m(0, "v+"), m(1, "v-"), m(2, "v-"), m(3, "n+"), m(4, "n+")}, ""},
		{"two dead of five", 5, []memberState{m(0, "v+"), m(6, "v-"), m(2, "v+"), m(3, "v-"), m(4, "v+"),
			m(5, "n+"), m(1, "n+")}, "1>3 5>6"},
		{"two dead, one spare", 5, []memberState{m(0, "v+"), m(1, "v-"), m(2, "v+"), m(3, "v-"), m(4, "v+"),
			m(5, "n+")}, "5>1"},
		{"a swap half done: demote only", 3, []memberState{m(0, "v+"), m(1, "v-"), m(2, "v+"), m(3, "v+")}, "_>1"},
		{"too many dead voters", 3, []memberState{m(0, "v+"), m(1, "v-"), m(2, "v-"), m(3, "v+"), m(4, "v+"),
			m(5, "n+")}, "_>1 _>2"},
		{"one too many, then swap", 5, []memberState{m(0, "v+"), m(1, "v-"), m(2, "v-"), m(3, "v+"), m(4, "v+"),
			m(6, "v+"), m(5, "n+")}, "_>1 5>2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, s := range planSwaps(tt.members, tt.voters, after) {
				p := "_"
				if s.Promote.ID != "" {
					p = name[s.Promote.ID]
				}
				got = append(got, p+">"+name[s.Demote.ID])
			}
			if g := fmt.Sprint(got); g != fmt.Sprint(strings.Fields(tt.want)) {
				t.Fatalf("plan %s, want %s", g, fmt.Sprint(strings.Fields(tt.want)))
			}
		})
	}
}

func TestConfigValidatePromoteAfter(t *testing.T) {
	tests := []struct {
		name string
		d    func(c Config) time.Duration
		ok   bool
	}{
		{"default", func(c Config) time.Duration { return DefaultConfig().PromoteAfter }, true},
		{"off", func(Config) time.Duration { return 0 }, true},
		{"negative", func(Config) time.Duration { return -time.Second }, false},
		{"shortest", func(c Config) time.Duration { return minPromoteElections * c.ElectionTimeout }, true},
		{"under five election timeouts", func(c Config) time.Duration { return minPromoteElections*c.ElectionTimeout - 1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.DataDir = t.TempDir()
			c.PromoteAfter = tt.d(c)
			err := c.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() with PromoteAfter %s = %v, want ok=%v", c.PromoteAfter, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
	if err := fastConfig(t.TempDir()).Validate(); err != nil {
		t.Fatalf("the tests' config: %v", err)
	}
	c := fastConfig(t.TempDir())
	withPromoteAfter(&c)
	if err := c.Validate(); err != nil {
		t.Fatalf("the promotion tests' config: %v", err)
	}
}
