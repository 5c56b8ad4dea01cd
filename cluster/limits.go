package cluster

import (
	"bufio"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// Bounds on the streams of /shoal/fetch/1 and /shoal/read/1, so that a
// stalled peer, on either side, costs one slot for a bounded time:
//
//   - the request (dial, request line, status byte) must pass within
//     the RPC timeout (5 s, Peer.rpcTimeout) on both sides;
//   - after it, every read and every write must make progress within
//     streamIdleTimeout, or the stream is reset: a server whose reader
//     stops reading, or a reader whose holder stops sending, gives up;
//   - a server serves at most maxFetchStreams fetches and maxReadStreams
//     reads at once, and refuses more at once with "busy: ..." (the
//     reader asks the next holder) rather than queueing them.
//
// /shoal/shard/1 has the same shape (transfer.Server: IdleTimeout and
// MaxConcurrent, and the same transfer.IdleStream); the JSON RPCs have one deadline, rpcTimeout or their
// own (serveJSONFor).
const (
	// streamIdleTimeout bounds each wait for progress on a stream. It is
	// renewed before every read and write, so a large DAG or shard may
	// take as long as it needs. 30 s is far above an honest pause (a
	// holder reads its store; a reader's consumer takes a 16 MiB yamux
	// window to fill), and is what a stalled peer holds a slot for.
	streamIdleTimeout = 30 * time.Second
	// maxFetchStreams bounds the fetches a peer serves at once. A fetch
	// holds a 1 MiB write buffer and one block (<= 8 MiB): 16 stay under
	// ~150 MiB. A tracker fetches one plain pin at a time, so 16 serve as
	// many peers catching up at once.
	maxFetchStreams = 16
	// maxReadStreams bounds the read streams a peer serves at once; more
	// are refused as busy and the reader asks the next holder. A shard
	// stream holds a 256 KiB read-ahead, a block buffer (<= 8 MiB) and a
	// 1 MiB write buffer, so 32 streams stay under ~300 MiB in the worst
	// case and ~50 MiB with 256 KiB blocks.
	maxReadStreams = 32
)

// streamLimits are the bounds above, as one peer applies them. Tests set
// short ones through Options.limits.
type streamLimits struct {
	request     time.Duration // Peer.rpcTimeout
	idle        time.Duration // streamIdleTimeout
	fetch, read int           // maxFetchStreams, maxReadStreams
}

// withDefaults fills the zero fields of l; rpc is the peer's RPC timeout.
func (l streamLimits) withDefaults(rpc time.Duration) streamLimits {
	if l.request <= 0 {
		l.request = rpc
	}
	if l.idle <= 0 {
		l.idle = streamIdleTimeout
	}
	if l.fetch <= 0 {
		l.fetch = maxFetchStreams
	}
	if l.read <= 0 {
		l.read = maxReadStreams
	}
	return l
}

// slots caps the streams a server serves at once: one token per stream.
type slots struct {
	busy chan struct{}
	what string // "fetches", "reads": for the refusal
}

func newSlots(n int, what string) slots {
	return slots{busy: make(chan struct{}, n), what: what}
}

// take takes a slot, or refuses the stream as busy and reports false. A
// stream that took one gives it back with give.
func (sl slots) take(refuse func(string)) bool {
	select {
	case sl.busy <- struct{}{}:
		return true
	default:
		refuse(fmt.Sprintf("busy: serving %d %s already", cap(sl.busy), sl.what))
		return false
	}
}

func (sl slots) give() { <-sl.busy }

// readRequest reads the request line of a fetch or read stream, without
// its newline. The request and a refusal share one deadline, as for an
// RPC; after the request, the server lifts the read deadline, and each
// of its writes must make progress within the idle timeout (a client that
// stops reading gets its stream reset, and gives its slot back). A stream
// that sends no request in time is reset.
func (p *Peer) readRequest(s network.Stream) (string, bool) {
	_ = s.SetDeadline(time.Now().Add(p.limits.request))
	line, err := bufio.NewReader(io.LimitReader(s, 256)).ReadString('\n')
	if err != nil {
		_ = s.Reset()
		return "", false
	}
	_ = s.SetReadDeadline(time.Time{})
	return trimNL(line), true
}
