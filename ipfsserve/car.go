package ipfsserve

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/store"
)

// A CAR of a whole DAG (dag-scope=all, order=dfs, dups=n, no path below
// the root) is the common request, and boxo's traversal serves it at half
// the speed of the cluster's own export: it decodes every block through
// ipld-prime, hashes it a second time, and waits for each block before it
// asks for the next. dagCAR writes the same bytes itself, from a Reader
// with read-ahead: the CARv1 header naming the root, then the DAG's
// blocks in depth-first pre-order, each multihash once, identity CIDs
// left out but walked through, as boxo's CAR writer does
// (TestWholeCARMatchesBoxo compares them byte for byte).

// maxCARFrame bounds one block frame: a CID and a block of at most 2 MiB
// (dag.CheckCID and the read protocol refuse more).
const maxCARFrame = 4 << 20

// dagCAR is a whole-DAG CAR as an io.ReadCloser: each Read writes the next
// blocks' frames, walking on the caller's goroutine (the handler's copy),
// so nothing outlives Close.
type dagCAR struct {
	ctx   context.Context
	r     *Reader
	stack []cid.Cid           // the walk: the next block on top
	seen  map[string]struct{} // multihashes written or walked
	buf   bytes.Buffer        // frames not yet read
	err   error               // the walk's end: io.EOF or why it failed
}

// newDAGCAR starts the CAR of r's whole DAG. r must have ReadAhead on.
func newDAGCAR(ctx context.Context, r *Reader) *dagCAR {
	d := &dagCAR{ctx: ctx, r: r, stack: []cid.Cid{r.Root()}, seen: map[string]struct{}{}}
	d.buf.Write(store.CARv1Header(r.Root()))
	return d
}

func (d *dagCAR) Read(p []byte) (int, error) {
	for d.buf.Len() == 0 && d.err == nil {
		d.err = d.step()
	}
	if d.buf.Len() > 0 {
		return d.buf.Read(p)
	}
	return 0, d.err
}

// WriteTo writes the rest of the CAR to w, each block's frame in one
// Write: io.Copy calls it, sparing a copy through a small buffer.
func (d *dagCAR) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for {
		if d.buf.Len() == 0 && d.err == nil {
			d.err = d.step()
		}
		if d.buf.Len() == 0 {
			if d.err == io.EOF {
				return n, nil
			}
			return n, d.err
		}
		m, err := w.Write(d.buf.Bytes())
		n += int64(m)
		d.buf.Reset()
		if err != nil {
			d.err = err
			return n, err
		}
	}
}

// Close ends the walk; a Read after it fails.
func (d *dagCAR) Close() error {
	if d.err == nil || d.err == io.EOF {
		d.err = errors.New("the CAR stream is closed")
	}
	return nil
}

// step writes the next block of the walk into buf, or returns io.EOF
// once the walk is done.
func (d *dagCAR) step() error {
	for len(d.stack) > 0 {
		c := d.stack[len(d.stack)-1]
		d.stack = d.stack[:len(d.stack)-1]
		if _, ok := d.seen[string(c.Hash())]; ok {
			continue
		}
		d.seen[string(c.Hash())] = struct{}{}
		data, err := d.r.Block(d.ctx, c)
		if err != nil {
			return fmt.Errorf("block %s: %w", c, err)
		}
		var links []cid.Cid
		switch c.Type() {
		case cid.Raw:
		case cid.DagProtobuf:
			nd, err := mdag.DecodeProtobuf(data)
			if err != nil {
				return fmt.Errorf("block %s is not valid dag-pb: %w", c, err)
			}
			for _, l := range nd.Links() {
				links = append(links, l.Cid)
			}
		default:
			return fmt.Errorf("block %s: codec 0x%x is not one shoal pins", c, c.Type())
		}
		for i := len(links) - 1; i >= 0; i-- {
			d.stack = append(d.stack, links[i])
		}
		if c.Prefix().MhType == mh.IDENTITY {
			continue
		}
		cb := c.Bytes()
		if len(cb)+len(data) > maxCARFrame {
			return fmt.Errorf("block %s of %d bytes is too large", c, len(data))
		}
		var hdr [binary.MaxVarintLen64]byte
		d.buf.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(cb)+len(data)))])
		d.buf.Write(cb)
		d.buf.Write(data)
		return nil
	}
	return io.EOF
}
