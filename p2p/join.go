package p2p

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
)

// JoinProtocol is the join handshake, the one protocol a Host serves to
// peers that are neither members nor admitted.
const JoinProtocol protocol.ID = "/shoal/join/1"

// The join handshake, initiator I (the joining peer) and responder R (a
// cluster member). Every message is one frame: a uvarint length, then the
// payload. MAC(role) is HMAC-SHA256 keyed by the cluster secret over the
// length-prefixed fields (JoinProtocol, role, I's peer ID, R's peer ID,
// nonceI, nonceR); the peer IDs are the ones the security handshake (TLS or
// Noise) authenticated for this connection.
//
//	I -> R  hello:  version(1) nonceI(32) count(uvarint) addr(bytes)*   I's listen addrs
//	R -> I  chall:  nonceR(32) MAC("responder")
//	I -> R  proof:  MAC("initiator")
//	R -> I  verdict: status(1) reason(bytes) [count(uvarint) member*]    member = id(bytes) count addr(bytes)*
//	R -> I  result:  status(1) reason(bytes)                             only after verdict OK: the OnJoin hook's outcome
//
// I sends its proof before checking R's, so a wrong secret on either side
// is reported by R's verdict ("the cluster secret does not match"); I
// trusts nothing R says until R's MAC checks out. Fresh nonces on both
// sides make every MAC valid for one session only, the role label stops a
// MAC from being reflected back, and the peer IDs stop it from being
// relayed to or from another peer.
const (
	joinVersion   = 1
	nonceSize     = 32
	macSize       = sha256.Size
	maxHelloAddrs = 32
	maxMembers    = 512
	maxFrame      = 1 << 20
	maxReason     = 512

	statusOK       = 0
	statusMismatch = 1 // initiator's MAC is wrong
	statusRefused  = 2 // the OnJoin hook refused, or joins are not accepted
	statusBadHello = 3 // malformed hello or unknown version
)

// joinMAC is the proof of the cluster secret for one role in one session.
func joinMAC(secret []byte, role string, initiator, responder peer.ID, nonceI, nonceR []byte) []byte {
	m := hmac.New(sha256.New, secret)
	for _, f := range [][]byte{[]byte(JoinProtocol), []byte(role), []byte(initiator), []byte(responder), nonceI, nonceR} {
		m.Write(binary.AppendUvarint(nil, uint64(len(f))))
		m.Write(f)
	}
	return m.Sum(nil)
}

// Join runs the join handshake with the peer at addr (a multiaddr ending
// in /p2p/<ID>): both sides prove they hold the cluster secret, the peer
// admits us and calls its OnJoin hook (the daemon adds us to Raft), and we
// admit the peer and the members it is connected to, so that they can
// reach us before our own view of the membership catches up.
func (h *Host) Join(ctx context.Context, addr ma.Multiaddr) error {
	info, err := peer.AddrInfoFromP2pAddr(addr)
	if err != nil {
		return fmt.Errorf("join %s: the address must end in /p2p/<peer ID>: %w", addr, err)
	}
	if info.ID == h.ID() {
		return fmt.Errorf("join %s: that is this peer's own address", addr)
	}
	if err := h.h.Connect(ctx, *info); err != nil {
		return fmt.Errorf("join %s: connect: %w", addr, err)
	}
	s, err := h.h.NewStream(ctx, info.ID, JoinProtocol)
	if err != nil {
		return fmt.Errorf("join %s: open handshake stream: %w", info.ID, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	if err := h.joinAsInitiator(s, info.ID); err != nil {
		_ = s.Reset()
		if ctx.Err() != nil {
			return fmt.Errorf("join %s: %w", info.ID, ctx.Err())
		}
		return err
	}
	_ = s.Close()
	return nil
}

func (h *Host) joinAsInitiator(s network.Stream, remote peer.ID) error {
	fail := func(what string, err error) error {
		return fmt.Errorf("join %s: %s: %w", remote, what, errors.Join(ErrHandshake, err))
	}
	deadline := func(d time.Duration) { _ = s.SetDeadline(time.Now().Add(d)) }
	r := bufio.NewReaderSize(s, 4096)

	nonceI := make([]byte, nonceSize)
	_, _ = rand.Read(nonceI)
	hello := []byte{joinVersion}
	hello = append(hello, nonceI...)
	hello = appendAddrs(hello, h.h.Addrs())
	deadline(h.cfg.HandshakeTimeout)
	if err := WriteFrame(s, hello); err != nil {
		return fail("send hello", err)
	}

	chall, err := ReadFrame(r, 1+binary.MaxVarintLen64+maxReason)
	if err != nil {
		return fail("read challenge", err)
	}
	if len(chall) != nonceSize+macSize {
		// Not a challenge: a status frame telling why our hello was refused
		// (its length differs from a challenge's, which has no status byte).
		if status, reason, _, err := parseStatus(chall); err == nil && status == statusBadHello {
			return &RefusalError{Peer: remote, Reason: reason, kind: ErrHandshake}
		}
		return fail("read challenge", fmt.Errorf("challenge is %d bytes, want %d", len(chall), nonceSize+macSize))
	}
	nonceR, macR := chall[:nonceSize], chall[nonceSize:]
	responderProved := hmac.Equal(macR, joinMAC(h.cfg.Secret, "responder", h.ID(), remote, nonceI, nonceR))

	if err := WriteFrame(s, joinMAC(h.cfg.Secret, "initiator", h.ID(), remote, nonceI, nonceR)); err != nil {
		return fail("send proof", err)
	}

	verdict, err := ReadFrame(r, maxFrame)
	if err != nil {
		return fail("read verdict", err)
	}
	status, reason, rest, err := parseStatus(verdict)
	if err != nil {
		return fail("read verdict", err)
	}
	switch status {
	case statusOK:
	case statusMismatch:
		return &RefusalError{Peer: remote, Reason: ErrSecretMismatch.Error(), kind: ErrSecretMismatch}
	default:
		return &RefusalError{Peer: remote, Reason: reason, kind: ErrJoinRefused}
	}
	if !responderProved {
		// R accepted a proof it could not check, or lies: either way it
		// does not hold our secret.
		return fmt.Errorf("join %s: the peer accepted us but could not prove it holds the cluster secret: %w", remote, ErrSecretMismatch)
	}
	members, err := parseMembers(rest)
	if err != nil {
		return fail("read member list", err)
	}
	now := time.Now()
	h.admit.admit(remote, now, h.cfg.AdmissionTTL)
	for _, m := range members {
		if m.ID == h.ID() {
			continue
		}
		h.admit.admit(m.ID, now, h.cfg.AdmissionTTL)
		h.AddAddrs(m.ID, m.Addrs)
	}
	h.AddAddrs(remote, h.h.Peerstore().Addrs(remote))

	deadline(h.cfg.HandshakeTimeout + h.cfg.JoinHookTimeout)
	result, err := ReadFrame(r, maxFrame)
	if err != nil {
		return fail("read join result", err)
	}
	status, reason, _, err = parseStatus(result)
	if err != nil {
		return fail("read join result", err)
	}
	if status != statusOK {
		return &RefusalError{Peer: remote, Reason: reason, kind: ErrJoinRefused}
	}
	return nil
}

// serveJoin is the responder's side of the handshake.
func (h *Host) serveJoin(s network.Stream) {
	select {
	case h.joinSlots <- struct{}{}:
		defer func() { <-h.joinSlots }()
	default:
		_ = s.Reset()
		return
	}
	remote := s.Conn().RemotePeer()
	_ = s.SetDeadline(time.Now().Add(h.cfg.HandshakeTimeout))
	r := bufio.NewReaderSize(s, 4096)
	if !h.respondJoin(s, r, remote) {
		_ = s.Reset()
		return
	}
	// Let the initiator read our last frame and hang up first (bounded by
	// the deadline): resetting now could discard what it has not read yet.
	_ = s.CloseWrite()
	_, _ = io.Copy(io.Discard, io.LimitReader(r, 1))
	_ = s.Close()
}

// respondJoin runs the responder's messages. It returns false if the
// stream broke and must be reset, true once its last frame is written.
func (h *Host) respondJoin(s network.Stream, r *bufio.Reader, remote peer.ID) bool {
	hello, err := ReadFrame(r, 64<<10)
	if err != nil {
		return false
	}
	if len(hello) < 1+nonceSize || hello[0] != joinVersion {
		return WriteFrame(s, appendStatus(nil, statusBadHello, fmt.Sprintf("unsupported join handshake version or malformed hello (this peer speaks version %d)", joinVersion))) == nil
	}
	nonceI := hello[1 : 1+nonceSize]
	addrs, rest, err := parseAddrs(hello[1+nonceSize:], maxHelloAddrs)
	if err != nil || len(rest) != 0 {
		return WriteFrame(s, appendStatus(nil, statusBadHello, "malformed hello")) == nil
	}

	nonceR := make([]byte, nonceSize)
	_, _ = rand.Read(nonceR)
	chall := append(append([]byte(nil), nonceR...), joinMAC(h.cfg.Secret, "responder", remote, h.ID(), nonceI, nonceR)...)
	if err := WriteFrame(s, chall); err != nil {
		return false
	}
	proof, err := ReadFrame(r, macSize)
	if err != nil {
		return false
	}
	if !hmac.Equal(proof, joinMAC(h.cfg.Secret, "initiator", remote, h.ID(), nonceI, nonceR)) {
		return WriteFrame(s, appendStatus(nil, statusMismatch, ErrSecretMismatch.Error())) == nil
	}

	h.admit.admit(remote, time.Now(), h.cfg.AdmissionTTL)
	h.AddAddrs(remote, addrs)
	verdict := appendStatus(nil, statusOK, "")
	verdict = appendMembers(verdict, h.connectedMembers(remote))
	if err := WriteFrame(s, verdict); err != nil {
		return false
	}

	status, reason := statusOK, ""
	if err := h.runJoinHook(remote, addrs); err != nil {
		status, reason = statusRefused, err.Error()
	}
	_ = s.SetDeadline(time.Now().Add(h.cfg.HandshakeTimeout))
	return WriteFrame(s, appendStatus(nil, byte(status), reason)) == nil
}

// runJoinHook calls the OnJoin hook with a context bounded by
// JoinHookTimeout and cancelled by Close.
func (h *Host) runJoinHook(remote peer.ID, addrs []ma.Multiaddr) error {
	fn := h.onJoin.Load()
	if fn == nil {
		return errors.New("this peer does not accept joins yet")
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.JoinHookTimeout)
	defer cancel()
	// serveJoin runs inside a tracked handler, so the counter is above
	// zero and this Add cannot race with Close's Wait.
	h.handlers.Add(1)
	go func() {
		defer h.handlers.Done()
		select {
		case <-h.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	return (*fn)(ctx, remote, addrs)
}

// connectedMembers lists the peers this host is connected to and lets in
// (members and admitted peers), with their addresses, leaving out except.
// Admitted peers count: right after this host joined, the leader that
// added it is admitted here but not yet a member in its Raft view, and the
// next joiner must let that leader in.
func (h *Host) connectedMembers(except peer.ID) []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, p := range h.h.Network().Peers() {
		if p == except || !h.Allowed(p) {
			continue
		}
		out = append(out, peer.AddrInfo{ID: p, Addrs: h.h.Peerstore().Addrs(p)})
		if len(out) == maxMembers {
			break
		}
	}
	return out
}

// RefusalError is returned by Join when the other peer refused us.
// errors.Is matches ErrSecretMismatch or ErrJoinRefused.
type RefusalError struct {
	Peer   peer.ID
	Reason string // the peer's one-sentence reason
	kind   error
}

func (e *RefusalError) Error() string {
	return fmt.Sprintf("peer %s refused the join: %s", e.Peer, e.Reason)
}

func (e *RefusalError) Unwrap() error { return e.kind }

// Fields (frames are in frame.go).

func appendBytes(b, field []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(field))), field...)
}

var errShort = errors.New("truncated field")

func takeBytes(b []byte) (field, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, errShort
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

func appendStatus(b []byte, status byte, reason string) []byte {
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	return appendBytes(append(b, status), []byte(reason))
}

func parseStatus(b []byte) (status byte, reason string, rest []byte, err error) {
	if len(b) < 1 {
		return 0, "", nil, errShort
	}
	r, rest, err := takeBytes(b[1:])
	if err != nil {
		return 0, "", nil, err
	}
	return b[0], string(r), rest, nil
}

func appendAddrs(b []byte, addrs []ma.Multiaddr) []byte {
	if len(addrs) > maxHelloAddrs {
		addrs = addrs[:maxHelloAddrs]
	}
	b = binary.AppendUvarint(b, uint64(len(addrs)))
	for _, a := range addrs {
		b = appendBytes(b, a.Bytes())
	}
	return b
}

func parseAddrs(b []byte, limit int) ([]ma.Multiaddr, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(limit) {
		return nil, nil, fmt.Errorf("address count missing or above %d", limit)
	}
	b = b[k:]
	addrs := make([]ma.Multiaddr, 0, n)
	for range n {
		f, rest, err := takeBytes(b)
		if err != nil {
			return nil, nil, err
		}
		a, err := ma.NewMultiaddrBytes(f)
		if err != nil {
			return nil, nil, fmt.Errorf("address: %w", err)
		}
		addrs = append(addrs, a)
		b = rest
	}
	return addrs, b, nil
}

func appendMembers(b []byte, members []peer.AddrInfo) []byte {
	b = binary.AppendUvarint(b, uint64(len(members)))
	for _, m := range members {
		b = appendBytes(b, []byte(m.ID))
		b = appendAddrs(b, m.Addrs)
	}
	return b
}

func parseMembers(b []byte) ([]peer.AddrInfo, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > maxMembers {
		return nil, fmt.Errorf("member count missing or above %d", maxMembers)
	}
	b = b[k:]
	out := make([]peer.AddrInfo, 0, n)
	for range n {
		f, rest, err := takeBytes(b)
		if err != nil {
			return nil, err
		}
		id, err := peer.IDFromBytes(f)
		if err != nil {
			return nil, fmt.Errorf("member ID: %w", err)
		}
		addrs, rest, err := parseAddrs(rest, maxHelloAddrs)
		if err != nil {
			return nil, err
		}
		out = append(out, peer.AddrInfo{ID: id, Addrs: addrs})
		b = rest
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d bytes after the member list", len(b))
	}
	return out, nil
}
