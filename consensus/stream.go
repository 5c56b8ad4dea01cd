package consensus

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/shoal-project/shoal/p2p"
)

// RaftProtocol carries Raft's RPCs, one libp2p stream per pooled
// connection of raft's NetworkTransport. It is gated: only members and
// admitted peers may open it.
const RaftProtocol protocol.ID = "/shoal/raft/1"

// streamLayer is a raft.StreamLayer over libp2p streams: a Raft
// ServerAddress is a peer ID string, and the peer's addresses come from
// the libp2p peerstore. It tracks every stream it hands out so that Close
// can reset them: raft's NetworkTransport closes the listener but not the
// connections its handler goroutines block on.
type streamLayer struct {
	host     *p2p.Host
	incoming chan net.Conn
	closing  chan struct{}

	mu     sync.Mutex // owns conns and closed
	conns  map[*streamConn]struct{}
	closed bool
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(h *p2p.Host) *streamLayer {
	l := &streamLayer{
		host:     h,
		incoming: make(chan net.Conn),
		closing:  make(chan struct{}),
		conns:    make(map[*streamConn]struct{}),
	}
	h.Handle(RaftProtocol, l.handle)
	return l
}

// handle runs on the host's handler goroutine for each inbound stream and
// waits until Accept takes it or the layer closes.
func (l *streamLayer) handle(s network.Stream) {
	c, ok := l.track(s)
	if !ok {
		return
	}
	select {
	case l.incoming <- c:
	case <-l.closing:
		_ = c.Close()
	}
}

// Accept implements net.Listener.
func (l *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.incoming:
		return c, nil
	case <-l.closing:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener: it stops accepting, resets every stream
// the layer handed out and aborts dials in progress.
func (l *streamLayer) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.closing)
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	l.host.RemoveHandler(RaftProtocol)
	for c := range conns {
		_ = c.Stream.Reset()
	}
	return nil
}

// Addr implements net.Listener: the local peer ID.
func (l *streamLayer) Addr() net.Addr { return peerAddr(l.host.ID()) }

// Dial opens a Raft stream to the peer whose ID is address.
func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	id, err := peer.Decode(string(address))
	if err != nil {
		return nil, fmt.Errorf("dial raft peer %q: not a peer ID: %w", address, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() { // abort the dial if the layer closes meanwhile
		select {
		case <-l.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	s, err := l.host.NewStream(ctx, id, RaftProtocol)
	if err != nil {
		return nil, fmt.Errorf("dial raft peer %s: %w", id, err)
	}
	c, ok := l.track(s)
	if !ok {
		return nil, fmt.Errorf("dial raft peer %s: %w", id, net.ErrClosed)
	}
	return c, nil
}

// track registers s, or resets it and returns false if the layer is closed.
func (l *streamLayer) track(s network.Stream) (*streamConn, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = s.Reset()
		return nil, false
	}
	c := &streamConn{Stream: s, layer: l}
	l.conns[c] = struct{}{}
	return c, true
}

func (l *streamLayer) untrack(c *streamConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// streamConn is a libp2p stream as a net.Conn. Read, Write and the
// deadline setters are the stream's own.
type streamConn struct {
	network.Stream
	layer *streamLayer
}

var _ net.Conn = (*streamConn)(nil)

func (c *streamConn) Close() error {
	c.layer.untrack(c)
	return c.Stream.Close()
}

func (c *streamConn) LocalAddr() net.Addr  { return peerAddr(c.Stream.Conn().LocalPeer()) }
func (c *streamConn) RemoteAddr() net.Addr { return peerAddr(c.Stream.Conn().RemotePeer()) }

// peerAddr is a peer ID as a net.Addr.
type peerAddr peer.ID

func (a peerAddr) Network() string { return "libp2p" }
func (a peerAddr) String() string  { return peer.ID(a).String() }
