package consensus

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-project/shoal/p2p"
)

// CommitProtocol is the consensus RPC a peer decodes from another: a
// forwarded op, a membership change, an address look-up or a read index.
// Raft's own RPCs on RaftProtocol are hashicorp/raft's NetworkTransport's
// to decode; streamLayer only carries their bytes.

// memStream is an in-memory network.Stream for serveRPC: reads come from
// r, writes go to w. Any method serveRPC does not use panics (the embedded
// nil interface).
type memStream struct {
	network.Stream
	r      io.Reader
	w      bytes.Buffer
	from   peer.ID
	reset  bool
	closed bool
}

func (s *memStream) Read(p []byte) (int, error)       { return s.r.Read(p) }
func (s *memStream) Write(p []byte) (int, error)      { return s.w.Write(p) }
func (s *memStream) SetReadDeadline(time.Time) error  { return nil }
func (s *memStream) SetWriteDeadline(time.Time) error { return nil }
func (s *memStream) Reset() error                     { s.reset = true; return nil }
func (s *memStream) Close() error                     { s.closed = true; return nil }
func (s *memStream) Conn() network.Conn               { return memConn{from: s.from} }

type memConn struct {
	network.Conn
	from peer.ID
}

func (c memConn) RemotePeer() peer.ID { return c.from }

type allMembers struct{}

func (allMembers) IsMember(peer.ID) bool { return true }

func frameBytes(payload []byte) []byte {
	var b bytes.Buffer
	_ = p2p.WriteFrame(&b, payload)
	return b.Bytes()
}

func rpcRequest(k reqKind, body []byte) []byte {
	return frameBytes(append([]byte{rpcVersion, byte(k)}, body...))
}

// rpcSeeds are requests of every kind, as the peers' own code encodes them,
// and a few hostile ones.
func rpcSeeds(t testing.TB) [][]byte {
	p1, p2 := fixedPeer(t, 1), fixedPeer(t, 2)
	addrs := []ma.Multiaddr{ma.StringCast("/ip4/10.0.0.1/tcp/9096"), ma.StringCast("/dns4/peer.example/tcp/9096")}
	var seeds [][]byte
	for _, name := range []string{"op-pin-plain-everywhere", "op-pin-allocated", "op-add-begin", "op-removed"} {
		b, err := goldenOps(t)[name].MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, rpcRequest(reqCommit, b))
	}
	lookup := binary.AppendUvarint(nil, 2)
	lookup = appendField(appendField(lookup, []byte(p1)), []byte(p2))
	seeds = append(seeds,
		rpcRequest(reqAddPeer, appendAddrs(appendField(nil, []byte(p1)), addrs)),
		rpcRequest(reqRemovePeer, appendField(nil, []byte(p2))),
		rpcRequest(reqAddrs, lookup),
		rpcRequest(reqReadIndex, nil),
		rpcRequest(reqAddrs, binary.AppendUvarint(nil, maxAddrLookups+1)),
		rpcRequest(reqAddPeer, append(appendField(nil, []byte(p1)), 0xff, 0xff, 0xff, 0xff, 0x0f)),
		rpcRequest(reqKind(77), nil),
		frameBytes([]byte{2, byte(reqCommit)}),
		frameBytes([]byte{rpcVersion}),
		[]byte{0xff, 0xff, 0xff, 0xff, 0x0f},
		[]byte{},
	)
	return seeds
}

// FuzzServeRPC feeds arbitrary requests to the CommitProtocol server of a
// real Consensus that leads nothing (it was never bootstrapped), so every
// request decodes fully and is then refused by Raft, with no state to
// reset between inputs. The server answers an unreadable request with a
// reset and anything else with one well-formed response: a known code, a
// message exactly when it failed, and a body only for an address look-up,
// one entry per peer asked for. No request commits an op or changes the
// membership.
func FuzzServeRPC(f *testing.F) {
	for _, s := range rpcSeeds(f) {
		f.Add(s)
	}
	tp := newTestPeer(f, "fuzz", newSecretBytes(f), nil)
	c := tp.c
	from := fixedPeer(f, 9)
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &memStream{r: bytes.NewReader(in), from: from}
		c.serveRPC(s)

		req, rerr := p2p.ReadFrame(bufio.NewReader(bytes.NewReader(in)), maxRequest)
		if rerr != nil || len(req) < 2 {
			if !s.reset || s.w.Len() != 0 {
				t.Fatalf("unreadable request %x: reset %v, answered %x", in, s.reset, s.w.Bytes())
			}
			return
		}
		if s.reset || !s.closed {
			t.Fatalf("request %x: reset %v, closed %v", req, s.reset, s.closed)
		}
		resp, err := p2p.ReadFrame(bufio.NewReader(&s.w), maxResponse)
		if err != nil || s.w.Len() != 0 {
			t.Fatalf("request %x: response is not one frame: %v", req, err)
		}
		d := decoder{b: resp}
		code := d.byte()
		msg := string(d.field(maxMessage))
		switch {
		case d.err != nil:
			t.Fatalf("request %x: malformed response %x: %v", req, resp, d.err)
		case code > codeForbidden:
			t.Fatalf("request %x: unknown code %d", req, code)
		case (code == codeOK) != (msg == ""):
			t.Fatalf("request %x: code %d with message %q", req, code, msg)
		case code != codeOK && len(d.b) != 0:
			t.Fatalf("request %x: a failure with a body %x", req, d.b)
		}
		if code == codeOK {
			if req[0] != rpcVersion || reqKind(req[1]) != reqAddrs {
				t.Fatalf("request %x succeeded on a peer that leads nothing", req)
			}
			q := decoder{b: req[2:]}
			n := q.uvarint()
			if got := d.uvarint(); got != n {
				t.Fatalf("asked for %d peers' addresses, answered %d", n, got)
			}
			for range n {
				asked, got := q.peerIDField(), d.peerIDField()
				addrs := d.addrs()
				if d.err != nil || got != asked || len(addrs) > maxAddrsPerID {
					t.Fatalf("address answer for %s: %s, %d addresses, %v", asked, got, len(addrs), d.err)
				}
			}
			if len(d.b) != 0 {
				t.Fatalf("%d bytes after the address answer", len(d.b))
			}
		}
		if c.state.Applied() != 0 {
			t.Fatalf("request %x applied an op", req)
		}
		if conf, _, err := c.configuration(); err != nil || len(conf.Servers) != 0 {
			t.Fatalf("request %x changed the membership: %v, %v", req, conf.Servers, err)
		}
	})
}

// FuzzCall feeds arbitrary responses, from a leader on a real libp2p
// stream, to the forwarding side of CommitProtocol (call) and then to the
// address answer's decoder. call returns the body of exactly the
// responses that frame a code OK and a message; a response it cannot read
// is an ErrOutcomeUnknown (the request may have been applied), a refusal
// an error matching its code's sentinel, with the leader's message.
func FuzzCall(f *testing.F) {
	p1 := fixedPeer(f, 1)
	okAddrs := appendAddrs(appendField(binary.AppendUvarint(nil, 1), []byte(p1)),
		[]ma.Multiaddr{ma.StringCast("/ip4/10.0.0.1/tcp/9096")})
	f.Add(frameBytes(append(appendField([]byte{codeOK}, nil), okAddrs...)))
	f.Add(frameBytes(appendField([]byte{codeNotLeader}, []byte("peer X is not the leader"))))
	f.Add(frameBytes(appendField([]byte{codeForbidden}, []byte("forbidden"))))
	f.Add(frameBytes(appendField([]byte{200}, []byte("a code this peer does not know"))))
	f.Add(frameBytes(append(appendField([]byte{codeOK}, nil), binary.AppendUvarint(nil, 42)...)))
	f.Add(frameBytes([]byte{codeOK, 0xff, 0xff, 0xff, 0xff, 0x0f}))
	f.Add(frameBytes(nil))
	f.Add([]byte{9, codeOK})
	f.Add([]byte{})

	tp := newTestPeer(f, "fuzz", newSecretBytes(f), nil)
	c := tp.c
	leader := fakeLeader(f)
	var answer atomic.Pointer[[]byte]
	leader.Handle(CommitProtocol, func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := p2p.ReadFrame(bufio.NewReader(s), maxRequest); err != nil {
			_ = s.Reset()
			return
		}
		_, _ = s.Write(*answer.Load())
	})
	info, err := peer.AddrInfoFromP2pAddr(leader.Addrs()[0])
	if err != nil {
		f.Fatal(err)
	}
	c.host.AddAddrs(info.ID, info.Addrs)
	lookup := appendField(binary.AppendUvarint(nil, 1), []byte(p1))

	f.Fuzz(func(t *testing.T, in []byte) {
		answer.Store(&in)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		body, err := c.call(ctx, leader.ID(), reqAddrs, lookup)
		if ctx.Err() != nil {
			t.Fatalf("call hung on %x", in)
		}

		resp, ferr := p2p.ReadFrame(bufio.NewReader(bytes.NewReader(in)), maxResponse)
		d := decoder{b: resp}
		code := d.byte()
		msg := string(d.field(maxMessage))
		var re *remoteError
		switch {
		case errors.Is(err, errUnreachable):
			t.Fatalf("the leader was unreachable: %v", err)
		case ferr != nil || d.err != nil:
			if !errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("response %x: %v, want ErrOutcomeUnknown", in, err)
			}
			return
		case code != codeOK:
			if !errors.As(err, &re) || re.msg != msg || re.peer != leader.ID() {
				t.Fatalf("refusal %x: %v", in, err)
			}
			for _, ce := range codeErrors {
				if ce.code == code && !errors.Is(err, ce.err) {
					t.Fatalf("refusal with code %d: %v does not match %v", code, err, ce.err)
				}
			}
			return
		case err != nil || !bytes.Equal(body, d.b):
			t.Fatalf("response %x: body %x, %v; want %x", in, body, err, d.b)
		}

		// What fetchMissingAddrs makes of the body: entries until the
		// first malformed one, each within the limits.
		a := decoder{b: body}
		n := a.uvarint()
		for i := uint64(0); i < n && a.err == nil; i++ {
			id := a.peerIDField()
			addrs := a.addrs()
			if a.err == nil && (id.Validate() != nil || len(addrs) > maxAddrsPerID) {
				t.Fatalf("address answer entry %s with %d addresses", id, len(addrs))
			}
		}
	})
}

// FuzzAddrs: the address list decoder either fails or returns addresses
// that appendAddrs encodes back into an equal list.
func FuzzAddrs(f *testing.F) {
	f.Add(appendAddrs(nil, []ma.Multiaddr{ma.StringCast("/ip4/10.0.0.1/tcp/9096"), ma.StringCast("/ip6/::1/tcp/1")}))
	f.Add(appendAddrs(nil, nil))
	f.Add([]byte{1, 3, 4, 127, 0})
	f.Add([]byte{maxAddrsPerID + 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		d := decoder{b: in}
		addrs := d.addrs()
		if d.err != nil {
			if d.err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		again := decoder{b: appendAddrs(nil, addrs)}
		got := again.addrs()
		if again.err != nil || len(got) != len(addrs) || len(again.b) != 0 {
			t.Fatalf("%v re-encoded decodes as %v, %v", addrs, got, again.err)
		}
		for i := range got {
			if !bytes.Equal(got[i].Bytes(), addrs[i].Bytes()) {
				t.Fatalf("address %s re-encoded decodes as %s", addrs[i], got[i])
			}
		}
	})
}

func newSecretBytes(t testing.TB) []byte {
	t.Helper()
	s := make([]byte, p2p.SecretSize)
	if _, err := rand.Read(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// fakeLeader is a bare host that lets everyone open its protocols.
func fakeLeader(t testing.TB) *p2p.Host {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hc := p2p.DefaultConfig()
	hc.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	hc.PrivKey = key
	hc.Secret = newSecretBytes(t)
	h, err := p2p.New(hc, allMembers{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}
