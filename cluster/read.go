package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/shard"
	"github.com/shoal-project/shoal/store"
	"github.com/shoal-project/shoal/transfer"
)

// Reading a file back (`shoal cat`, `shoal get`) on any peer.
//
// A sharded file's bytes are its leaves' data in stream order: the ingest
// pipeline emits a file's blocks in DAG post-order, so the leaves come in
// file order whatever the layout, each internal node after its children.
// Reading a range therefore streams, in order, the shards whose Offset and
// Length cover it, and writes the data of each leaf (a raw block, or a
// dag-pb node with UnixFS data and no links), skipping internal nodes:
//
//	shard 0              shard 1                    shard 2
//	[l0 l1 l2 n0 l3]     [l4 l5 n1 l6 l7 n2 ...]    [... root]
//	 |---Length 0---|     |------Length 1------|
//	          [offset ........................... offset+length)
//
// Every block is checked against its CID, on several cores (hashahead.go),
// and against the shard's list, which is read first and checked
// against the shard's CID recorded in consensus: the i-th data block must
// be the list's i-th item, so a holder cannot substitute another file's
// blocks. A shard comes from this peer's store when it holds it, else from
// its allocated peers in order, then from any member. A holder that fails
// midway (down, corrupt, gone) is left for the next, which resumes at the
// first byte not yet produced.
//
// Read-ahead (readahead.go): the covering shards are fetched by goroutines
// of their own, up to readAheadShards (2) at once, each into a queue of at
// most readQueueChunks (4) chunks of readChunkSize (1 MiB) bytes; the
// request's goroutine writes the queues to the client strictly in order,
// and the fetch of shard k+2 starts once shard k is written. A fetch's
// error reaches the client after the bytes before it, as a sequential
// read gives it; a failed write to the client or a cancelled request
// cancels every fetch (resetting its stream) and waits for it. Memory per
// cat is bounded whatever the size of the file and of its shards: at most
// 2 x (4 + 1) chunks filled or queued and one being written (11 MiB), plus
// each fetch's source (a store reader's 2 MiB of O_DIRECT buffers, or a
// stream's 256 KiB read buffer), its blocks read ahead for hashing
// (hashahead.go: 4 batches of ~516 KiB, grown to ~2 MiB for 1 MiB blocks,
// and at most one block per batch in memory of its own, <= 8 MiB) and its
// shard's list: about 20 MiB with 256 KiB blocks, 32 MiB with 1 MiB
// blocks, under 100 MiB at worst (blocks near the 8 MiB limit).
//
// A plain pin is read with boxo's UnixFS DagReader over a block getter that
// reads this peer's store, else asks the pin's holders for each block.
//
// Protocol /shoal/read/1, gated by membership: the client sends one line,
// "shard CID" or "block CID"; the server answers one status byte (0: it
// follows; 1: a message line follows, e.g. "not here"), then
//
//	shard: list nodes (ReadList's order) 0x00, then the shard's data blocks
//	       in stored order, 0x00, and a status byte: 0 (complete), or 1 and
//	       a message line when the server failed midway (a corrupt block)
//	block: the one block
//
// each block framed as uvarint(len(cid)) cid uvarint(len(data)) data, with
// the fetch protocol's limits (CID <= 128 bytes, block <= 8 MiB).
//
// The list frames are exactly the nodes a walk of the shard's tree from
// its root visits, in that order, a node as often as the tree names it.
// The reader refuses a holder that sends anything else (a frame the tree
// does not name, a copy too many, two different nodes under one CID) and
// goes on to the next: the walk hashes one copy of each node, so another
// frame would be unverified, and a repair copy (copyPart) stores the
// walk's nodes and nothing else.
//
// The server does not hash the shard blocks it sends
// (store.OpenShardUnchecked): the reader hashes every block it receives
// anyway, and hashing on both sides doubled the CPU time of a remote read.
// The server still checks its file's structure (the store refuses damaged
// framing and CIDs with a *CorruptError, ending the shard with status 1)
// and each block's CID against the list. A block damaged on the server's
// disk therefore reaches the reader, which finds that it does not hash to
// its CID and leaves the server for the next holder; the server's own
// verification (`shoal verify`, and every health.verify_interval) finds it
// too and quarantines the copy, which its tracker then fetches again.
const protoRead protocol.ID = "/shoal/read/1"

// The deadlines and the cap of /shoal/read/1 are in limits.go. A reader
// renews its idle deadline before each frame, so a slow consumer of the
// file (the time spent writing to the API client) never counts against a
// holder; a server renews its own before each write, so a reader that
// stops reading for the idle timeout loses its stream (its next read
// fails, and it resumes from the next holder).

const (
	readOK      = 0
	readRefused = 1
)

// Cat writes the bytes of the pinned file s from offset (length bytes, or
// to the end with -1) to w.
func (b backend) Cat(ctx context.Context, s string, offset, length int64, w api.CatWriter) error {
	c, err := parseCID(s)
	if err != nil {
		return err
	}
	if offset < 0 || length < -1 {
		return fmt.Errorf("%w: offset %d and length %d: the offset must be >= 0, the length >= 0 or -1 (to the end)",
			api.ErrBadRequest, offset, length)
	}
	pin, ok := b.p.cons.State().Get(c)
	if !ok {
		if root, ok := b.p.cons.State().ShardOwner(c); ok {
			return fmt.Errorf("%w: %s is a shard of %s; cat %s instead", api.ErrBadRequest, c, root, root)
		}
		return fmt.Errorf("%w: %s is not pinned", api.ErrNotFound, c)
	}
	members := b.members(ctx)
	if pin.Kind == consensus.KindSharded {
		return b.p.catSharded(ctx, pin, members, offset, length, w)
	}
	return b.p.catPlain(ctx, pin, members, offset, length, w)
}

// members are the cluster's members other than this peer, the last
// resort when a pin's holders fail; reading needs no leader.
func (b backend) members(ctx context.Context) []peer.ID {
	ms, err := b.p.cons.Peers(ctx)
	if err != nil {
		return nil
	}
	var out []peer.ID
	for _, m := range ms {
		if m.ID != b.p.host.ID() {
			out = append(out, m.ID)
		}
	}
	return out
}

// span resolves a request against a file of size bytes: [from, to).
func span(root cid.Cid, size uint64, offset, length int64) (from, to uint64, err error) {
	if uint64(offset) > size {
		return 0, 0, fmt.Errorf("%w: offset %d is beyond the end of %s (%d bytes)", api.ErrBadRequest, offset, root, size)
	}
	from, to = uint64(offset), size
	if length >= 0 && uint64(length) < size-from {
		to = from + uint64(length)
	}
	return from, to, nil
}

// sinkWriter remembers a failed write, so that a failure of the API client
// is told apart from a failure of a holder (which the next one replaces).
type sinkWriter struct {
	w   io.Writer
	err error
}

func (s *sinkWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		s.err = err
	}
	return n, err
}

func (p *Peer) catSharded(ctx context.Context, pin consensus.Pin, members []peer.ID, offset, length int64, w api.CatWriter) error {
	var size uint64
	for i, sh := range pin.Shards {
		if sh.Offset != size {
			return fmt.Errorf("sharded pin %s: shard %d starts at byte %d, not %d", pin.CID, i, sh.Offset, size)
		}
		size += sh.Length
	}
	from, to, err := span(pin.CID, size, offset, length)
	if err != nil {
		return err
	}
	w.SetLength(int64(to - from))
	var cover []int // the shards holding bytes of [from, to), in order
	for i, sh := range pin.Shards {
		if max(from, sh.Offset) < min(to, sh.Offset+sh.Length) {
			cover = append(cover, i)
		}
	}
	sw := &sinkWriter{w: w}
	ra := readAhead{shards: readAheadShards, chunk: readChunkSize, queue: readQueueChunks}
	err = ra.run(ctx, len(cover), func(ctx context.Context, k int, qw io.Writer) error {
		i := cover[k]
		sh := pin.Shards[i]
		return p.catShard(ctx, pin.CID, i, sh, members, max(from, sh.Offset), min(to, sh.Offset+sh.Length), qw)
	}, sw)
	if sw.err != nil {
		return fmt.Errorf("write %s: %w", pin.CID, sw.err)
	}
	return err
}

// shardCopy is one holder's copy of a shard, being read.
type shardCopy struct {
	// items is the shard's list, checked against the shard's CID.
	items []cid.Cid
	// next returns the next data block, checked against its CID; its Data
	// is valid until the next call.
	next  func() (dag.Block, error)
	close func()
	// lists are the list node blocks, each hashed against its CID, in the
	// order a walk from the root visits them, a node as often as the tree
	// names it (remote copies only; see openRemoteShard).
	lists []dag.Block
}

// catShard writes the file bytes [from, to) that shard idx of root holds
// to w, trying its holders in turn. It runs on a fetch goroutine of the
// read-ahead, w its shard's queue, which fails only once the read is over.
func (p *Peer) catShard(ctx context.Context, root cid.Cid, idx int, sh consensus.Shard, members []peer.ID, from, to uint64, w io.Writer) error {
	sw := &sinkWriter{w: w}
	return p.fromHolders(ctx, "cat", root, idx, sh, members, func(sc *shardCopy) (error, error) {
		n, err := copyShard(sc, sh, from, to, sw)
		from += n
		return err, sw.err
	})
}

// fromHolders runs use on a copy of shard idx of root from each of its
// sources in turn (shardSources) until one succeeds. use returns the
// copy's error and, separately, a failure of the caller's own writer,
// which ends the attempts; use resumes where the failed source stopped.
// what names the operation in the log and the error.
func (p *Peer) fromHolders(ctx context.Context, what string, root cid.Cid, idx int, sh consensus.Shard, members []peer.ID,
	use func(sc *shardCopy) (err, sinkErr error)) error {
	var errs []string
	for i, src := range p.shardSources(ctx, sh, members) {
		if err := ctx.Err(); err != nil {
			return err
		}
		sc, err := src.open()
		if i == 0 && errors.Is(err, store.ErrNotFound) {
			continue // not held here: nothing to report
		}
		if err == nil {
			var sinkErr error
			err, sinkErr = use(sc)
			sc.close()
			if err == nil {
				return nil
			}
			if sinkErr != nil {
				return fmt.Errorf("write %s: %w", root, sinkErr)
			}
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
		}
		p.log("%s %s: shard %d (%s) from %s: %v", what, root, idx, sh.CID, src.name, err)
		errs = append(errs, fmt.Sprintf("%s: %v", src.name, err))
	}
	return fmt.Errorf("%w: no peer could serve shard %d (%s) of %s: %s", api.ErrUnavailable, idx, sh.CID, root, strings.Join(errs, "; "))
}

// shardSource is one place to read a shard from.
type shardSource struct {
	name string
	open func() (*shardCopy, error)
}

// shardSources are where to read sh from, in order: this peer's store
// (whose open fails with store.ErrNotFound when it does not hold sh), its
// allocated peers, then every other member.
func (p *Peer) shardSources(ctx context.Context, sh consensus.Shard, members []peer.ID) []shardSource {
	sources := []shardSource{{"this peer", func() (*shardCopy, error) { return p.openLocalShard(sh) }}}
	for _, id := range holderOrder(p.host.ID(), sh.Allocations, members) {
		sources = append(sources, shardSource{id.String(), func() (*shardCopy, error) { return p.openRemoteShard(ctx, id, sh) }})
	}
	return sources
}

// holderOrder is who to ask for a part: its allocations in order, then
// every other member, this peer left out.
func holderOrder(self peer.ID, allocs, members []peer.ID) []peer.ID {
	out := make([]peer.ID, 0, len(allocs)+len(members))
	seen := map[peer.ID]bool{self: true}
	for _, l := range [][]peer.ID{allocs, members} {
		for _, id := range l {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return out
}

// copyShard writes the file bytes in [from, to) of sc's leaves (the shard
// starts at sh.Offset) and returns how many it wrote.
func copyShard(sc *shardCopy, sh consensus.Shard, from, to uint64, w io.Writer) (uint64, error) {
	if uint64(len(sc.items)) != sh.Blocks {
		return 0, fmt.Errorf("its list names %d blocks, the pin records %d", len(sc.items), sh.Blocks)
	}
	var written uint64
	pos := sh.Offset
	for i, want := range sc.items {
		if pos >= to {
			return written, nil
		}
		b, err := sc.next()
		if errors.Is(err, io.EOF) {
			return written, fmt.Errorf("the shard ended after %d of %d blocks", i, len(sc.items))
		}
		if err != nil {
			return written, err
		}
		if !b.CID.Equals(want) {
			return written, fmt.Errorf("block %d is %s, but the shard's list names %s", i, b.CID, want)
		}
		data, err := dag.FileBytes(b)
		if err != nil {
			return written, err
		}
		end := pos + uint64(len(data))
		if lo, hi := max(pos, from), min(end, to); lo < hi {
			n, err := w.Write(data[lo-pos : hi-pos])
			written += uint64(n)
			if err != nil {
				return written, err
			}
		}
		pos = end
	}
	if pos != sh.Offset+sh.Length {
		return written, fmt.Errorf("its leaves hold %d bytes, the pin records %d", pos-sh.Offset, sh.Length)
	}
	return written, nil
}

// openLocalShard reads sh from this peer's store. It returns an error
// wrapping store.ErrNotFound when the store does not hold it.
func (p *Peer) openLocalShard(sh consensus.Shard) (*shardCopy, error) {
	key := sh.CID.String()
	items, err := shard.ReadList(sh.CID, shard.KindShard, p.store.Get)
	if err != nil {
		return nil, err
	}
	r, err := p.store.OpenShardUnchecked(key) // hashAhead hashes every block
	if err != nil {
		return nil, err
	}
	h := newHashAhead(r.NextInto)
	return &shardCopy{items: items, next: h.next, close: func() { h.stop(); r.Close() }}, nil
}

// openRead opens a read stream to from and asks for what of c.
func (p *Peer) openRead(ctx context.Context, from peer.ID, what string, c cid.Cid) (network.Stream, *bufio.Reader, error) {
	octx, cancel := context.WithTimeout(ctx, p.limits.request)
	defer cancel()
	s, err := p.host.NewStream(octx, from, protoRead)
	if err != nil {
		return nil, nil, err
	}
	_ = s.SetDeadline(time.Now().Add(p.limits.request))
	if _, err := s.Write([]byte(what + " " + c.String() + "\n")); err != nil {
		_ = s.Reset()
		return nil, nil, fmt.Errorf("ask for %s %s: %w", what, c, err)
	}
	_ = s.CloseWrite()
	br := bufio.NewReaderSize(s, 256<<10)
	st, err := br.ReadByte()
	if err != nil {
		_ = s.Reset()
		return nil, nil, fmt.Errorf("read %s %s: %w", what, c, err)
	}
	if st != readOK {
		msg, _ := bufio.NewReader(io.LimitReader(br, 1024)).ReadString('\n')
		_ = s.Reset()
		return nil, nil, fmt.Errorf("refused %s %s: %s", what, c, trimNL(msg))
	}
	_ = s.SetDeadline(time.Time{})
	return s, br, nil
}

// listLimit bounds the list node bytes a holder may send for a shard of n
// blocks: every link at its longest, the upper levels and node headers.
func listLimit(n uint64) uint64 { return (n+n/64+64)*(maxCIDLen+16) + 64<<10 }

// openRemoteShard asks from for sh: its list first, checked against sh.CID,
// then its data blocks one by one through next.
//
// The list frames must be exactly the nodes a walk of the tree from sh.CID
// visits, each as often as the tree names it (the read server sends them
// so), every copy of a node byte for byte the same: a frame the tree does
// not name, one copy too many or two different nodes under one CID fail
// the copy, since they would be stored unverified (the walk hashes each
// node once). The copy's lists are the walk's nodes, each one hashed.
func (p *Peer) openRemoteShard(ctx context.Context, from peer.ID, sh consensus.Shard) (_ *shardCopy, err error) {
	s, br, err := p.openRead(ctx, from, "shard", sh.CID)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	closeFn := func() { stop(); _ = s.Reset() }
	defer func() {
		if err != nil {
			closeFn()
		}
	}()
	type sentNode struct {
		c            cid.Cid
		data         []byte
		sent, walked int
	}
	nodes := map[string]*sentNode{}
	var order []*sentNode // as sent, so that an error names the first culprit
	var total uint64
	limit := listLimit(sh.Blocks)
	for {
		_ = s.SetReadDeadline(time.Now().Add(p.limits.idle))
		c, data, err := readFrame(br, nil)
		if err != nil {
			return nil, fmt.Errorf("read the list of shard %s: %w", sh.CID, err)
		}
		if !c.Defined() {
			break
		}
		if total += uint64(c.ByteLen() + len(data)); total > limit {
			return nil, fmt.Errorf("the list of shard %s takes more than %d bytes, too many for %d blocks", sh.CID, limit, sh.Blocks)
		}
		if n := nodes[c.KeyString()]; n != nil {
			if !bytes.Equal(n.data, data) {
				return nil, fmt.Errorf("the holder sent two different list nodes named %s", c)
			}
			n.sent++
			continue
		}
		n := &sentNode{c: c, data: data, sent: 1}
		nodes[c.KeyString()] = n
		order = append(order, n)
	}
	var lists []dag.Block
	items, err := shard.ReadList(sh.CID, shard.KindShard, func(c cid.Cid) ([]byte, error) {
		n := nodes[c.KeyString()]
		if n == nil {
			return nil, errors.New("the holder did not send it")
		}
		// Walked at most as often as sent: this also bounds the walk of
		// a tree that names one node many times.
		if n.walked++; n.walked > n.sent {
			return nil, fmt.Errorf("the list names it more often than the holder sent it (%d)", n.sent)
		}
		lists = append(lists, dag.Block{CID: c, Data: n.data}) // hashed by ReadList before it returns
		return n.data, nil
	})
	if err != nil {
		return nil, err
	}
	for _, n := range order {
		switch {
		case n.walked == 0:
			return nil, fmt.Errorf("the holder sent list node %s, which the shard's list does not name", n.c)
		case n.walked != n.sent:
			return nil, fmt.Errorf("the holder sent list node %s %d times, the shard's list names it %d times", n.c, n.sent, n.walked)
		}
	}
	h := newHashAhead(func(buf []byte) (dag.Block, int, error) {
		_ = s.SetReadDeadline(time.Now().Add(p.limits.idle))
		c, data, err := readFrame(br, buf)
		if err != nil {
			return dag.Block{}, 0, err
		}
		if !c.Defined() {
			return dag.Block{}, 0, readEnd(br)
		}
		n := 0
		if len(data) <= cap(buf) {
			n = len(data) // readFrame reads into buf whenever the block fits
		}
		return dag.Block{CID: c, Data: data}, n, nil
	})
	// The stream is reset before stop waits: the reader may be waiting
	// for a frame.
	return &shardCopy{items: items, next: h.next, close: func() { closeFn(); h.stop() }, lists: lists}, nil
}

// readEnd reads the status that ends a shard's blocks: io.EOF when the
// server finished, its message when it failed midway.
func readEnd(br *bufio.Reader) error {
	st, err := br.ReadByte()
	if err != nil {
		return fmt.Errorf("read the end of the shard: %w", err)
	}
	if st == readOK {
		return io.EOF
	}
	msg, _ := bufio.NewReader(io.LimitReader(br, 1024)).ReadString('\n')
	return fmt.Errorf("the holder failed: %s", trimNL(msg))
}

// checkBlock checks that data hashes to c.
func checkBlock(c cid.Cid, data []byte) error {
	switch err := dag.Verify(c, data); {
	case errors.Is(err, dag.ErrMismatch):
		return fmt.Errorf("block %s is corrupt: its bytes do not hash to its CID", c)
	case err != nil:
		return fmt.Errorf("hash block %s: %w", c, err)
	}
	return nil
}

// readFrame reads one block frame, reusing buf's memory when it is large
// enough. A zero CID length (the end of a run) returns cid.Undef.
func readFrame(br *bufio.Reader, buf []byte) (cid.Cid, []byte, error) {
	cl, err := binary.ReadUvarint(br)
	if err != nil {
		return cid.Undef, nil, err
	}
	if cl == 0 {
		return cid.Undef, nil, nil
	}
	if cl > maxCIDLen {
		return cid.Undef, nil, fmt.Errorf("a CID of %d bytes", cl)
	}
	var cb [maxCIDLen]byte
	if _, err := io.ReadFull(br, cb[:cl]); err != nil {
		return cid.Undef, nil, err
	}
	c, err := cid.Cast(cb[:cl])
	if err != nil {
		return cid.Undef, nil, fmt.Errorf("malformed CID: %w", err)
	}
	dl, err := binary.ReadUvarint(br)
	if err != nil {
		return cid.Undef, nil, err
	}
	if dl > maxBlockLen {
		return cid.Undef, nil, fmt.Errorf("block %s of %d bytes is above the %d-byte limit", c, dl, maxBlockLen)
	}
	if uint64(cap(buf)) < dl {
		buf = make([]byte, dl)
	}
	buf = buf[:dl]
	if _, err := io.ReadFull(br, buf); err != nil {
		return cid.Undef, nil, err
	}
	return c, buf, nil
}

func writeFrame(bw *bufio.Writer, c cid.Cid, data []byte) error {
	var hdr [binary.MaxVarintLen64]byte
	cb := c.Bytes()
	if _, err := bw.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(cb)))]); err != nil {
		return err
	}
	if _, err := bw.Write(cb); err != nil {
		return err
	}
	if _, err := bw.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(data)))]); err != nil {
		return err
	}
	_, err := bw.Write(data)
	return err
}

// readServer serves /shoal/read/1 from a peer's store.
type readServer struct {
	p *Peer
	slots
}

func newReadServer(p *Peer) *readServer {
	return &readServer{p: p, slots: newSlots(p.limits.read, "reads")}
}

func (rs *readServer) serve(s network.Stream) {
	defer s.Close()
	stop := context.AfterFunc(rs.p.ctx, func() { _ = s.Reset() })
	defer stop()
	line, ok := rs.p.readRequest(s)
	if !ok {
		return
	}
	refuse := func(msg string) { _, _ = s.Write(append([]byte{readRefused}, msg+"\n"...)) }
	what, arg, _ := strings.Cut(line, " ")
	c, err := cid.Decode(arg)
	if err != nil {
		refuse("malformed CID")
		return
	}
	if err := dag.CheckCID(c); err != nil {
		refuse(err.Error())
		return
	}
	if !rs.take(refuse) {
		return
	}
	defer rs.give()
	switch what {
	case "shard":
		rs.serveShard(s, c, refuse)
	case "block":
		rs.serveBlock(s, c, refuse)
	default:
		refuse(fmt.Sprintf("unknown request %q", what))
	}
}

// serveShard sends shard c, its blocks unhashed: the reader checks them
// (see protoRead).
func (rs *readServer) serveShard(s network.Stream, c cid.Cid, refuse func(string)) {
	st := rs.p.store
	r, err := st.OpenShardUnchecked(c.String())
	if err != nil {
		refuse("not here")
		return
	}
	defer r.Close()
	var nodes []dag.Block
	items, err := shard.ReadList(c, shard.KindShard, func(n cid.Cid) ([]byte, error) {
		data, err := st.Get(n)
		if err == nil {
			nodes = append(nodes, dag.Block{CID: n, Data: data})
		}
		return data, err
	})
	if err != nil {
		rs.p.log("serve shard %s to %s: %v", c, s.Conn().RemotePeer(), err)
		refuse("its list is unreadable here: " + err.Error())
		return
	}
	bw := bufio.NewWriterSize(&transfer.IdleStream{S: s, D: rs.p.limits.idle}, 1<<20)
	// A write fails when the reader stops, which it does as soon as it has
	// the bytes it wants: nothing to log.
	fail := func() { _ = s.Reset() }
	if err := bw.WriteByte(readOK); err != nil {
		fail()
		return
	}
	for _, n := range nodes {
		if err := writeFrame(bw, n.CID, n.Data); err != nil {
			fail()
			return
		}
	}
	if err := bw.WriteByte(0); err != nil {
		fail()
		return
	}
	status := []byte{0, readOK}
	for i, want := range items {
		b, err := r.Next()
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("the stored shard ends after %d of its %d blocks", i, len(items))
		}
		if err == nil && !b.CID.Equals(want) {
			err = fmt.Errorf("stored block %d is %s, but the shard's list names %s", i, b.CID, want)
		}
		if err != nil {
			rs.p.log("serve shard %s to %s: %v", c, s.Conn().RemotePeer(), err)
			status = append([]byte{0, readRefused}, strings.Join(strings.Fields(err.Error()), " ")+"\n"...)
			break
		}
		if err := writeFrame(bw, b.CID, b.Data); err != nil {
			fail()
			return
		}
	}
	if _, err := bw.Write(status); err != nil {
		fail()
		return
	}
	if err := bw.Flush(); err != nil {
		fail()
	}
}

// serveBlock sends block c unhashed, as serveShard sends a shard: the
// reader checks it (readBlock), so a block crosses hashed once.
func (rs *readServer) serveBlock(s network.Stream, c cid.Cid, refuse func(string)) {
	data, err := rs.p.store.GetUnhashed(c)
	switch {
	case errors.Is(err, store.ErrNotFound):
		refuse("not here")
		return
	case err != nil:
		rs.p.log("serve block %s to %s: %v", c, s.Conn().RemotePeer(), err)
		refuse(err.Error())
		return
	}
	bw := bufio.NewWriterSize(&transfer.IdleStream{S: s, D: rs.p.limits.idle}, min(len(data)+256, 1<<20))
	if bw.WriteByte(readOK) != nil || writeFrame(bw, c, data) != nil || bw.Flush() != nil {
		_ = s.Reset()
	}
}

// readBlock asks from for block c and checks it.
func (p *Peer) readBlock(ctx context.Context, from peer.ID, c cid.Cid) ([]byte, error) {
	s, br, err := p.openRead(ctx, from, "block", c)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	_ = s.SetReadDeadline(time.Now().Add(p.limits.idle))
	got, data, err := readFrame(br, nil)
	if err != nil {
		return nil, fmt.Errorf("read block %s: %w", c, err)
	}
	if !got.Equals(c) {
		return nil, fmt.Errorf("asked for block %s, got %s", c, got)
	}
	if err := checkBlock(c, data); err != nil {
		return nil, err
	}
	return data, nil
}

// catPlain reads a plain pin with boxo's UnixFS reader, its blocks from
// this peer's store or, block by block, from the pin's holders.
func (p *Peer) catPlain(ctx context.Context, pin consensus.Pin, members []peer.ID, offset, length int64, w api.CatWriter) error {
	ctx, cancel := context.WithCancel(ctx)
	g := &blockGetter{p: p, peers: holderOrder(p.host.ID(), pin.Allocations, members)}
	defer g.wg.Wait()
	defer cancel()
	data, err := g.block(ctx, pin.CID)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return fmt.Errorf("%w: read %s: %v", api.ErrUnavailable, pin.CID, err)
	}
	nd, err := decodeNode(pin.CID, data)
	if err != nil {
		return fmt.Errorf("%w: %s is not a file shoal can read: %v", api.ErrBadRequest, pin.CID, err)
	}
	dr, err := uio.NewDagReader(ctx, nd, g)
	switch {
	case errors.Is(err, uio.ErrIsDir):
		return fmt.Errorf("%w: %s is a directory; cat reads files", api.ErrBadRequest, pin.CID)
	case err != nil:
		return fmt.Errorf("%w: %s is not a file shoal can read: %v", api.ErrBadRequest, pin.CID, err)
	}
	defer dr.Close()
	from, to, err := span(pin.CID, dr.Size(), offset, length)
	if err != nil {
		return err
	}
	n := int64(to - from)
	w.SetLength(n)
	if n == 0 {
		return nil
	}
	if _, err := dr.Seek(int64(from), io.SeekStart); err != nil {
		return fmt.Errorf("read %s: seek to %d: %w", pin.CID, from, err)
	}
	sw := &sinkWriter{w: w}
	copied, err := io.Copy(sw, io.LimitReader(dr, n))
	switch {
	case sw.err != nil:
		return fmt.Errorf("write %s: %w", pin.CID, sw.err)
	case err != nil:
		return fmt.Errorf("read %s: %w", pin.CID, err)
	case copied != n:
		return fmt.Errorf("read %s: its DAG holds %d bytes from offset %d, its root says %d", pin.CID, copied, from, n)
	}
	return nil
}

// blockGetter is the ipld.NodeGetter of catPlain. Get runs on the reader's
// goroutine and on GetMany's, concurrently.
type blockGetter struct {
	p     *Peer
	peers []peer.ID // the pin's holders, then every other member
	wg    sync.WaitGroup

	mu   sync.Mutex
	good peer.ID // the last peer that served a block: asked first
}

var _ ipld.NodeGetter = (*blockGetter)(nil)

func (g *blockGetter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	data, err := g.block(ctx, c)
	if err != nil {
		return nil, err
	}
	return decodeNode(c, data)
}

// decodeNode decodes a checked block as the UnixFS reader takes it.
func decodeNode(c cid.Cid, data []byte) (ipld.Node, error) {
	blk, err := blocks.NewBlockWithCid(data, c)
	if err != nil {
		return nil, err
	}
	switch c.Type() {
	case cid.DagProtobuf:
		return mdag.DecodeProtobufBlock(blk)
	case cid.Raw:
		return mdag.DecodeRawBlock(blk)
	}
	return nil, fmt.Errorf("block %s: codec 0x%x is not supported", c, c.Type())
}

// GetMany gets cids in order on a goroutine of its own; the channel is
// buffered, so the goroutine ends once it has got them or ctx is done.
func (g *blockGetter) GetMany(ctx context.Context, cids []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(cids))
	g.wg.Go(func() {
		defer close(out)
		for _, c := range cids {
			nd, err := g.Get(ctx, c)
			out <- &ipld.NodeOption{Node: nd, Err: err}
			if ctx.Err() != nil {
				return
			}
		}
	})
	return out
}

// block returns c's data, checked: from the local store, else from the
// first peer that serves it.
func (g *blockGetter) block(ctx context.Context, c cid.Cid) ([]byte, error) {
	if c.Prefix().MhType == identityCode {
		dec, err := mh.Decode(c.Hash())
		if err != nil {
			return nil, err
		}
		return dec.Digest, nil
	}
	data, err := g.p.store.Get(c)
	if err == nil {
		return data, nil
	}
	var errs []string
	if !errors.Is(err, store.ErrNotFound) {
		g.p.log("read block %s: %v; asking other peers", c, err)
		errs = append(errs, "this peer: "+err.Error())
	}
	g.mu.Lock()
	order := g.peers
	if g.good != "" {
		order = holderOrder(g.p.host.ID(), []peer.ID{g.good}, g.peers)
	}
	g.mu.Unlock()
	for _, id := range order {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := g.p.readBlock(ctx, id, c)
		if err == nil {
			g.mu.Lock()
			g.good = id
			g.mu.Unlock()
			return data, nil
		}
		errs = append(errs, fmt.Sprintf("%s: %v", id, err))
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("block %s: no peer holds it", c)
	}
	return nil, fmt.Errorf("no peer could serve block %s: %s", c, strings.Join(errs, "; "))
}
