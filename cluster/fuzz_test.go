package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/cluster/clustertest"
	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/consensus"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/p2p"
)

// The fuzz targets of the protocols peers speak to each other. Each
// target starts one real peer (a one-peer cluster holding a plain pin and
// a sharded one) and, for the client sides, one bare host that answers
// every stream with the current input: the servers are fed through an
// in-memory stream, the clients through real libp2p streams.

// fuzzEnv is one target's peer, its fake holder and what the peer stores.
type fuzzEnv struct {
	p      *Peer
	holder *p2p.Host
	answer atomic.Pointer[[]byte] // what the holder sends on every stream

	plain     cid.Cid     // a plain pin's root
	plainDAG  []dag.Block // its blocks in walkDAG's order
	sh        consensus.Shard
	shardData []byte // the file bytes sh holds
	leaf      dag.Block
}

// fuzzProto is a JSON RPC the fake holder answers, for the client side of
// call.
const fuzzProto protocol.ID = "/shoal/fuzz-json/1"

func newFuzzEnv(f *testing.F) *fuzzEnv {
	f.Helper()
	dir := filepath.Join(f.TempDir(), "peer")
	cfg := clustertest.Config(0)
	cfg.PeerName = "fuzz"
	cfg.Pinning.ReplicationMin, cfg.Pinning.ReplicationMax = 1, 1
	if _, err := config.Init(dir, cfg); err != nil {
		f.Fatal(err)
	}
	p, err := Start(context.Background(), dir, Options{Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { p.Close() })
	e := &fuzzEnv{p: p}

	ctx := context.Background()
	b := backend{p}
	res, err := b.Add(ctx, bytes.NewReader(seeded("fuzz-plain", 6000)), api.AddParams{Name: "plain", Chunker: "size-4096"})
	if err != nil {
		f.Fatal(err)
	}
	e.plain = cid.MustParse(res.CID)
	if err := walkDAG(e.plain, p.store.Get, func(b dag.Block) error {
		e.plainDAG = append(e.plainDAG, dag.Block{CID: b.CID, Data: bytes.Clone(b.Data)})
		return nil
	}); err != nil {
		f.Fatal(err)
	}
	e.leaf = e.plainDAG[len(e.plainDAG)-1]
	data := seeded("fuzz-sharded", 9000)
	res, err = b.Add(ctx, bytes.NewReader(data), api.AddParams{Name: "sharded", Chunker: "size-4096", Shard: true, ShardSize: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	pin, ok := p.cons.State().Get(cid.MustParse(res.CID))
	if !ok || len(pin.Shards) == 0 {
		f.Fatalf("sharded pin %s: %+v", res.CID, pin)
	}
	e.sh = pin.Shards[0]
	e.shardData = data[e.sh.Offset : e.sh.Offset+e.sh.Length]

	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	hc := p2p.DefaultConfig()
	hc.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	hc.PrivKey = key
	hc.Secret = bytes.Repeat([]byte{2}, p2p.SecretSize)
	e.holder, err = p2p.New(hc, allMembers{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = e.holder.Close() })
	for _, proto := range []protocol.ID{protoFetch, protoRead, fuzzProto} {
		e.holder.Handle(proto, e.serveAnswer)
	}
	info, err := peer.AddrInfoFromP2pAddr(e.holder.Addrs()[0])
	if err != nil {
		f.Fatal(err)
	}
	p.host.AddAddrs(info.ID, info.Addrs)
	return e
}

// serveAnswer reads the request (a line or a JSON value, both end in a
// newline) and sends the current answer.
func (e *fuzzEnv) serveAnswer(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := bufio.NewReader(io.LimitReader(s, 1<<20)).ReadString('\n'); err != nil {
		_ = s.Reset()
		return
	}
	if _, err := s.Write(*e.answer.Load()); err != nil {
		_ = s.Reset()
	}
}

type allMembers struct{}

func (allMembers) IsMember(peer.ID) bool { return true }

// memStream is an in-memory network.Stream for the servers: reads come
// from r, writes go to w. Any method the servers do not use panics (the
// embedded nil interface).
type memStream struct {
	network.Stream
	r      io.Reader
	w      bytes.Buffer
	from   peer.ID
	reset  atomic.Bool
	closed atomic.Bool
}

func (s *memStream) Read(p []byte) (int, error)       { return s.r.Read(p) }
func (s *memStream) Write(p []byte) (int, error)      { return s.w.Write(p) }
func (s *memStream) SetDeadline(time.Time) error      { return nil }
func (s *memStream) SetReadDeadline(time.Time) error  { return nil }
func (s *memStream) SetWriteDeadline(time.Time) error { return nil }
func (s *memStream) Reset() error                     { s.reset.Store(true); return nil }
func (s *memStream) Close() error                     { s.closed.Store(true); return nil }
func (s *memStream) Conn() network.Conn               { return memConn{from: s.from} }

type memConn struct {
	network.Conn
	from peer.ID
}

func (c memConn) RemotePeer() peer.ID { return c.from }

func frame(c cid.Cid, data []byte) []byte {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	_ = writeFrame(bw, c, data)
	_ = bw.Flush()
	return b.Bytes()
}

// cidFrame is a frame with CID bytes cb, whatever they are.
func cidFrame(cb, data []byte) []byte {
	b := append([]byte{byte(len(cb))}, cb...)
	return append(append(b, byte(len(data))), data...)
}

// FuzzReadFrame: readFrame, the block frame of /shoal/fetch/1 and
// /shoal/read/1, returns a frame within the limits that writeFrame
// encodes back into a frame it reads the same, or an error.
func FuzzReadFrame(f *testing.F) {
	data := []byte("a block")
	h, _ := mh.Sum(data, mh.SHA2_256, -1)
	c0, c1 := cid.NewCidV0(h), cid.NewCidV1(cid.Raw, h)
	f.Add(append(frame(c0, data), 0))
	f.Add(append(frame(c1, data), frame(c1, nil)...))
	f.Add(cidFrame([]byte{1, 0x55, 0, 0}, nil))
	f.Add([]byte{maxCIDLen + 1})
	f.Add(append(frame(c1, nil)[:1+c1.ByteLen()], 0xff, 0xff, 0xff, 0xff, 0x0f))
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		var buf []byte
		for {
			c, data, err := readFrame(br, buf)
			if err != nil {
				if err.Error() == "" {
					t.Fatal("an error without a message")
				}
				return
			}
			if !c.Defined() {
				if len(data) != 0 {
					t.Fatal("an end of run with data")
				}
				return
			}
			if c.ByteLen() > maxCIDLen || len(data) > maxBlockLen {
				t.Fatalf("frame %s of %d bytes beyond the limits", c, len(data))
			}
			c2, data2, err := readFrame(bufio.NewReader(bytes.NewReader(frame(c, data))), nil)
			if err != nil || !c2.Equals(c) || !bytes.Equal(data2, data) {
				t.Fatalf("frame %s re-encoded reads as %s, %v", c, c2, err)
			}
			buf = data
		}
	})
}

// requestSeeds are request lines for the servers: the CIDs the peer holds
// and a few it does not, in every form.
func (e *fuzzEnv) requestSeeds(f *testing.F, verbs ...string) {
	idh, _ := mh.Sum([]byte("inline"), mh.IDENTITY, -1)
	md5, _ := mh.Sum([]byte("weak"), mh.MD5, -1)
	for _, c := range []cid.Cid{e.plain, e.leaf.CID, e.sh.CID, cid.NewCidV1(cid.Raw, idh), cid.NewCidV1(cid.Raw, md5)} {
		for _, v := range verbs {
			f.Add([]byte(strings.TrimLeft(v+" "+c.String(), " ") + "\n"))
		}
	}
	f.Add([]byte(e.plain.String())) // no newline
	f.Add([]byte("\n"))
	f.Add([]byte("bafy not a cid\n"))
	f.Add(append(bytes.Repeat([]byte("Q"), 300), '\n'))
}

// serveFuzzed runs one stream of in through serve, checks that its slot
// came back, and returns the request line and a reader of the answer; ok
// is false when there is nothing more to check: a request without a
// newline must be reset unanswered, and a stream the server reset midway
// (a block it could not read or walk, which it logs) is what a client
// sees as a failure.
func serveFuzzed(t *testing.T, serve func(network.Stream), sl slots, from peer.ID, in []byte) (line string, br *bufio.Reader, ok bool) {
	t.Helper()
	s := &memStream{r: bytes.NewReader(in), from: from}
	serve(s)
	checkSlots(t, sl)
	line, err := bufio.NewReader(io.LimitReader(bytes.NewReader(in), 256)).ReadString('\n')
	if err != nil {
		if s.w.Len() != 0 || !s.reset.Load() {
			t.Fatalf("request %q without a newline: answered %q", in, s.w.Bytes())
		}
		return "", nil, false
	}
	if s.reset.Load() {
		return "", nil, false
	}
	return line, bufio.NewReader(&s.w), true
}

// checkSlots fails if a server kept a slot after its stream ended.
func checkSlots(t *testing.T, sl slots) {
	t.Helper()
	if n := len(sl.busy); n != 0 {
		t.Fatalf("%d %s slots still taken after the stream ended", n, sl.what)
	}
}

// checkRefusal reads the message line of a refusal: one line of text,
// nothing after it.
func checkRefusal(t *testing.T, br *bufio.Reader) {
	t.Helper()
	msg, err := br.ReadString('\n')
	if err != nil || strings.TrimSpace(msg) == "" || unread(br) != 0 {
		t.Fatalf("refusal %q, %v: not one line of text", msg, err)
	}
}

func unread(r io.Reader) int64 {
	n, _ := io.Copy(io.Discard, r)
	return n
}

// FuzzFetchServe feeds arbitrary request lines to the /shoal/fetch/1
// server of a real peer. It resets a stream without a request line and
// answers any other with a refusal line, or with the whole DAG of the root
// it names, each block hashing to its CID and announced by its parent
// (what Peer.fetch checks), then the end mark, or resets the stream when
// its own walk fails; its slot is given back.
func FuzzFetchServe(f *testing.F) {
	e := newFuzzEnv(f)
	e.requestSeeds(f, "")
	fs := newFetchServer(e.p)
	from := e.holder.ID()
	f.Fuzz(func(t *testing.T, in []byte) {
		line, br, ok := serveFuzzed(t, fs.serve, fs.slots, from, in)
		if !ok {
			return
		}
		st, err := br.ReadByte()
		switch {
		case err != nil:
			t.Fatalf("request %q: no answer", line)
		case st == fetchRefused:
			checkRefusal(t, br)
			return
		case st != fetchOK:
			t.Fatalf("request %q: status %d", line, st)
		}
		root, err := cid.Decode(trimNL(line))
		if err != nil {
			t.Fatalf("request %q served: %v", line, err)
		}
		v := newDAGVerifier(root)
		for {
			c, data, err := readFrame(br, nil)
			if err != nil {
				t.Fatalf("request %q: frame: %v", line, err)
			}
			if !c.Defined() {
				break
			}
			if err := v.check(c, data); err != nil {
				t.Fatalf("request %q: %v", line, err)
			}
		}
		if err := v.done(); err != nil || unread(br) != 0 {
			t.Fatalf("request %q: %v, or bytes after the end", line, err)
		}
	})
}

// FuzzReadServe feeds arbitrary request lines to the /shoal/read/1 server
// of a real peer. It answers with a refusal line, or for "block C" the one
// block C, or for "shard C" the list nodes, the end mark, the data blocks
// in order, the end mark and a status, every block hashing to its CID; its
// slot is given back.
func FuzzReadServe(f *testing.F) {
	e := newFuzzEnv(f)
	e.requestSeeds(f, "shard", "block", "frob")
	rs := newReadServer(e.p)
	from := e.holder.ID()
	f.Fuzz(func(t *testing.T, in []byte) {
		line, br, ok := serveFuzzed(t, rs.serve, rs.slots, from, in)
		if !ok {
			return
		}
		st, err := br.ReadByte()
		switch {
		case err != nil:
			t.Fatalf("request %q: no answer", line)
		case st == readRefused:
			checkRefusal(t, br)
			return
		case st != readOK:
			t.Fatalf("request %q: status %d", line, st)
		}
		what, arg, _ := strings.Cut(trimNL(line), " ")
		want, err := cid.Decode(arg)
		if err != nil {
			t.Fatalf("request %q served: %v", line, err)
		}
		run := func() int {
			n := 0
			for {
				c, data, err := readFrame(br, nil)
				if err != nil {
					t.Fatalf("request %q: frame: %v", line, err)
				}
				if !c.Defined() {
					return n
				}
				if err := dag.Verify(c, data); err != nil {
					t.Fatalf("request %q: block %s: %v", line, c, err)
				}
				n++
				if what == "block" {
					if !c.Equals(want) {
						t.Fatalf("asked for block %s, got %s", want, c)
					}
					return n
				}
			}
		}
		switch what {
		case "block":
			if run() != 1 {
				t.Fatalf("request %q: no block", line)
			}
		case "shard":
			if run() == 0 {
				t.Fatalf("request %q: no list node", line)
			}
			if n := run(); uint64(n) != e.sh.Blocks || !want.Equals(e.sh.CID) {
				t.Fatalf("request %q: %d blocks of shard %s, which has %d", line, n, want, e.sh.Blocks)
			}
			if st, err := br.ReadByte(); err != nil || st != readOK {
				t.Fatalf("request %q: the shard ends with status %d, %v", line, st, err)
			}
		default:
			t.Fatalf("request %q served", line)
		}
		if unread(br) != 0 {
			t.Fatalf("request %q: bytes after the answer", line)
		}
	})
}

// serverAnswer is what serve answers to the request line.
func (e *fuzzEnv) serverAnswer(t testing.TB, serve func(network.Stream), line string) []byte {
	s := &memStream{r: strings.NewReader(line + "\n"), from: e.holder.ID()}
	serve(s)
	if s.reset.Load() || s.w.Len() < 2 {
		t.Fatalf("the server refused %q: %q", line, s.w.Bytes())
	}
	return bytes.Clone(s.w.Bytes())
}

func fuzzCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(func() {
		if ctx.Err() != nil {
			t.Error("the client hung until the fuzz timeout")
		}
		cancel()
	})
	return ctx
}

// FuzzFetch feeds arbitrary holder answers, on a real stream, to
// Peer.fetch. Every block it hands on hashes to its CID, and a fetch that
// succeeds handed on every block of the DAG of the root asked for, once
// (parents before children, so not necessarily in the holder's order): a
// holder cannot substitute, add or leave out a block.
func FuzzFetch(f *testing.F) {
	e := newFuzzEnv(f)
	good := e.serverAnswer(f, newFetchServer(e.p).serve, e.plain.String())
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(append(bytes.Clone(good[:len(good)-1]), frame(e.leaf.CID, e.leaf.Data)...))
	swapped := append([]byte{fetchOK}, frame(e.plainDAG[0].CID, e.plainDAG[0].Data)...)
	for i := len(e.plainDAG) - 1; i > 0; i-- {
		swapped = append(swapped, frame(e.plainDAG[i].CID, e.plainDAG[i].Data)...)
	}
	f.Add(append(swapped, 0))
	f.Add(append([]byte{fetchOK}, 0))
	f.Add([]byte{fetchRefused, 'n', 'o', 't', ' ', 'h', 'e', 'r', 'e', '\n'})
	f.Add([]byte{fetchOK, maxCIDLen + 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		e.answer.Store(&in)
		var got []dag.Block
		err := e.p.fetch(fuzzCtx(t), e.holder.ID(), e.plain, func(b dag.Block) error {
			if err := dag.Verify(b.CID, b.Data); err != nil {
				t.Fatalf("fetch handed on block %s: %v", b.CID, err)
			}
			got = append(got, dag.Block{CID: b.CID, Data: bytes.Clone(b.Data)})
			return nil
		})
		if err != nil {
			checkMessage(t, err)
			return
		}
		if len(got) != len(e.plainDAG) {
			t.Fatalf("fetch succeeded with %d blocks, the DAG has %d", len(got), len(e.plainDAG))
		}
		want := map[string]bool{}
		for _, b := range e.plainDAG {
			want[b.CID.KeyString()] = true
		}
		for _, b := range got {
			if !want[b.CID.KeyString()] {
				t.Fatalf("fetch succeeded with block %s, which is not in the DAG or came twice", b.CID)
			}
			delete(want, b.CID.KeyString())
		}
	})
}

// FuzzReadRemote feeds arbitrary holder answers, on a real stream, to the
// readers of /shoal/read/1: openRemoteShard and copyShard (block false),
// or readBlock (block true). A shard read that succeeds wrote exactly the
// shard's bytes of the file; a block read that succeeds returned the
// block's bytes; the list nodes a copy keeps hash to their CIDs.
func FuzzReadRemote(f *testing.F) {
	e := newFuzzEnv(f)
	rs := newReadServer(e.p)
	shardAns := e.serverAnswer(f, rs.serve, "shard "+e.sh.CID.String())
	blockAns := e.serverAnswer(f, rs.serve, "block "+e.leaf.CID.String())
	f.Add(false, shardAns)
	f.Add(false, shardAns[:len(shardAns)-1])
	f.Add(false, append(shardAns[:len(shardAns)-1], append([]byte{readRefused}, "the holder failed\n"...)...))
	f.Add(false, append([]byte{readOK}, 0))
	f.Add(false, append([]byte{readOK}, frame(e.leaf.CID, e.leaf.Data)...))
	f.Add(true, blockAns)
	f.Add(true, blockAns[:len(blockAns)-1])
	f.Add(true, append([]byte{readOK}, frame(e.plain, e.leaf.Data)...))
	f.Add(true, append([]byte{readRefused}, "not here\n"...))
	f.Add(true, []byte{})
	f.Fuzz(func(t *testing.T, block bool, in []byte) {
		e.answer.Store(&in)
		ctx := fuzzCtx(t)
		if block {
			data, err := e.p.readBlock(ctx, e.holder.ID(), e.leaf.CID)
			if err == nil && !bytes.Equal(data, e.leaf.Data) {
				t.Fatalf("readBlock returned %d other bytes", len(data))
			}
			checkMessage(t, err)
			return
		}
		sc, err := e.p.openRemoteShard(ctx, e.holder.ID(), e.sh)
		if err != nil {
			checkMessage(t, err)
			return
		}
		defer sc.close()
		for _, l := range sc.lists {
			if err := dag.Verify(l.CID, l.Data); err != nil {
				t.Fatalf("list node %s kept: %v", l.CID, err)
			}
		}
		var out bytes.Buffer
		n, err := copyShard(sc, e.sh, e.sh.Offset, e.sh.Offset+e.sh.Length, &out)
		if n != uint64(out.Len()) {
			t.Fatalf("copyShard counts %d bytes, wrote %d", n, out.Len())
		}
		if !bytes.HasPrefix(e.shardData, out.Bytes()) {
			t.Fatalf("the shard's bytes read as %d other bytes", out.Len())
		}
		if err == nil && out.Len() != len(e.shardData) {
			t.Fatalf("copyShard succeeded with %d of %d bytes", out.Len(), len(e.shardData))
		}
		checkMessage(t, err)
	})
}

// checkMessage fails on an error whose message says nothing.
func checkMessage(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.TrimSpace(err.Error()) == "" {
		t.Fatalf("an error without a message: %#v", err)
	}
}
