package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/shard"
)

// copyPart copies a shard or a cluster-DAG from src into this peer's
// store under its CID, checking every block: a shard's list against its
// CID, each data block against its CID and its place in the list (the
// read protocol, /shoal/read/1), a cluster-DAG's list nodes against
// theirs. Only what was checked is stored: a shard's list nodes are those
// the walk from its root hashed (openRemoteShard refuses a holder that
// sends any other frame), a cluster-DAG's those its walk fetched one by
// one. The copy is committed only when complete; on any error nothing of
// it stays, and the caller tries the next holder.
func (p *Peer) copyPart(ctx context.Context, src peer.ID, part consensus.Part, c cid.Cid) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := p.store.Create(ctx)
	if err != nil {
		return err
	}
	defer w.Abort()
	switch part.Kind {
	case consensus.PartShard:
		sc, err := p.openRemoteShard(ctx, src, part.Shard)
		if err != nil {
			return fmt.Errorf("copy shard %s from %s: %w", c, src, err)
		}
		defer sc.close()
		for i, want := range sc.items {
			b, err := sc.next()
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%s sent %d of the %d blocks of shard %s", src, i, len(sc.items), c)
			}
			if err != nil {
				return fmt.Errorf("copy shard %s from %s: %w", c, src, err)
			}
			if !b.CID.Equals(want) {
				return fmt.Errorf("copy shard %s from %s: block %d is %s, the list names %s", c, src, i, b.CID, want)
			}
			if err := w.Put(b); err != nil {
				return err
			}
		}
		if _, err := sc.next(); !errors.Is(err, io.EOF) {
			return fmt.Errorf("copy shard %s from %s: it did not end after %d blocks: %v", c, src, len(sc.items), err)
		}
		for _, n := range sc.lists { // hashed, each where the tree names it
			if err := w.Put(n); err != nil {
				return err
			}
		}
	case consensus.PartClusterDAG:
		var nodes [][]byte
		var cids []cid.Cid
		_, err := shard.ReadList(c, shard.KindCluster, func(n cid.Cid) ([]byte, error) {
			data, err := p.readBlock(ctx, src, n)
			if err == nil {
				cids, nodes = append(cids, n), append(nodes, data)
			}
			return data, err
		})
		if err != nil {
			return fmt.Errorf("copy cluster-DAG %s from %s: %w", c, src, err)
		}
		for i := range nodes {
			if err := w.Put(dag.Block{CID: cids[i], Data: nodes[i]}); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("copy %s: not a shard or cluster-DAG", c)
	}
	_, err = w.Commit(ctx, c.String(), c)
	return err
}
