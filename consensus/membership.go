package consensus

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Member is a peer of the Raft configuration.
type Member struct {
	ID    peer.ID
	Voter bool // false: a non-voter, which replicates the log but does not vote
}

// Peers returns the members of the latest Raft configuration this peer
// knows (committed or not), sorted by ID.
func (c *Consensus) Peers(ctx context.Context) ([]Member, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list peers on %s: %w", c.id, err)
	}
	conf, _, err := c.configuration()
	if err != nil {
		return nil, err
	}
	out := make([]Member, 0, len(conf.Servers))
	for _, s := range conf.Servers {
		id, err := peer.Decode(string(s.ID))
		if err != nil {
			return nil, fmt.Errorf("list peers on %s: raft server ID %q: %w", c.id, s.ID, err)
		}
		out = append(out, Member{ID: id, Voter: s.Suffrage == raft.Voter})
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// IsMember reports whether id is in the latest Raft configuration this
// peer knows. It implements p2p.Membership: cheap, safe for concurrent
// use, and usable after Close.
func (c *Consensus) IsMember(id peer.ID) bool {
	conf, _, err := c.configuration()
	if err != nil {
		return false
	}
	sid := raft.ServerID(id.String())
	for _, s := range conf.Servers {
		if s.ID == sid {
			return true
		}
	}
	return false
}

func (c *Consensus) configuration() (raft.Configuration, uint64, error) {
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, 0, fmt.Errorf("read raft configuration on %s: %w", c.id, err)
	}
	return f.Configuration(), f.Index(), nil
}

// AddPeer adds id to the cluster: as a voter while there are fewer than
// Config.Voters, as a non-voter after. Adding a member again does
// nothing. It works on any peer (a follower forwards it to the leader,
// with the addresses of id it knows) and returns once the new
// configuration is committed.
func (c *Consensus) AddPeer(ctx context.Context, id peer.ID) error {
	ctx, end, err := c.begin(ctx)
	if err != nil {
		return fmt.Errorf("add peer %s: %w", id, err)
	}
	defer end()
	err = c.onLeader(ctx, func(ctx context.Context, leader peer.ID) error {
		if leader == c.id {
			return c.addPeerLocal(ctx, id)
		}
		body := appendField(nil, []byte(id))
		body = appendAddrs(body, c.host.PeerAddrs(id))
		_, err := c.call(ctx, leader, reqAddPeer, body)
		return err
	})
	if err != nil {
		return fmt.Errorf("add peer %s: %w", id, err)
	}
	return nil
}

// RemovePeer removes id from the cluster. If id is a voter and a
// non-voter is connected to the leader, that non-voter is promoted first,
// so the number of voters holds. ErrUnknownPeer if id is not a member.
func (c *Consensus) RemovePeer(ctx context.Context, id peer.ID) error {
	ctx, end, err := c.begin(ctx)
	if err != nil {
		return fmt.Errorf("remove peer %s: %w", id, err)
	}
	defer end()
	err = c.onLeader(ctx, func(ctx context.Context, leader peer.ID) error {
		if leader == c.id {
			return c.removePeerLocal(ctx, id)
		}
		_, err := c.call(ctx, leader, reqRemovePeer, appendField(nil, []byte(id)))
		return err
	})
	if err != nil {
		return fmt.Errorf("remove peer %s: %w", id, err)
	}
	return nil
}

func (c *Consensus) addPeerLocal(ctx context.Context, id peer.ID) error {
	c.memberMu.Lock()
	defer c.memberMu.Unlock()
	conf, index, err := c.configuration()
	if err != nil {
		return err
	}
	sid := raft.ServerID(id.String())
	voters := 0
	for _, s := range conf.Servers {
		if s.ID == sid {
			return nil
		}
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	addr := raft.ServerAddress(id.String())
	timeout := c.enqueueTimeout(ctx)
	// index makes raft refuse the change if the configuration moved since
	// we counted the voters (a change made by another leader meanwhile).
	if voters < c.cfg.Voters {
		return c.wait(ctx, c.raft.AddVoter(sid, addr, index, timeout))
	}
	return c.wait(ctx, c.raft.AddNonvoter(sid, addr, index, timeout))
}

func (c *Consensus) removePeerLocal(ctx context.Context, id peer.ID) error {
	c.memberMu.Lock()
	defer c.memberMu.Unlock()
	conf, index, err := c.configuration()
	if err != nil {
		return err
	}
	sid := raft.ServerID(id.String())
	i := slices.IndexFunc(conf.Servers, func(s raft.Server) bool { return s.ID == sid })
	if i < 0 {
		return fmt.Errorf("%s: %w", id, ErrUnknownPeer)
	}
	timeout := c.enqueueTimeout(ctx)
	if conf.Servers[i].Suffrage == raft.Voter {
		for _, s := range conf.Servers {
			if s.Suffrage != raft.Nonvoter || !c.live(s.ID) {
				continue
			}
			if err := c.wait(ctx, c.raft.AddVoter(s.ID, s.Address, index, timeout)); err != nil {
				return fmt.Errorf("promote non-voter %s to replace voter %s: %w", s.ID, id, err)
			}
			if _, index, err = c.configuration(); err != nil {
				return err
			}
			break
		}
	}
	return c.wait(ctx, c.raft.RemoveServer(sid, index, timeout))
}

// live reports whether the leader (this peer) has a connection to the
// peer: the leader replicates to every member, so a member it is not
// connected to is down or cut off.
func (c *Consensus) live(sid raft.ServerID) bool {
	id, err := peer.Decode(string(sid))
	return err == nil && id != c.id && c.host.Connected(id)
}

// addrLoop is the one goroutine Consensus runs besides Raft's. Every
// ElectionTimeout it does what this peer's role needs:
//
//   - a follower makes sure it has addresses for every member, asking the
//     leader for those it lacks (fetchMissingAddrs). A peer learns the
//     addresses of the members it joined through, but not of those that
//     joined after it, and it needs them when it becomes a candidate or
//     the leader.
//   - the leader replaces voters that stayed out of contact for
//     PromoteAfter (checkVoters), fed by Raft's heartbeat observations.
func (c *Consensus) addrLoop() {
	defer c.bg.Done()
	var (
		w   *contacts
		obs chan raft.Observation
	)
	if c.cfg.PromoteAfter > 0 {
		w = newContacts(c.cfg)
		// Raft drops observations when the channel is full rather than
		// wait; contacts copes (a failed heartbeat repeats, and a record
		// of one expires).
		obs = make(chan raft.Observation, 64)
		o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
			switch o.Data.(type) {
			case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
				return true
			}
			return false
		})
		c.raft.RegisterObserver(o)
		defer c.raft.DeregisterObserver(o)
	}
	t := time.NewTicker(c.cfg.ElectionTimeout)
	defer t.Stop()
	for {
		select {
		case <-c.closing:
			return
		case o := <-obs: // nil, and never ready, without PromoteAfter
			w.observe(o.Data, time.Now())
			continue
		case <-t.C:
		}
		if c.raft.State() != raft.Leader {
			w.reset()
			c.fetchMissingAddrs()
			continue
		}
		if w != nil {
			c.checkVoters(w)
		}
	}
}

func (c *Consensus) fetchMissingAddrs() {
	leader := c.Leader()
	if leader == "" || leader == c.id {
		return
	}
	conf, _, err := c.configuration()
	if err != nil {
		return
	}
	var missing []peer.ID
	for _, s := range conf.Servers {
		id, err := peer.Decode(string(s.ID))
		if err != nil || id == c.id || id == leader || len(c.host.PeerAddrs(id)) > 0 {
			continue
		}
		missing = append(missing, id)
	}
	if len(missing) == 0 {
		return
	}
	missing = missing[:min(len(missing), maxAddrLookups)]
	ctx, end, err := c.begin(context.Background())
	if err != nil {
		return
	}
	defer end()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ElectionTimeout)
	defer cancel()
	body := binary.AppendUvarint(nil, uint64(len(missing)))
	for _, id := range missing {
		body = appendField(body, []byte(id))
	}
	resp, err := c.call(ctx, leader, reqAddrs, body)
	if err != nil {
		c.log.Debug("fetch member addresses", "leader", leader, "error", err)
		return
	}
	d := decoder{b: resp}
	n := d.uvarint()
	for i := uint64(0); i < n && d.err == nil; i++ {
		id := d.peerIDField()
		addrs := d.addrs()
		if d.err == nil {
			c.host.AddAddrs(id, addrs)
		}
	}
}

// contacts is what the leader knows of its contact with each member: when
// it last saw each one in contact, and which ones fail heartbeats. Only
// addrLoop uses it. A nil *contacts ignores everything.
type contacts struct {
	// seen is when each member was last in contact, or when this peer
	// first saw it as leader: a new leader knows nothing older, so every
	// member gets PromoteAfter from then.
	seen map[raft.ServerID]time.Time
	// failing holds, per member whose heartbeats fail, when the latest
	// failure was observed; a resumed heartbeat deletes it. A record older
	// than stale is ignored, in case the resume was dropped: while
	// heartbeats fail, a failure is observed at least every transport
	// timeout plus half a heartbeat.
	failing map[raft.ServerID]time.Time
	stale   time.Duration
}

func newContacts(cfg Config) *contacts {
	return &contacts{
		seen:    map[raft.ServerID]time.Time{},
		failing: map[raft.ServerID]time.Time{},
		stale:   2 * (transportTimeout(cfg) + cfg.HeartbeatTimeout),
	}
}

func (w *contacts) observe(data any, now time.Time) {
	if w == nil {
		return
	}
	switch o := data.(type) {
	case raft.FailedHeartbeatObservation:
		w.failing[o.PeerID] = now
	case raft.ResumedHeartbeatObservation:
		delete(w.failing, o.PeerID)
	}
}

// reset forgets everything: this peer is not (or no longer) the leader.
func (w *contacts) reset() {
	if w == nil {
		return
	}
	clear(w.seen)
	clear(w.failing)
}

// update records the members of conf in contact now (connected, with
// heartbeats not failing) and returns each member's state for the planner.
func (w *contacts) update(conf raft.Configuration, inContact func(raft.ServerID) bool, now time.Time) []memberState {
	out := make([]memberState, 0, len(conf.Servers))
	present := make(map[raft.ServerID]bool, len(conf.Servers))
	for _, s := range conf.Servers {
		present[s.ID] = true
		at, failed := w.failing[s.ID]
		live := inContact(s.ID) && (!failed || now.Sub(at) > w.stale)
		if _, ok := w.seen[s.ID]; live || !ok {
			w.seen[s.ID] = now
		}
		out = append(out, memberState{Server: s, Live: live, Down: now.Sub(w.seen[s.ID])})
	}
	for id := range w.seen {
		if !present[id] {
			delete(w.seen, id)
			delete(w.failing, id)
		}
	}
	return out
}

// memberState is a member of the configuration as the leader sees it.
type memberState struct {
	raft.Server
	Live bool          // in contact with the leader now (the leader itself is)
	Down time.Duration // how long it has been out of contact; 0 when Live
}

// swap is one step of a promotion plan: promote a non-voter (unless
// Promote.ID is empty) and then demote a voter.
type swap struct {
	Promote, Demote raft.Server
}

// planSwaps decides which dead voters to replace by which live non-voters.
// It is pure, so that it can be tested on its own:
//
//   - dead voters are those out of contact for longer than after; each is
//     demoted to non-voter, lowest peer ID first;
//   - while the voters number voters or fewer, each demotion is preceded
//     by the promotion of the live non-voter with the lowest peer ID, so
//     that the count holds; with none left, that voter stays as it is;
//   - with more voters than that (a swap half done), a dead voter is
//     demoted without a replacement;
//   - nothing is done unless the voters in contact form a quorum: the
//     leader must be able to commit each change, and it must not count
//     on its own view when that view says it has lost the cluster.
func planSwaps(members []memberState, voters int, after time.Duration) []swap {
	var dead, spare []memberState
	nVoters, nLive := 0, 0
	for _, m := range members {
		switch {
		case m.Suffrage == raft.Voter:
			nVoters++
			if m.Live {
				nLive++
			} else if m.Down > after {
				dead = append(dead, m)
			}
		case m.Suffrage == raft.Nonvoter && m.Live:
			spare = append(spare, m)
		}
	}
	if len(dead) == 0 || nLive < nVoters/2+1 {
		return nil
	}
	byID := func(a, b memberState) int { return cmp.Compare(peer.ID(a.ID), peer.ID(b.ID)) }
	slices.SortFunc(dead, byID)
	slices.SortFunc(spare, byID)
	var plan []swap
	for _, d := range dead {
		step := swap{Demote: d.Server}
		if nVoters <= voters {
			if len(spare) == 0 {
				break
			}
			step.Promote = spare[0].Server
			spare = spare[1:]
			nVoters++
		}
		plan = append(plan, step)
		nVoters--
	}
	return plan
}

// checkVoters, on the leader, replaces voters that stayed out of contact
// for PromoteAfter by live non-voters (planSwaps says which).
func (c *Consensus) checkVoters(w *contacts) {
	ctx, end, err := c.begin(context.Background())
	if err != nil {
		return
	}
	defer end()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.WaitForLeaderTimeout)
	defer cancel()
	c.memberMu.Lock()
	defer c.memberMu.Unlock()
	conf, index, err := c.configuration()
	if err != nil {
		return
	}
	self := raft.ServerID(c.id.String())
	members := w.update(conf, func(id raft.ServerID) bool { return id == self || c.live(id) }, time.Now())
	for _, step := range planSwaps(members, c.cfg.Voters, c.cfg.PromoteAfter) {
		down := time.Duration(0)
		for _, m := range members {
			if m.ID == step.Demote.ID {
				down = m.Down
			}
		}
		if index, err = c.swapVoter(ctx, step, index); err != nil {
			if errors.Is(err, ErrClosed) {
				return
			}
			c.log.Error("replace a voter that is down", "voter", step.Demote.ID, "down", down.Round(time.Second),
				"error", err)
			return
		}
		if step.Promote.ID != "" {
			c.log.Warn("promoted a non-voter to replace a voter that is down", "promoted", step.Promote.ID,
				"demoted", step.Demote.ID, "down", down.Round(time.Second))
		} else {
			c.log.Warn("demoted a voter that is down", "demoted", step.Demote.ID, "down", down.Round(time.Second))
		}
	}
}

// swapVoter carries out one step against the configuration at index and
// returns the index of the configuration it leaves.
func (c *Consensus) swapVoter(ctx context.Context, step swap, index uint64) (uint64, error) {
	timeout := c.enqueueTimeout(ctx)
	if step.Promote.ID != "" {
		// Promote first: the cluster never has fewer voters in contact
		// than before, and a failure now leaves one voter too many (which
		// the next check demotes) rather than one too few.
		f := c.raft.AddVoter(step.Promote.ID, step.Promote.Address, index, timeout)
		if err := c.wait(ctx, f); err != nil {
			return 0, fmt.Errorf("promote non-voter %s: %w", step.Promote.ID, err)
		}
		index = f.Index()
	}
	f := c.raft.DemoteVoter(step.Demote.ID, index, timeout)
	if err := c.wait(ctx, f); err != nil {
		return 0, fmt.Errorf("demote voter %s: %w", step.Demote.ID, err)
	}
	return f.Index(), nil
}
