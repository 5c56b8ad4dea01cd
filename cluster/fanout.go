package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/shard"
	"github.com/shoal-project/shoal/transfer"
)

// fanout is what a sharded add needs of a shard transfer.
type fanout interface {
	Put(ctx context.Context, b dag.Block) error
	// Commit returns the peers that confirmed the shard and why the
	// others failed; err only when the transfer itself could not finish.
	Commit(ctx context.Context, info shard.Info, nodes []dag.Block) (confirmed []peer.ID, failures []error, err error)
	Abort()
}

// newFanout opens a shard transfer to peers (this peer's own store among
// them when it is allocated), announcing at most maxSize bytes.
func (p *Peer) newFanout(ctx context.Context, peers []peer.ID, maxSize int64) (fanout, error) {
	var remote []peer.ID
	local := false
	for _, id := range peers {
		if id == p.host.ID() {
			local = true
		} else {
			remote = append(remote, id)
		}
	}
	var st = p.store
	release := func() {}
	if local {
		// Reserved like a received shard, or this peer would look
		// emptier than the others to the next shard's allocation.
		release = p.receiver.Hold(maxSize)
	} else {
		st = nil
	}
	f, err := transfer.NewFanout(ctx, p.host, remote, st, maxSize)
	if err != nil {
		release()
		return nil, err
	}
	return transferFanout{f: f, p: p, release: release}, nil
}

type transferFanout struct {
	f       *transfer.Fanout
	p       *Peer
	release func() // this peer's reservation for its own copy
}

func (t transferFanout) Put(ctx context.Context, b dag.Block) error { return t.f.Put(ctx, b) }

func (t transferFanout) Commit(ctx context.Context, info shard.Info, nodes []dag.Block) ([]peer.ID, []error, error) {
	// Our own copy must survive the reconciler until the shard is
	// recorded in consensus; the add releases it when it ends.
	t.p.tracker.protect(info.CID.String())
	err := t.f.Commit(ctx, info, nodes)
	t.release()
	var te *transfer.Error
	if err != nil && !errors.As(err, &te) {
		return nil, nil, err
	}
	if err != nil && ctx.Err() != nil {
		return nil, nil, err
	}
	res := t.f.Result()
	var failures []error
	for _, f := range res.Failed() {
		failures = append(failures, fmt.Errorf("%s: %w", f.Peer, f.Err))
	}
	return res.Confirmed(), failures, nil
}

func (t transferFanout) Abort() {
	t.f.Abort()
	t.release()
}
