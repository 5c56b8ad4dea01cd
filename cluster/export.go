package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/store"
)

// Exporting a pinned DAG as a CAR file (`shoal export`, GET /export) on
// any peer.
//
// The file is CARv1, the pin's root its only root: the most widely read
// form (`ipfs dag import`, go-car, js-car). Its sections are the DAG's
// blocks, never shoal's own list nodes or cluster-DAG:
//
//   - a sharded pin: each shard's data blocks in stored order, shard after
//     shard, which is the ingest stream's post-order (leaves in file order,
//     each internal node after its children, the root last). A file whose
//     content repeats has repeated leaves in that stream and the CAR repeats
//     them too, as CARv1 allows (an importer stores a block once): leaving
//     them out would need a set of CIDs that grows with the file.
//   - a plain pin: the DAG in depth-first pre-order, each distinct block
//     once (walkDAG), from this peer's store when it holds the root, else
//     from the pin's holders over /shoal/fetch/1.
//
// Memory: a write buffer and one block for a sharded pin, whatever its
// size; a plain pin adds one CID per block of its DAG (the walk's visited
// set), and a plain pin is held whole on one peer, so its DAG is bounded by
// a peer's disk anyway.
//
// Every block is checked against its CID, and a shard's against the
// shard's list as cat checks them (read.go). A holder that fails midway is
// replaced by the next, which resumes after the blocks already written: a
// shard's block order, and a DAG's pre-order, are the same on every holder.

// exportBufSize is the write buffer of an export: 1 MiB, as the read
// server's, so that a section is rarely split over two writes to the API
// client.
const exportBufSize = 1 << 20

// Export writes the whole DAG of the pinned root s to w as a CARv1 file.
func (b backend) Export(ctx context.Context, s string, w io.Writer) error {
	c, err := parseCID(s)
	if err != nil {
		return err
	}
	pin, ok := b.p.cons.State().Get(c)
	if !ok {
		if root, ok := b.p.cons.State().ShardOwner(c); ok {
			return fmt.Errorf("%w: %s is a shard of %s; export %s instead", api.ErrBadRequest, c, root, root)
		}
		return fmt.Errorf("%w: %s is not pinned", api.ErrNotFound, c)
	}
	members := b.members(ctx)
	cw := &carWriter{w: bufio.NewWriterSize(w, exportBufSize)}
	if _, err := cw.w.Write(store.CARv1Header(pin.CID)); err != nil {
		return fmt.Errorf("write %s: %w", pin.CID, err)
	}
	if pin.Kind == consensus.KindSharded {
		for i, sh := range pin.Shards {
			if err := b.p.exportShard(ctx, pin.CID, i, sh, members, cw); err != nil {
				return err
			}
		}
	} else if err := b.p.exportPlain(ctx, pin, members, cw); err != nil {
		return err
	}
	if err := cw.w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", pin.CID, err)
	}
	return nil
}

// carWriter writes CAR sections. It remembers a failed write, so that a
// failure of the API client is told apart from a failure of a holder
// (which the next one replaces).
type carWriter struct {
	w   *bufio.Writer
	err error
}

// put writes b as one section: uvarint(len(cid)+len(data)) cid data.
func (cw *carWriter) put(b dag.Block) error {
	var hdr [binary.MaxVarintLen64]byte
	cb := b.CID.Bytes()
	_, err := cw.w.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(cb)+len(b.Data)))])
	if err == nil {
		_, err = cw.w.Write(cb)
	}
	if err == nil {
		_, err = cw.w.Write(b.Data)
	}
	if err != nil {
		cw.err = err
	}
	return err
}

// exportShard writes the data blocks of shard idx of root, trying its
// holders in turn.
func (p *Peer) exportShard(ctx context.Context, root cid.Cid, idx int, sh consensus.Shard, members []peer.ID, cw *carWriter) error {
	var done uint64 // blocks of sh written so far
	return p.fromHolders(ctx, "export", root, idx, sh, members, func(sc *shardCopy) (error, error) {
		return copyBlocks(sc, sh, &done, cw.put), cw.err
	})
}

// copyBlocks passes sc's data blocks to put, in order, from the *done-th
// on, counting them in *done. Each must be the item of the shard's list at
// its place.
func copyBlocks(sc *shardCopy, sh consensus.Shard, done *uint64, put func(dag.Block) error) error {
	if uint64(len(sc.items)) != sh.Blocks {
		return fmt.Errorf("its list names %d blocks, the pin records %d", len(sc.items), sh.Blocks)
	}
	for i, want := range sc.items {
		b, err := sc.next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("the shard ended after %d of %d blocks", i, len(sc.items))
		}
		if err != nil {
			return err
		}
		if !b.CID.Equals(want) {
			return fmt.Errorf("block %d is %s, but the shard's list names %s", i, b.CID, want)
		}
		if uint64(i) < *done {
			continue
		}
		if err := put(b); err != nil {
			return err
		}
		*done++
	}
	return nil
}

// exportPlain writes the DAG of a plain pin in pre-order: from this peer's
// store when it holds the root, else from the pin's holders, then from
// every other member.
func (p *Peer) exportPlain(ctx context.Context, pin consensus.Pin, members []peer.ID, cw *carWriter) error {
	var done int64 // blocks written so far
	// skipDone passes on the blocks of a walk past the first done.
	skipDone := func(walk func(emit func(dag.Block) error) error) error {
		var n int64
		return walk(func(b dag.Block) error {
			if n++; n <= done {
				return nil
			}
			if err := cw.put(b); err != nil {
				return err
			}
			done++
			return nil
		})
	}
	type source struct {
		name string
		walk func(emit func(dag.Block) error) error
	}
	var sources []source
	if p.store.Has(pin.CID) {
		sources = append(sources, source{"this peer", func(emit func(dag.Block) error) error {
			return walkDAG(pin.CID, p.store.Get, emit)
		}})
	}
	for _, id := range holderOrder(p.host.ID(), pin.Allocations, members) {
		sources = append(sources, source{id.String(), func(emit func(dag.Block) error) error {
			return p.fetch(ctx, id, pin.CID, emit)
		}})
	}
	var errs []string
	for _, src := range sources {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := skipDone(src.walk)
		if err == nil {
			return nil
		}
		if cw.err != nil {
			return fmt.Errorf("write %s: %w", pin.CID, cw.err)
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		p.log("export %s from %s: %v", pin.CID, src.name, err)
		errs = append(errs, fmt.Sprintf("%s: %v", src.name, err))
	}
	if len(errs) == 0 {
		return fmt.Errorf("%w: no peer holds %s", api.ErrUnavailable, pin.CID)
	}
	return fmt.Errorf("%w: no peer could serve %s: %s", api.ErrUnavailable, pin.CID, strings.Join(errs, "; "))
}
