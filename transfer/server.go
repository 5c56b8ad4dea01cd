package transfer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/shard"
	"github.com/shoal-project/shoal/store"
)

const (
	// DefaultMaxConcurrent is how many shards a Server receives at once when
	// Server.MaxConcurrent is 0. Each costs a store.Writer (8 MiB of
	// buffers), a read buffer of up to 8 MiB and a yamux window of up to
	// 16 MiB: four stay near 128 MiB, and a sharded add sends one shard at
	// a time, so four lets four adds run at once.
	DefaultMaxConcurrent = 4
	// DefaultIdleTimeout is how long a Server waits for the next bytes of
	// a transfer when Server.IdleTimeout is 0. A minute is far longer than
	// any honest pause (the sender writes as fast as its slowest receiver
	// reads), and bounds how long a silent member holds a slot.
	DefaultIdleTimeout = time.Minute

	// readBufSize is the receiver's read-ahead. Frame headers and small
	// blocks are read through it; the data of a larger block is mostly
	// read straight into the block buffer (bufio reads directly once what
	// is left of a read is larger than its buffer), saving a copy.
	readBufSize = 16 << 10
)

// Server receives shards on Protocol and stores them. Set its fields, then
// serve it with host.Handle(transfer.Protocol, srv.Handle); do not change
// the fields nor copy the Server afterwards. Its methods are safe for
// concurrent use.
type Server struct {
	// Store receives the shards, each under its root CID's string.
	Store *store.Store
	// Free returns the bytes this peer may still store. A transfer that
	// announces more than Free minus the shards being received is refused
	// before any data. nil means no room check (tests).
	Free func() int64
	// BeforeCommit, if set, is called once a shard has been received and
	// verified, before it is committed; an error refuses the shard and its
	// text is sent to the sender. The cluster uses it to protect the key
	// from its reconciler until the sharded pin records the shard. It runs
	// on the stream's goroutine, concurrently for different streams.
	BeforeCommit func(from peer.ID, info shard.Info) error
	// MaxConcurrent bounds the shards received at once (0:
	// DefaultMaxConcurrent); more are refused as busy.
	MaxConcurrent int
	// IdleTimeout bounds the wait for each read and write of a transfer
	// (0: DefaultIdleTimeout).
	IdleTimeout time.Duration
	// Logf, if set, is told of every refused or failed transfer.
	Logf func(format string, args ...any)

	mu       sync.Mutex
	active   int   // transfers that passed the room check and run
	reserved int64 // the announced sizes of those transfers
}

// Handle serves one stream of Protocol. libp2p calls it on the stream's own
// goroutine; it returns once the shard is stored and confirmed, or refused,
// or the stream broke.
func (s *Server) Handle(st network.Stream) {
	from := st.Conn().RemotePeer()
	rw := &IdleStream{S: st, D: s.idleTimeout()}
	if err := s.serve(rw, rw, from); err != nil && s.Logf != nil {
		s.Logf("receive shard from %s: %v", from, err)
	}
	// Close, not Reset: the answer written last must reach the sender.
	_ = st.Close()
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultIdleTimeout
}

// IdleStream renews S's read deadline before each read and its write
// deadline before each write, so that a transfer may take long but never
// stall for longer than D. Time spent between calls does not count. The
// cluster's fetch and read protocols use it too.
type IdleStream struct {
	S network.Stream
	D time.Duration
}

func (d *IdleStream) Read(p []byte) (int, error) {
	_ = d.S.SetReadDeadline(time.Now().Add(d.D))
	return d.S.Read(p)
}

func (d *IdleStream) Write(p []byte) (int, error) {
	_ = d.S.SetWriteDeadline(time.Now().Add(d.D))
	return d.S.Write(p)
}

// serve runs one transfer: header, room check, blocks, end, answer. It
// answers every failure it can; the error it returns is for the log.
func (s *Server) serve(r io.Reader, w io.Writer, from peer.ID) error {
	fail := func(err error) error {
		_, _ = w.Write(appendAnswer(nil, statusFailed, err.Error()))
		return err
	}
	fr := &frameReader{br: bufio.NewReaderSize(r, readBufSize)}
	v, err := fr.br.ReadByte()
	if err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	if v != version {
		return fail(fmt.Errorf("transfer version %d is not supported (this peer speaks %d)", v, version))
	}
	maxSize, err := fr.uvarint("announced shard size", math.MaxInt64)
	if err != nil {
		return fail(err)
	}
	release, err := s.reserve(int64(maxSize))
	if err != nil {
		return fail(err)
	}
	if _, err := w.Write(appendAnswer(nil, statusOK, "")); err != nil {
		release()
		return fmt.Errorf("accept shard: %w", err)
	}
	info, err := s.receive(fr, int64(maxSize), from)
	// Given back before the outcome is answered: a sender that sends its
	// next shard on hearing it finds the slot free.
	release()
	if err != nil {
		return fail(err)
	}
	if _, err := w.Write(appendAnswer(nil, statusOK, "")); err != nil {
		// The shard is stored; the sender will count this peer as failed
		// and the reconciler deletes the shard if no pin names it.
		return fmt.Errorf("confirm shard %s: %w", info.CID, err)
	}
	return nil
}

// Reserved returns the bytes announced by the transfers being received:
// room a peer should not offer to anyone else meanwhile.
func (s *Server) Reserved() int64 {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reserved
}

// Hold counts size bytes as reserved, as a transfer being received is,
// until release is called (once or more): the room of a shard this peer
// writes to its own store as an ingesting peer, so that its free space,
// which allocation compares with that of peers receiving the same shard,
// is as small as theirs. It takes no slot and checks no room: the shard
// was sized to fit.
func (s *Server) Hold(size int64) (release func()) {
	s.mu.Lock()
	s.reserved += size
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.reserved -= size
			s.mu.Unlock()
		})
	}
}

// reserve admits a transfer of up to size bytes if there is a free slot
// and room for it beside the transfers running; release gives both back.
func (s *Server) reserve(size int64) (release func(), err error) {
	limit := s.MaxConcurrent
	if limit <= 0 {
		limit = DefaultMaxConcurrent
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active >= limit {
		return nil, fmt.Errorf("busy: already receiving %d shards", s.active)
	}
	if s.Free != nil {
		if free := s.Free() - s.reserved; free < size {
			return nil, fmt.Errorf("no room: %s free, the shard needs up to %s", fmtSize(max(free, 0)), fmtSize(size))
		}
	}
	s.active++
	s.reserved += size
	return func() {
		s.mu.Lock()
		s.active--
		s.reserved -= size
		s.mu.Unlock()
	}, nil
}

// receive reads the blocks and the end frame into a new store shard, checks
// them and commits the shard. On error the shard is aborted.
func (s *Server) receive(fr *frameReader, maxSize int64, from peer.ID) (_ shard.Info, err error) {
	w, err := s.Store.Create(context.Background())
	if err != nil {
		return shard.Info{}, err
	}
	defer func() {
		if err != nil {
			_ = w.Abort()
		}
	}()
	var (
		size   int64
		blocks int
		sum    = newCIDDigest()
	)
	addSize := func(cl, dl int) error {
		size += sectionCost(cl, dl)
		if size > maxSize {
			return fmt.Errorf("the shard exceeds the %d bytes announced", maxSize)
		}
		return nil
	}
	for {
		c, err := fr.cid()
		if err != nil {
			return shard.Info{}, err
		}
		if !c.Defined() {
			break // end frame
		}
		dl, err := fr.uvarint("block length", maxBlockLen)
		if err != nil {
			return shard.Info{}, err
		}
		if err := addSize(c.ByteLen(), int(dl)); err != nil {
			return shard.Info{}, err
		}
		data, err := fr.data(int(dl))
		if err != nil {
			return shard.Info{}, err
		}
		if err := checkBlock(c, data); err != nil {
			return shard.Info{}, err
		}
		if err := w.Put(dag.Block{CID: c, Data: data}); err != nil {
			return shard.Info{}, fmt.Errorf("store: %w", err)
		}
		sum.add(c)
		blocks++
	}

	info, nodes, err := readEnd(fr, blocks, addSize)
	if err != nil {
		return shard.Info{}, err
	}
	if info.Blocks != blocks {
		return shard.Info{}, fmt.Errorf("the shard's info counts %d blocks, %d were received", info.Blocks, blocks)
	}
	if info.Size != size {
		return shard.Info{}, fmt.Errorf("the shard's info says %d bytes, %d were received", info.Size, size)
	}
	if err := checkList(info.CID, nodes, blocks, sum.sum()); err != nil {
		return shard.Info{}, err
	}
	if s.BeforeCommit != nil {
		if err := s.BeforeCommit(from, info); err != nil {
			return shard.Info{}, err
		}
	}
	// Every node, duplicates included (identical, checkList made sure),
	// as sent: the sender's own copy stores them so, and two copies of a
	// shard in one store must be the same file (Commit's ErrExists).
	for _, n := range nodes {
		if err := w.Put(n); err != nil {
			return shard.Info{}, fmt.Errorf("store: %w", err)
		}
	}
	// An identical shard already stored commits fine; ErrExists means the
	// key holds other content, which the caller must sort out.
	if _, err := w.Commit(context.Background(), info.CID.String(), info.CID); err != nil {
		return shard.Info{}, fmt.Errorf("store: %w", err)
	}
	return info, nil
}

// readEnd reads the rest of the end frame: the shard's info and its list
// nodes, within the limits a shard of blocks blocks allows.
func readEnd(fr *frameReader, blocks int, addSize func(cl, dl int) error) (shard.Info, []dag.Block, error) {
	var info shard.Info
	idx, err := fr.uvarint("shard index", math.MaxInt32)
	if err != nil {
		return info, nil, err
	}
	info.Index = int(idx)
	if info.CID, err = fr.cid(); err != nil {
		return info, nil, err
	}
	if !info.CID.Defined() {
		return info, nil, errors.New("the end frame has no root CID")
	}
	sz, err := fr.uvarint("shard size", math.MaxInt64)
	if err != nil {
		return info, nil, err
	}
	info.Size = int64(sz)
	nb, err := fr.uvarint("block count", math.MaxInt32)
	if err != nil {
		return info, nil, err
	}
	info.Blocks = int(nb)
	if info.Offset, err = fr.uvarint("offset", math.MaxUint64); err != nil {
		return info, nil, err
	}
	if info.Length, err = fr.uvarint("length", math.MaxUint64); err != nil {
		return info, nil, err
	}
	// A shard's list grows with its blocks. A cluster-DAG (no blocks)
	// lists the file's shards, which this stream does not carry: its
	// bounds are fixed ones. Bounding it by blocks, as before, refused
	// the cluster-DAG of any file of more than ~100 shards.
	maxNodes, budget := uint64(blocks+listSlack), int64(blocks+listSlack)*listBytesPerBlock
	if blocks == 0 {
		maxNodes, budget = clusterListNodes, clusterListBytes
	}
	limit := budget
	nn, err := fr.uvarint("number of list nodes", maxNodes)
	if err != nil {
		return info, nil, err
	}
	nodes := make([]dag.Block, 0, nn)
	for range nn {
		c, err := fr.cid()
		if err != nil {
			return info, nil, err
		}
		if !c.Defined() {
			return info, nil, errors.New("a list node has an empty CID")
		}
		dl, err := fr.uvarint("list node length", maxNodeLen)
		if err != nil {
			return info, nil, err
		}
		if budget -= int64(dl); budget < 0 {
			return info, nil, fmt.Errorf("the list nodes take more than %d bytes for %d blocks", limit, blocks)
		}
		if err := addSize(c.ByteLen(), int(dl)); err != nil {
			return info, nil, err
		}
		data := make([]byte, dl)
		if _, err := io.ReadFull(fr.br, data); err != nil {
			return info, nil, fmt.Errorf("read list node: %w", unexpectedEOF(err))
		}
		nodes = append(nodes, dag.Block{CID: c, Data: data})
	}
	if len(nodes) == 0 || !nodes[len(nodes)-1].CID.Equals(info.CID) {
		return info, nil, fmt.Errorf("the list nodes do not end with the root %s", info.CID)
	}
	return info, nodes, nil
}

// checkList checks that the list tree under root, made of exactly nodes,
// names blocks blocks whose CID digest is want: the blocks received, in
// order.
//
// On success every node hashes to its CID: the walk hashes the first copy
// of each (shard.ReadList), every node sent is walked, and every further
// copy is the first's bytes. With the data blocks, each hashed as it
// arrives, that makes every section of the shard match its CID, which is
// what store.Verify checks besides the file's structure (the Writer's).
func checkList(root cid.Cid, nodes []dag.Block, blocks int, want [sha256.Size]byte) error {
	type node struct {
		data         []byte
		sent, walked int
	}
	byKey := make(map[string]*node, len(nodes))
	for _, n := range nodes {
		k := n.CID.KeyString()
		switch m := byKey[k]; {
		case m == nil:
			byKey[k] = &node{data: n.Data, sent: 1}
		case !bytes.Equal(m.data, n.Data):
			// The walk reads one copy: another would be stored unhashed.
			return fmt.Errorf("shard list: node %s was sent twice with different bytes", n.CID)
		default:
			m.sent++
		}
	}
	// A shard with no blocks is a file's cluster-DAG: its list nodes are
	// the whole content, a tree of kind "cluster" naming shard roots that
	// live elsewhere.
	kind := shard.KindShard
	if blocks == 0 {
		kind = shard.KindCluster
	}
	items, err := shard.ReadList(root, kind, func(c cid.Cid) ([]byte, error) {
		n := byKey[c.KeyString()]
		if n == nil {
			return nil, errors.New("not among the list nodes sent")
		}
		// A node may appear several times in a tree (identical runs of
		// blocks), but only as often as it was sent: this also bounds
		// the walk.
		if n.walked++; n.walked > n.sent {
			return nil, errors.New("named more often than it was sent")
		}
		return n.data, nil
	})
	if err != nil {
		return fmt.Errorf("shard list: %w", err)
	}
	for k, n := range byKey {
		if n.walked != n.sent {
			c, _ := cid.Cast([]byte(k))
			return fmt.Errorf("shard list: node %s was sent but is not in the tree under %s", c, root)
		}
	}
	if kind == shard.KindCluster {
		return nil
	}
	if len(items) != blocks {
		return fmt.Errorf("the shard list names %d blocks, %d were received", len(items), blocks)
	}
	d := newCIDDigest()
	for _, c := range items {
		d.add(c)
	}
	if d.sum() != want {
		return errors.New("the shard list does not name the blocks received, in their order")
	}
	return nil
}

// cidDigest hashes a sequence of CIDs, so that the receiver compares the
// blocks it received with the list without keeping their CIDs.
type cidDigest struct{ h hash.Hash }

func newCIDDigest() cidDigest { return cidDigest{h: sha256.New()} }

func (d cidDigest) add(c cid.Cid) {
	var l [binary.MaxVarintLen64]byte
	d.h.Write(l[:binary.PutUvarint(l[:], uint64(c.ByteLen()))])
	_, _ = io.WriteString(d.h, c.KeyString())
}

func (d cidDigest) sum() (s [sha256.Size]byte) {
	d.h.Sum(s[:0])
	return s
}
