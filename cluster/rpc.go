package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/transfer"
)

// Peer-to-peer protocols, all gated by cluster membership (package p2p).
const (
	protoInfo   protocol.ID = "/shoal/info/1"
	protoStatus protocol.ID = "/shoal/status/1"
	protoFetch  protocol.ID = "/shoal/fetch/1"
	// protoRemoved tells a peer that the cluster removed it: a removed
	// peer may never receive the configuration change that removes it,
	// since the leader stops replicating to it.
	protoRemoved protocol.ID = "/shoal/removed/1"
	// protoAddrs asks a peer for the addresses it knows of another.
	protoAddrs protocol.ID = "/shoal/addrs/1"
	// protoWanted asks the leader which of some store keys its state
	// still wants on any peer (a pin, a shard, an add in progress).
	protoWanted protocol.ID = "/shoal/wanted/1"
	// protoHave asks a peer which of some CIDs it stores.
	protoHave protocol.ID = "/shoal/have/1"
	// protoMetrics carries a peer's heartbeat and metrics (monitor.go).
	protoMetrics protocol.ID = "/shoal/metrics/1"
)

// Limits on what a peer reads from another, so a hostile member cannot
// make it allocate without bound.
const (
	maxRPCMessage = 4 << 20
	maxCIDLen     = 128
	maxBlockLen   = 8 << 20
)

// info is what /shoal/info/1 answers: who the peer is and how much it can
// store.
type info struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"`
	Version   string   `json:"version"`
	Capacity  int64    `json:"capacity"`
	Used      int64    `json:"used"`
	// Reserved is the room promised to shards being received; Free is
	// capacity - used - reserved.
	Reserved int64 `json:"reserved"`
	Free     int64 `json:"free"`
	Shards   int   `json:"shards"`
}

// check refuses storage figures no peer can have: negative ones, or more
// free than capacity - used - reserved. A member's figures are its own
// word (docs/security.md): one that claims room it does not have is
// caught when its copies fail verify, and repaired elsewhere. This only
// keeps an impossible claim out of the allocator.
func (in info) check() error {
	if in.Capacity < 0 || in.Used < 0 || in.Reserved < 0 || in.Free < 0 || in.Shards < 0 ||
		in.Free > max(in.Capacity-in.Used-in.Reserved, 0) {
		return fmt.Errorf("impossible storage figures (capacity %d, used %d, reserved %d, free %d, shards %d)",
			in.Capacity, in.Used, in.Reserved, in.Free, in.Shards)
	}
	return nil
}

// statusReq asks a peer for its local state of some pins and shards.
type statusReq struct {
	CIDs   []string `json:"cids"`
	Shards []string `json:"shards,omitempty"`
}

// call sends one JSON request on a new stream of proto and decodes one
// JSON answer into out. An answer {"error": "..."} becomes an error.
func (p *Peer) call(ctx context.Context, to peer.ID, proto protocol.ID, req, out any) error {
	return p.callFor(ctx, to, proto, req, out, p.rpcTimeout)
}

// callFor is call with a timeout of its own, for requests that take long
// (verify, sync); the handler must be served by serveJSONFor with as long.
func (p *Peer) callFor(ctx context.Context, to peer.ID, proto protocol.ID, req, out any, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := p.host.NewStream(ctx, to, proto)
	if err != nil {
		return err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := json.NewEncoder(s).Encode(req); err != nil {
		_ = s.Reset()
		return fmt.Errorf("send %s request to %s: %w", proto, to, err)
	}
	_ = s.CloseWrite()
	var resp struct {
		Error string          `json:"error"`
		Body  json.RawMessage `json:"body"`
	}
	if err := json.NewDecoder(io.LimitReader(s, maxRPCMessage)).Decode(&resp); err != nil {
		return fmt.Errorf("read %s answer from %s: %w", proto, to, err)
	}
	if resp.Error != "" {
		return fmt.Errorf("%s: %s", to, resp.Error)
	}
	return json.Unmarshal(resp.Body, out)
}

// serveJSON wraps a request handler as a stream handler for call.
func serveJSON[Req any](p *Peer, fn func(ctx context.Context, from peer.ID, req Req) (any, error)) network.StreamHandler {
	return serveJSONFor(p, p.rpcTimeout, fn)
}

// serveJSONFor is serveJSON for requests that may take up to timeout.
func serveJSONFor[Req any](p *Peer, timeout time.Duration, fn func(ctx context.Context, from peer.ID, req Req) (any, error)) network.StreamHandler {
	return func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(timeout))
		var req Req
		var resp struct {
			Error string `json:"error,omitempty"`
			Body  any    `json:"body,omitempty"`
		}
		if err := json.NewDecoder(io.LimitReader(s, maxRPCMessage)).Decode(&req); err != nil {
			resp.Error = "malformed request: " + err.Error()
		} else if body, err := fn(p.ctx, s.Conn().RemotePeer(), req); err != nil {
			resp.Error = err.Error()
		} else {
			resp.Body = body
		}
		if err := json.NewEncoder(s).Encode(resp); err != nil {
			_ = s.Reset()
		}
	}
}

func (p *Peer) serveInfo(context.Context, peer.ID, struct{}) (any, error) {
	return p.localInfo(), nil
}

// serveRemoved stops this peer when a member says the cluster removed it
// and this peer's own Raft configuration agrees: one member's word alone
// stops no peer (docs/security.md). The leader replicates a removal to the
// removed peer too, so its configuration has usually dropped it by the
// time the notice comes; if not yet, watchMembership stops the peer once
// it does.
func (p *Peer) serveRemoved(_ context.Context, from peer.ID, _ struct{}) (any, error) {
	if p.cons.IsMember(p.host.ID()) {
		p.log("%s says this peer was removed from the cluster, but its Raft configuration still lists it: not stopping", from)
		return nil, errors.New("this peer's Raft configuration still lists it as a member: not stopping")
	}
	p.log("%s says this peer was removed from the cluster, and its Raft configuration agrees; stopping", from)
	p.markRemoved()
	return struct{}{}, nil
}

type wantedReq struct {
	Keys []string `json:"keys"`
	// Here asks whether the state wants the keys on the asking peer,
	// rather than anywhere.
	Here bool `json:"here,omitempty"`
}

// wantedKeys returns which of keys this peer's state wants anywhere: as a
// pin, a cluster-DAG or a shard. While any add is in progress every key is
// wanted: its shards may be in flight before the state lists them.
func (p *Peer) wantedKeys(keys []string) map[string]bool {
	st := p.cons.State()
	adding := len(st.Adds()) > 0
	out := make(map[string]bool, len(keys))
	for _, k := range keys {
		c, err := cid.Decode(k)
		out[k] = adding || (err == nil && st.Referenced(c))
	}
	return out
}

// peerCID decodes a CID a peer sent and refuses one whose hash shoal does
// not accept (dag.CheckCID).
func peerCID(s string) (cid.Cid, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("%q is not a CID", s)
	}
	if err := dag.CheckCID(c); err != nil {
		return cid.Undef, err
	}
	return c, nil
}

type haveReq struct {
	Keys []string `json:"keys"`
}

// serveHave answers which of the CIDs asked for this peer stores.
func (p *Peer) serveHave(_ context.Context, _ peer.ID, req haveReq) (any, error) {
	if len(req.Keys) > haveBatch {
		return nil, fmt.Errorf("%d CIDs in one request; at most %d", len(req.Keys), haveBatch)
	}
	out := make([]bool, len(req.Keys))
	for i, k := range req.Keys {
		c, err := cid.Decode(k)
		out[i] = err == nil && p.store.Has(c)
	}
	return out, nil
}

func (p *Peer) serveWanted(_ context.Context, from peer.ID, req wantedReq) (any, error) {
	if len(req.Keys) > maxWantedKeys {
		return nil, errors.New("too many keys in one request")
	}
	if req.Here {
		return p.wantedHere(req.Keys, from), nil
	}
	return p.wantedKeys(req.Keys), nil
}

// maxWantedKeys bounds one /shoal/wanted/1 request.
const maxWantedKeys = 100000

// wantedHere returns which of keys this peer's state wants on peer id.
func (p *Peer) wantedHere(keys []string, id peer.ID) map[string]bool {
	st := p.cons.State()
	out := make(map[string]bool, len(keys))
	for _, k := range keys {
		c, err := cid.Decode(k)
		out[k] = err != nil || st.Wants(c, id) // an undecodable key: keep it
	}
	return out
}

// unwantedHere returns which of keys the leader's state does not want on
// this peer. A restarted peer's own state may lag the leader's by the ops
// after its log's end, so deletions are confirmed there; it answers
// nothing when no leader answers (keeping a shard is the safe mistake).
func (p *Peer) unwantedHere(ctx context.Context, keys []string) []string {
	self := p.host.ID()
	var wanted map[string]bool
	switch leader := p.cons.Leader(); leader {
	case "":
		return nil
	case self:
		wanted = p.wantedHere(keys, self)
	default:
		if err := p.call(ctx, leader, protoWanted, wantedReq{Keys: keys, Here: true}, &wanted); err != nil {
			return nil
		}
	}
	var out []string
	for _, k := range keys {
		if w, ok := wanted[k]; ok && !w {
			out = append(out, k)
		}
	}
	return out
}

// notWanted returns the keys the leader's state wants nowhere. It answers
// nothing when no leader answers: keeping a shard is the safe mistake.
func (p *Peer) notWanted(ctx context.Context, keys []string) []string {
	leader := p.cons.Leader()
	var wanted map[string]bool
	switch leader {
	case "":
		return nil
	case p.host.ID():
		wanted = p.wantedKeys(keys)
	default:
		if err := p.call(ctx, leader, protoWanted, wantedReq{Keys: keys}, &wanted); err != nil {
			return nil
		}
	}
	var out []string
	for _, k := range keys {
		if w, ok := wanted[k]; ok && !w {
			out = append(out, k)
		}
	}
	return out
}

type addrsReq struct {
	ID string `json:"id"`
}

func (p *Peer) serveAddrs(_ context.Context, _ peer.ID, req addrsReq) (any, error) {
	id, err := peer.Decode(req.ID)
	if err != nil {
		return nil, fmt.Errorf("%q is not a peer ID", req.ID)
	}
	var out []string
	for _, a := range p.host.PeerAddrs(id) {
		out = append(out, a.String())
	}
	return out, nil
}

// learnAddrs asks the leader for id's addresses when this peer has none.
func (p *Peer) learnAddrs(ctx context.Context, id peer.ID) {
	leader := p.cons.Leader()
	if len(p.host.PeerAddrs(id)) > 0 || leader == "" || leader == p.host.ID() {
		return
	}
	var addrs []string
	if err := p.call(ctx, leader, protoAddrs, addrsReq{ID: id.String()}, &addrs); err != nil {
		return
	}
	var ms []ma.Multiaddr
	for _, a := range addrs {
		if m, err := ma.NewMultiaddr(a); err == nil {
			ms = append(ms, m)
		}
	}
	p.host.AddAddrs(id, ms)
}

func (p *Peer) serveStatus(_ context.Context, _ peer.ID, req statusReq) (any, error) {
	if len(req.CIDs)+len(req.Shards) > 100000 {
		return nil, errors.New("too many CIDs in one status request")
	}
	out := make(map[string]api.PeerStatus, len(req.CIDs)+len(req.Shards))
	for _, s := range req.CIDs {
		c, err := peerCID(s)
		if err != nil {
			return nil, err
		}
		out[s] = p.tracker.status(c)
	}
	for _, s := range req.Shards {
		c, err := peerCID(s)
		if err != nil {
			return nil, err
		}
		out[s] = p.tracker.shardStatus(c)
	}
	return out, nil
}

// Fetch protocol: the client sends the root CID as one line; the server
// answers with one status byte (0: it follows; 1: a message line follows)
// and then every block of the DAG below the root in depth-first pre-order,
// each framed as uvarint(len(cid)) cid uvarint(len(data)) data, and a zero
// uvarint at the end. Pre-order lets the receiver check that every block
// is one it was told about by a parent it already verified, and that none
// is missing at the end, with memory bounded by the DAG's frontier.
//
// Deadlines and the cap on streams served are those of limits.go: a
// server refuses a fetch beyond its cap with "busy: ...", and the
// tracker asks the next holder.
const (
	fetchOK      = 0
	fetchRefused = 1
)

// fetchServer serves /shoal/fetch/1 from a peer's store.
type fetchServer struct {
	p *Peer
	slots
}

func newFetchServer(p *Peer) *fetchServer {
	return &fetchServer{p: p, slots: newSlots(p.limits.fetch, "fetches")}
}

func (fs *fetchServer) serve(s network.Stream) {
	p := fs.p
	defer s.Close()
	stop := context.AfterFunc(p.ctx, func() { _ = s.Reset() })
	defer stop()
	line, ok := p.readRequest(s)
	if !ok {
		return
	}
	refuse := func(msg string) {
		_, _ = s.Write(append([]byte{fetchRefused}, msg+"\n"...))
	}
	root, err := cid.Decode(line)
	if err != nil {
		refuse("malformed root CID")
		return
	}
	if err := dag.CheckCID(root); err != nil {
		refuse(err.Error())
		return
	}
	if !fs.take(refuse) {
		return
	}
	defer fs.give()
	if !p.store.Has(root) && root.Prefix().MhType != identityCode {
		refuse("not here")
		return
	}
	bw := bufio.NewWriterSize(&transfer.IdleStream{S: s, D: p.limits.idle}, 1<<20)
	if err := bw.WriteByte(fetchOK); err != nil {
		_ = s.Reset()
		return
	}
	err = walkDAG(root, p.store.Get, func(b dag.Block) error {
		var hdr [2 * binary.MaxVarintLen64]byte
		cb := b.CID.Bytes()
		n := binary.PutUvarint(hdr[:], uint64(len(cb)))
		if _, err := bw.Write(hdr[:n]); err != nil {
			return err
		}
		if _, err := bw.Write(cb); err != nil {
			return err
		}
		n = binary.PutUvarint(hdr[:], uint64(len(b.Data)))
		if _, err := bw.Write(hdr[:n]); err != nil {
			return err
		}
		_, err := bw.Write(b.Data)
		return err
	})
	if err != nil {
		p.log("fetch %s for %s: %v", root, s.Conn().RemotePeer(), err)
		_ = s.Reset()
		return
	}
	if err := bw.WriteByte(0); err != nil || bw.Flush() != nil {
		_ = s.Reset()
	}
}

// fetch copies the DAG under root from peer from into sink, verifying
// every block against its CID and against the links of its parent. The
// holder must answer the request within the RPC timeout and then send
// something at least every idle timeout (limits.go): a stalled holder
// fails the fetch, and the caller asks the next one. Time spent in sink
// does not count.
func (p *Peer) fetch(ctx context.Context, from peer.ID, root cid.Cid, sink func(dag.Block) error) error {
	octx, cancel := context.WithTimeout(ctx, p.limits.request)
	defer cancel()
	s, err := p.host.NewStream(octx, from, protoFetch)
	if err != nil {
		return err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	_ = s.SetWriteDeadline(time.Now().Add(p.limits.request))
	if _, err := s.Write([]byte(root.String() + "\n")); err != nil {
		_ = s.Reset()
		return fmt.Errorf("ask %s for %s: %w", from, root, err)
	}
	_ = s.CloseWrite()
	ir := &transfer.IdleStream{S: s, D: p.limits.request}
	br := bufio.NewReaderSize(ir, 1<<20)
	st, err := br.ReadByte()
	if err != nil {
		_ = s.Reset()
		return fmt.Errorf("fetch %s from %s: %w", root, from, err)
	}
	if st != fetchOK {
		msg, _ := bufio.NewReader(io.LimitReader(br, 256)).ReadString('\n')
		return fmt.Errorf("%s cannot serve %s: %s", from, root, trimNL(msg))
	}
	ir.D = p.limits.idle // the DAG may take long, but not stall
	v := newDAGVerifier(root)
	buf := make([]byte, 0, 1<<20)
	fail := func(err error) error {
		_ = s.Reset()
		return fmt.Errorf("fetch %s from %s: %w", root, from, err)
	}
	for {
		cl, err := binary.ReadUvarint(br)
		if err != nil {
			return fail(err)
		}
		if cl == 0 {
			break
		}
		if cl > maxCIDLen {
			return fail(fmt.Errorf("a CID of %d bytes", cl))
		}
		cb := make([]byte, cl)
		if _, err := io.ReadFull(br, cb); err != nil {
			return fail(err)
		}
		c, err := cid.Cast(cb)
		if err != nil {
			return fail(fmt.Errorf("malformed CID: %w", err))
		}
		dl, err := binary.ReadUvarint(br)
		if err != nil {
			return fail(err)
		}
		if dl > maxBlockLen {
			return fail(fmt.Errorf("block %s of %d bytes is above the %d-byte limit", c, dl, maxBlockLen))
		}
		if cap(buf) < int(dl) {
			buf = make([]byte, dl)
		}
		buf = buf[:dl]
		if _, err := io.ReadFull(br, buf); err != nil {
			return fail(err)
		}
		if err := v.check(c, buf); err != nil {
			return fail(err)
		}
		if err := sink(dag.Block{CID: c, Data: buf}); err != nil {
			_ = s.Reset()
			return err
		}
	}
	return v.done()
}

func trimNL(s string) string {
	if n := len(s); n > 0 && s[n-1] == '\n' {
		return s[:n-1]
	}
	return s
}
