package consensus

import (
	"cmp"
	"context"
	"encoding/binary"
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

// addrLoop makes sure this peer has addresses for every member, asking
// the leader for those it lacks. A peer learns the addresses of the
// members it joined through, but not of those that joined after it, and
// it needs them when it becomes a candidate or the leader.
func (c *Consensus) addrLoop() {
	defer c.bg.Done()
	t := time.NewTicker(c.cfg.ElectionTimeout)
	defer t.Stop()
	for {
		select {
		case <-c.closing:
			return
		case <-t.C:
		}
		c.fetchMissingAddrs()
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
