package consensus

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-project/shoal/p2p"
)

// CommitProtocol carries requests that only the leader can serve (commit
// an op, add or remove a peer), forwarded by followers, and address
// look-ups any peer answers. It is gated: members and admitted peers only.
//
// One request and one response per stream, each a frame (uvarint length,
// then the payload):
//
//	request  = version(1 byte, =1) kind(1 byte) body
//	  commit      body = an encoded Op
//	  add peer    body = id(bytes) count(uvarint) addr(bytes)*   addrs the forwarder knows
//	  remove peer body = id(bytes)
//	  addrs       body = count(uvarint) id(bytes)*
//	  read index  body = empty                                   leader only (read.go)
//	response = code(1 byte) message(bytes) body                  body only for addrs:
//	                                                             count(uvarint) (id(bytes) count addr(bytes)*)*
//	                                                             read index: index(uvarint)
const CommitProtocol protocol.ID = "/shoal/commit/1"

const rpcVersion = 1

type reqKind byte

const (
	reqCommit     reqKind = 1
	reqAddPeer    reqKind = 2
	reqRemovePeer reqKind = 3
	reqAddrs      reqKind = 4
	reqReadIndex  reqKind = 5
)

// Response codes: each carries one sentinel error across the wire.
const (
	codeOK = iota
	codeNotLeader
	codeInvalidOp
	codeNotPinned
	codeOutcomeUnknown
	codeUnknownPeer
	codeClosed
	codeFailed
	codeForbidden
)

var codeErrors = []struct {
	code byte
	err  error
}{
	{codeNotLeader, ErrNotLeader},
	{codeInvalidOp, ErrInvalidOp},
	{codeNotPinned, ErrNotPinned},
	{codeOutcomeUnknown, ErrOutcomeUnknown},
	{codeUnknownPeer, ErrUnknownPeer},
	{codeClosed, ErrClosed},
	{codeForbidden, ErrForbidden},
}

func codeOf(err error) byte {
	if err == nil {
		return codeOK
	}
	for _, ce := range codeErrors {
		if errors.Is(err, ce.err) {
			return ce.code
		}
	}
	return codeFailed
}

// remoteError is an error the leader returned: its text is the leader's
// sentence, and errors.Is matches the sentinel its code stands for.
type remoteError struct {
	peer peer.ID
	msg  string
	err  error // sentinel, or nil for codeFailed
}

func (e *remoteError) Error() string { return fmt.Sprintf("peer %s: %s", e.peer, e.msg) }
func (e *remoteError) Unwrap() error { return e.err }

func errorOf(from peer.ID, code byte, msg string) error {
	if code == codeOK {
		return nil
	}
	for _, ce := range codeErrors {
		if ce.code == code {
			return &remoteError{peer: from, msg: msg, err: ce.err}
		}
	}
	return &remoteError{peer: from, msg: msg}
}

// errUnreachable marks a forward that failed before the request could
// have reached the leader: retrying it cannot apply an op twice.
var errUnreachable = errors.New("leader unreachable")

const (
	maxRequest  = 1 << 20
	maxResponse = 4 << 20
	maxMessage  = 1024
)

// call sends one request to id and returns the response body, or the
// error the response carries.
func (c *Consensus) call(ctx context.Context, id peer.ID, kind reqKind, body []byte) ([]byte, error) {
	// The server bounds its own work by WaitForLeaderTimeout; waiting
	// twice that means it is gone (a frozen process answers nothing).
	ctx, cancel := context.WithTimeout(ctx, 2*c.cfg.WaitForLeaderTimeout)
	defer cancel()
	s, err := c.host.NewStream(ctx, id, CommitProtocol)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	req := append([]byte{rpcVersion, byte(kind)}, body...)
	if err := p2p.WriteFrame(s, req); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("%w: send request: %w", errUnreachable, err)
	}
	_ = s.CloseWrite()
	resp, err := p2p.ReadFrame(bufio.NewReader(s), maxResponse)
	if err != nil {
		_ = s.Reset()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		// The request left: it may have been applied.
		return nil, fmt.Errorf("%w: no response from %s: %w", ErrOutcomeUnknown, id, err)
	}
	_ = s.Close()
	d := decoder{b: resp}
	code := d.byte()
	msg := string(d.field(maxMessage))
	if d.err != nil {
		return nil, fmt.Errorf("%w: malformed response from %s: %v", ErrOutcomeUnknown, id, d.err)
	}
	if err := errorOf(id, code, msg); err != nil {
		return nil, err
	}
	return d.b, nil
}

// serveRPC answers one request on the CommitProtocol.
func (c *Consensus) serveRPC(s network.Stream) {
	ctx, end, err := c.begin(context.Background())
	if err != nil {
		_ = s.Reset()
		return
	}
	defer end()
	// The forwarder bounds its wait by its own context; this bounds ours.
	ctx, cancel := context.WithTimeout(ctx, c.cfg.WaitForLeaderTimeout)
	defer cancel()
	_ = s.SetReadDeadline(time.Now().Add(c.cfg.WaitForLeaderTimeout))
	req, err := p2p.ReadFrame(bufio.NewReader(s), maxRequest)
	if err != nil || len(req) < 2 {
		_ = s.Reset()
		return
	}
	from := s.Conn().RemotePeer()
	var body []byte
	if req[0] != rpcVersion {
		err = fmt.Errorf("request version %d, this peer speaks %d: %w", req[0], rpcVersion, ErrInvalidOp)
	} else {
		body, err = c.dispatch(ctx, from, reqKind(req[1]), req[2:])
	}
	resp := []byte{codeOf(err)}
	msg := ""
	if err != nil {
		msg = err.Error()
		if len(msg) > maxMessage {
			msg = msg[:maxMessage]
		}
	}
	resp = appendField(resp, []byte(msg))
	resp = append(resp, body...)
	_ = s.SetWriteDeadline(time.Now().Add(c.cfg.WaitForLeaderTimeout))
	if err := p2p.WriteFrame(s, resp); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

func (c *Consensus) dispatch(ctx context.Context, from peer.ID, kind reqKind, body []byte) ([]byte, error) {
	d := decoder{b: body}
	switch kind {
	case reqCommit:
		op, err := DecodeOp(body)
		if err != nil {
			return nil, err
		}
		// DecodeOp leaves the CID policy to new ops: this is one.
		if err := op.checkCIDs(); err != nil {
			return nil, fmt.Errorf("commit from %s: %w", from, err)
		}
		if err := c.checkForwarded(from, op); err != nil {
			return nil, err
		}
		if err := c.applyLocal(ctx, body); err != nil {
			return nil, fmt.Errorf("commit %s from %s: %w", op, from, err)
		}
		return nil, nil
	case reqAddPeer:
		id := d.peerIDField()
		addrs := d.addrs()
		if d.err != nil || len(d.b) != 0 {
			return nil, fmt.Errorf("add peer request from %s: malformed: %w", from, ErrInvalidOp)
		}
		c.host.AddAddrs(id, addrs)
		return nil, c.addPeerLocal(ctx, id)
	case reqRemovePeer:
		id := d.peerIDField()
		if d.err != nil || len(d.b) != 0 {
			return nil, fmt.Errorf("remove peer request from %s: malformed: %w", from, ErrInvalidOp)
		}
		return nil, c.removePeerLocal(ctx, id)
	case reqAddrs:
		n := d.uvarint()
		if d.err != nil || n > maxAddrLookups {
			return nil, fmt.Errorf("address request from %s: malformed: %w", from, ErrInvalidOp)
		}
		var out []byte
		out = binary.AppendUvarint(out, n)
		for range n {
			id := d.peerIDField()
			if d.err != nil {
				return nil, fmt.Errorf("address request from %s: malformed: %w", from, ErrInvalidOp)
			}
			out = appendField(out, []byte(id))
			out = appendAddrs(out, c.host.PeerAddrs(id))
		}
		return out, nil
	case reqReadIndex:
		if len(body) != 0 {
			return nil, fmt.Errorf("read index request from %s: malformed: %w", from, ErrInvalidOp)
		}
		return c.serveReadIndex(ctx, from)
	default:
		return nil, fmt.Errorf("request kind %d from %s: %w", kind, from, ErrInvalidOp)
	}
}

const (
	maxAddrLookups = 256
	maxAddrsPerID  = 32
)

func appendAddrs(b []byte, addrs []ma.Multiaddr) []byte {
	addrs = addrs[:min(len(addrs), maxAddrsPerID)]
	b = binary.AppendUvarint(b, uint64(len(addrs)))
	for _, a := range addrs {
		b = appendField(b, a.Bytes())
	}
	return b
}

func (d *decoder) addrs() []ma.Multiaddr {
	n := d.uvarint()
	if d.err == nil && n > maxAddrsPerID {
		d.fail(fmt.Errorf("%d addresses exceed %d", n, maxAddrsPerID))
	}
	if d.err != nil {
		return nil
	}
	out := make([]ma.Multiaddr, 0, n)
	for range n {
		f := d.field(1024)
		if d.err != nil {
			return nil
		}
		a, err := ma.NewMultiaddrBytes(f)
		if err != nil {
			d.fail(err)
			return nil
		}
		out = append(out, a)
	}
	return out
}
