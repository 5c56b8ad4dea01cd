package consensus

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// rpcConn is one Raft connection in memory: reads come from r, then
// io.EOF; writes are kept (a client's request) or dropped. closed is
// closed by Close, which the transport calls when it is done with it.
type rpcConn struct {
	r      io.Reader
	w      bytes.Buffer
	closed chan struct{}
	once   sync.Once
}

func newRPCConn(in []byte) *rpcConn {
	return &rpcConn{r: bytes.NewReader(in), closed: make(chan struct{})}
}

func (c *rpcConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *rpcConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *rpcConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *rpcConn) LocalAddr() net.Addr              { return peerAddr("local") }
func (c *rpcConn) RemoteAddr() net.Addr             { return peerAddr("remote") }
func (c *rpcConn) SetDeadline(time.Time) error      { return nil }
func (c *rpcConn) SetReadDeadline(time.Time) error  { return nil }
func (c *rpcConn) SetWriteDeadline(time.Time) error { return nil }

// recordingLayer is a raft.StreamLayer whose dials record what the
// client sends; the answer is io.EOF. It produces the seeds: Raft's own
// encodings of its RPCs.
type recordingLayer struct {
	last   *rpcConn
	closed chan struct{}
}

func (l *recordingLayer) Accept() (net.Conn, error) { <-l.closed; return nil, net.ErrClosed }
func (l *recordingLayer) Close() error              { close(l.closed); return nil }
func (l *recordingLayer) Addr() net.Addr            { return peerAddr("recorder") }
func (l *recordingLayer) Dial(raft.ServerAddress, time.Duration) (net.Conn, error) {
	l.last = newRPCConn(nil)
	return l.last, nil
}

// raftRPCSeeds are the RPCs a Raft peer sends, as hashicorp/raft encodes
// them.
func raftRPCSeeds(t testing.TB) [][]byte {
	rec := &recordingLayer{closed: make(chan struct{})}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: rec, MaxPool: 1, Timeout: time.Second, Logger: hclog.NewNullLogger(),
	})
	defer trans.Close()
	op, err := goldenOps(t)["op-pin-allocated"].MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("leader"), Addr: []byte("leader")}
	var seeds [][]byte
	record := func(send func() error) {
		_ = send() // fails reading the answer: only the request matters
		seeds = append(seeds, bytes.Clone(rec.last.w.Bytes()))
	}
	record(func() error {
		return trans.AppendEntries("f", "f", &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 3, PrevLogEntry: 7, PrevLogTerm: 2,
			Entries: []*raft.Log{{Index: 8, Term: 3, Type: raft.LogCommand, Data: op, AppendedAt: t0}}, LeaderCommitIndex: 7},
			&raft.AppendEntriesResponse{})
	})
	record(func() error {
		return trans.AppendEntries("f", "f", &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 3}, &raft.AppendEntriesResponse{})
	})
	record(func() error {
		return trans.RequestVote("f", "f", &raft.RequestVoteRequest{RPCHeader: hdr, Term: 4, LastLogIndex: 8, LastLogTerm: 3},
			&raft.RequestVoteResponse{})
	})
	record(func() error {
		return trans.RequestPreVote("f", "f", &raft.RequestPreVoteRequest{RPCHeader: hdr, Term: 4}, &raft.RequestPreVoteResponse{})
	})
	record(func() error {
		return trans.TimeoutNow("f", "f", &raft.TimeoutNowRequest{RPCHeader: hdr}, &raft.TimeoutNowResponse{})
	})
	record(func() error {
		return trans.InstallSnapshot("f", "f", &raft.InstallSnapshotRequest{RPCHeader: hdr, SnapshotVersion: 1, Term: 3,
			LastLogIndex: 8, LastLogTerm: 3, Size: 5}, &raft.InstallSnapshotResponse{}, strings.NewReader("snaps"))
	})
	return seeds
}

// FuzzRaftTransport feeds arbitrary bytes, as a connection accepted by
// streamLayer, to Raft's NetworkTransport, the decoder of RaftProtocol:
// it decodes each RPC into its command and hands it on (here to a
// consumer that refuses them all), and it lets go of the connection when
// the bytes end. A member's garbage costs a log line, not the process.
func FuzzRaftTransport(f *testing.F) {
	for _, s := range raftRPCSeeds(f) {
		f.Add(s)
		f.Add(append(bytes.Clone(s), s...))
		f.Add(s[:len(s)/2])
	}
	f.Add([]byte{9})
	f.Add([]byte{0, 0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})

	layer := newStreamLayer(fakeLeader(f))
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: 1, Timeout: time.Second, Logger: hclog.NewNullLogger(),
	})
	done := make(chan struct{})
	f.Cleanup(func() {
		close(done)
		_ = trans.Close()
		_ = layer.Close()
	})
	refused := errors.New("refused by the fuzz consumer")
	go func() {
		for {
			select {
			case rpc := <-trans.Consumer():
				if rpc.Command == nil {
					panic("an RPC without a command")
				}
				if rpc.Reader != nil {
					_, _ = io.Copy(io.Discard, rpc.Reader)
				}
				rpc.Respond(nil, refused)
			case <-done:
				return
			}
		}
	}()
	f.Fuzz(func(t *testing.T, in []byte) {
		c := newRPCConn(in)
		select {
		case layer.incoming <- c:
		case <-time.After(5 * time.Second):
			t.Fatal("the transport accepts no connection")
		}
		select {
		case <-c.closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("the transport still holds a connection whose %d bytes ended", len(in))
		}
	})
}
