package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// ID describes a peer: what `shoal id --json` prints.
type ID struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Addresses are full multiaddrs ending in /p2p/ID, ready for
	// `shoal daemon --bootstrap`.
	Addresses []string `json:"addresses"`
	Version   string   `json:"version"`
	// IPFS is the IPFS-facing host (ipfs.listen), when it runs.
	IPFS *IPFSHost `json:"ipfs,omitempty"`
	// Gateway is the trustless gateway's base URL (gateway.listen), when
	// it runs.
	Gateway string `json:"gateway,omitempty"`
}

// IPFSHost is a peer's IPFS-facing host: its own peer ID, and the full
// multiaddrs an IPFS node dials (`ipfs swarm connect`, Peering.Peers).
type IPFSHost struct {
	ID        string   `json:"id"`
	Addresses []string `json:"addresses"`
}

// Peer is one cluster member as `shoal peers ls --json` prints it.
type Peer struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"`
	// Role is leader, follower, candidate or nonvoter.
	Role  string `json:"role"`
	Alive bool   `json:"alive"`
	// Error says why the peer could not be asked, when it is not alive.
	Error string `json:"error,omitempty"`
	// Capacity, Used and Free are the peer's storage figures in bytes,
	// when it answered.
	Capacity int64 `json:"capacity,omitempty"`
	Used     int64 `json:"used,omitempty"`
	Free     int64 `json:"free,omitempty"`
}

// Metrics are what a peer reports in each heartbeat (`shoal health`).
type Metrics struct {
	Name string `json:"name"`
	// Capacity, Used, Reserved and Free are storage figures in bytes:
	// reserved is promised to shards being received, free is capacity -
	// used - reserved.
	Capacity int64 `json:"capacity"`
	Used     int64 `json:"used"`
	Reserved int64 `json:"reserved"`
	Free     int64 `json:"free"`
	// Shards is how many shards (a plain pin's DAG counts as one) the
	// peer stores; Pins how many pins its copy of the state holds (a
	// lagging peer shows fewer).
	Shards int `json:"shards"`
	Pins   int `json:"pins"`
	// Queue is how many pins and shards wait to be fetched; Errors how
	// many failed and wait for a retry.
	Queue  int `json:"queue"`
	Errors int `json:"errors"`
	// TTL is how long the heartbeat counts, as a Go duration ("6s").
	TTL string `json:"ttl"`
}

// PeerHealth is one member's last heartbeat (`shoal health --json`).
type PeerHealth struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Alive: its last heartbeat is within its TTL.
	Alive bool `json:"alive"`
	// LastSeen is when its last heartbeat arrived (zero: never), and
	// Metrics what it said.
	LastSeen time.Time `json:"last_seen,omitzero"`
	Metrics  *Metrics  `json:"metrics,omitempty"`
}

// HealthReporter is the part of a Backend that reports the members'
// heartbeats (GET /health/peers); the server answers 501 without it.
type HealthReporter interface {
	Health(ctx context.Context) ([]PeerHealth, error)
}

// LostPart is a part with no copy left: every peer allocated to hold it
// is gone (OverallLost).
type LostPart struct {
	Root string `json:"root"` // the pin
	Name string `json:"name"`
	Part string `json:"part"`
	Kind string `json:"kind"` // Part*
	// Holders are the peers that held it, all gone.
	Holders []string `json:"holders"`
}

// LostReporter is the part of a Backend that lists lost parts (GET
// /health/lost); the server answers 501 without it.
type LostReporter interface {
	Lost(ctx context.Context) ([]LostPart, error)
}

// Pin is one entry of the cluster's pinset (`shoal pin ls --json`).
type Pin struct {
	CID         string    `json:"cid"`
	Name        string    `json:"name"`
	RMin        int       `json:"rmin"`
	RMax        int       `json:"rmax"`
	Allocations []string  `json:"allocations"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
}

// PinRequest asks for a pin. RMin and RMax of 0 mean the configured
// defaults.
type PinRequest struct {
	CID  string `json:"cid"`
	Name string `json:"name"`
	RMin int    `json:"rmin"`
	RMax int    `json:"rmax"`
	// Wait makes the request return only once the pin is pinned on RMin
	// peers, or fail when Timeout passes.
	Wait    bool          `json:"wait"`
	Timeout time.Duration `json:"timeout"`
}

// Per-peer pin states.
const (
	StatusQueued      = "queued"
	StatusPinning     = "pinning"
	StatusPinned      = "pinned"
	StatusPinError    = "pin_error"
	StatusUnpinning   = "unpinning"
	StatusUnpinned    = "unpinned"
	StatusRemote      = "remote"
	StatusUnreachable = "unreachable"
)

// PeerStatus is one peer's state for one pin.
type PeerStatus struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// Overall states of a pin.
const (
	// OverallPinned: every shard (or the whole DAG) is pinned on at least
	// rmin peers.
	OverallPinned = "pinned"
	// OverallInProgress: being added or first replicated.
	OverallInProgress = "in_progress"
	// OverallDegraded: something is below rmin but every part still has
	// a pinned copy.
	OverallDegraded = "degraded"
	// OverallError: some part has no pinned copy on a reachable peer.
	OverallError = "error"
	// OverallLost: some part has no copy left: every peer allocated to
	// hold it is gone (down past health.repair_grace, or removed), so no
	// repair can bring it back unless one returns. It stays lost until
	// then or until `pin rm` drops the pin; nothing retries meanwhile.
	OverallLost = "lost"
)

// PinStatus is a pin's state on every peer that should hold it (`shoal
// status --json`). For a sharded pin, Shards has one entry per shard and
// Peers the holders of its cluster-DAG.
type PinStatus struct {
	CID  string `json:"cid"`
	Name string `json:"name"`
	// AddID names a sharded add still in progress (its root CID is not
	// known yet, so CID is empty); its Shards are those stored so far.
	AddID string `json:"add_id,omitempty"`
	// Status is the overall state (Overall*); Summary says it in a line a
	// human reads first, e.g. "42 shards, 42 healthy, rmin 2 met on all".
	Status      string                `json:"status"`
	Summary     string                `json:"summary"`
	Size        uint64                `json:"size,omitempty"`
	RMin        int                   `json:"rmin"`
	RMax        int                   `json:"rmax"`
	Allocations []string              `json:"allocations"`
	Peers       map[string]PeerStatus `json:"peers"`
	Shards      []ShardStatus         `json:"shards,omitempty"`
	// ClusterDAG is the root of a sharded pin's list of shards, stored
	// like one more shard on the peers in Peers.
	ClusterDAG string `json:"cluster_dag,omitempty"`
}

// ShardStatus is one shard of a sharded pin.
type ShardStatus struct {
	Index  int    `json:"index"`
	CID    string `json:"cid"`
	Size   uint64 `json:"size"`
	Blocks uint64 `json:"blocks"`
	// Offset and Length are the file bytes the shard's leaves cover.
	Offset      uint64   `json:"offset"`
	Length      uint64   `json:"length"`
	Allocations []string `json:"allocations"`
	// Peers maps each allocated peer to its state for this shard: pinned,
	// pinning, queued, pin_error or unreachable.
	Peers map[string]string `json:"peers"`
	// Errors maps the peers in pin_error (or unreachable) to why.
	Errors map[string]string `json:"errors,omitempty"`
	// Status, in a pin's status only, is the shard's own state: pinned
	// (rmin met), degraded, error (no reachable copy) or lost (Overall*).
	Status string `json:"status,omitempty"`
}

// AddParams are the DAG and tree flags of an add, sent as URL query
// parameters spelled as the CLI flags are.
type AddParams struct {
	Chunker       string `json:"chunker"`
	AllowBigBlock bool   `json:"allow-big-block"`
	Trickle       bool   `json:"trickle"`
	// CIDVersion and RawLeaves are pointers so that "not given" differs
	// from the zero value, as Kubo's implications require.
	CIDVersion  *int   `json:"cid-version"`
	RawLeaves   *bool  `json:"raw-leaves"`
	Hash        string `json:"hash"`
	Inline      bool   `json:"inline"`
	InlineLimit int    `json:"inline-limit"`
	Wrap        bool   `json:"wrap-with-directory"`
	Name        string `json:"name"`
	RMin        int    `json:"rmin"`
	RMax        int    `json:"rmax"`
	// Shard cuts the DAG into shards of at most ShardSize bytes (0: the
	// default, 100 MiB), each allocated on its own.
	Shard     bool  `json:"shard"`
	ShardSize int64 `json:"shard-size"`
}

// AddResult is the outcome of an add: the root, pinned in the cluster.
type AddResult struct {
	CID  string `json:"cid"`
	Name string `json:"name"`
	Size uint64 `json:"size"`
	Pin  Pin    `json:"pin"`
	// Shards of a sharded add, in order, and the root of its list of
	// shards (stored on the peers in Pin.Allocations).
	Shards     []ShardStatus `json:"shards,omitempty"`
	ClusterDAG string        `json:"cluster_dag,omitempty"`
}

// Types of AddEvent.
const (
	AddEventShard = "shard"
	AddEventRoot  = "root"
	AddEventError = "error"
)

// AddEvent is one line of the NDJSON answer of POST /add?events=true: one
// "shard" event per shard of a sharded add as soon as its peers confirmed
// it (Shard.Allocations are those peers; Shard.Peers is empty), then one
// "root" event with the whole AddResult, or an "error" event when the add
// failed after the first event was sent. Either ends the stream.
type AddEvent struct {
	Type   string       `json:"type"`
	Shard  *ShardStatus `json:"shard,omitempty"`
	Result *AddResult   `json:"result,omitempty"`
	Error  *Error       `json:"error,omitempty"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// Backend is what the API serves; the daemon implements it. Every method
// is called on the HTTP request's goroutine, concurrently with others, with
// the request's context, and must be safe for that. Errors that wrap one of
// the sentinel errors of this package map to their HTTP status; others are
// 500.
type Backend interface {
	ID(ctx context.Context) ID
	Peers(ctx context.Context) ([]Peer, error)
	RemovePeer(ctx context.Context, id string) error
	Pin(ctx context.Context, req PinRequest) (Pin, error)
	Unpin(ctx context.Context, cid string) (Pin, error)
	Pins(ctx context.Context) ([]Pin, error)
	// Status of one pin; local restricts it to this peer's own view.
	Status(ctx context.Context, cid string, local bool) (PinStatus, error)
	StatusAll(ctx context.Context, local bool) ([]PinStatus, error)
	// Add ingests r (a file's bytes) and pins the root.
	Add(ctx context.Context, r io.Reader, p AddParams) (AddResult, error)
}

// AddStreamer is the part of a Backend that reports a sharded add's shards
// as they are confirmed (POST /add?events=true). A Backend without it
// answers such a request with the root event alone.
type AddStreamer interface {
	// AddEvents is Add that calls shard once for each shard, in order,
	// as soon as the shard is safe on its peers, on the goroutine that
	// called AddEvents. An error from shard (the client went away) fails
	// the add.
	AddEvents(ctx context.Context, r io.Reader, p AddParams, shard func(ShardStatus) error) (AddResult, error)
}

// Exporter is the part of a Backend that writes a pinned DAG as a CAR
// file (GET /export/{cid}); without it the server answers 501.
type Exporter interface {
	// Export writes the whole DAG of the pinned root cid to w as a CARv1
	// file whose only root is cid, streamed: memory does not grow with
	// the DAG. It returns ErrNotFound for a root that is not pinned. As
	// with Cat, an error before the first Write becomes the answer's
	// status and one after it the TrailerError trailer. It is called on
	// the request's goroutine.
	Export(ctx context.Context, cid string, w io.Writer) error
}

// ContentTypeCAR is the media type of GET /export answers (IPIP-412).
const ContentTypeCAR = "application/vnd.ipld.car; version=1"

// FileReader is the part of a Backend that reads files back (GET
// /cat/{cid}). It is separate from Backend so that backends that cannot
// read files (test fakes) need not implement it; the server answers 501
// for them.
type FileReader interface {
	// Cat writes the bytes of the pinned file cid from offset to w:
	// length bytes, or all up to the end with length -1; a range past the
	// end is cut at the end. offset is >= 0 and length >= -1 (the server
	// checks). Before its first Write, Cat calls w.SetLength with the
	// number of bytes it will write. It returns ErrNotFound for a root
	// that is not pinned and ErrBadRequest for an offset beyond the end.
	// An error returned before the first Write becomes the answer's
	// status; after it, the stream ends with the error in the
	// TrailerError trailer. It is called on the request's goroutine.
	Cat(ctx context.Context, cid string, offset, length int64, w CatWriter) error
}

// CatWriter is where FileReader.Cat writes a file's bytes.
type CatWriter interface {
	io.Writer
	// SetLength announces how many bytes follow (HeaderLength), so that a
	// client can tell a stream cut short from a complete one and show
	// progress. It must be called before the first Write, at most once.
	SetLength(n int64)
}

// Headers of GET /cat answers. The body is chunked: an answer cut short by
// a failure after the first byte cannot change its status, so it ends with
// a non-empty TrailerError trailer instead; a client must read the body to
// its end, then check the trailer and that it received HeaderLength bytes.
const (
	HeaderLength = "Shoal-Length"
	TrailerError = "Shoal-Error"
)

// Read consistency (the consistency query parameter of every read).
const (
	// ConsistencyConsistent, the default: the answer reflects every write
	// acknowledged before the request arrived, by whichever peer
	// acknowledged it (ReadBarrier). Without a leader to confirm it the
	// request fails with 503 instead.
	ConsistencyConsistent = "consistent"
	// ConsistencyStale: the peer answers from its own state at once,
	// asking nobody; the ReadInfo headers say how far behind it may be.
	ConsistencyStale = "stale"
)

// Headers that say what state an answer reflects (ReadInfo).
const (
	HeaderConsistency = "Shoal-Consistency"
	HeaderApplied     = "Shoal-Applied-Index"
	// HeaderLastContact is how long ago the answering peer last heard
	// from the leader ("1.2s"), "leader" on the leader, "never" when it
	// never heard from one.
	HeaderLastContact = "Shoal-Last-Contact"
)

// ReadInfo is what state an answer reflects.
type ReadInfo struct {
	Consistency string
	// Applied is the Raft index of the last op the peer's state applied.
	Applied uint64
	// Leader: the answering peer is the leader.
	Leader bool
	// LastContact is how long before the answer the peer last heard from
	// the leader; -1 if it never did (0 on the leader).
	LastContact time.Duration
}

// ReadBarrier is the part of a Backend whose state can lag: the server
// calls it before every request that reads or changes the pinset. A
// Backend without it answers from whatever state it has.
type ReadBarrier interface {
	// ReadBarrier returns once the state reflects every write acknowledged
	// before the call, or at once when stale is true, with what the state
	// reflects. It fails with an error wrapping ErrUnavailable when no
	// leader confirms the state in bounded time.
	ReadBarrier(ctx context.Context, stale bool) (ReadInfo, error)
}

// SetHeaders writes ri as the HeaderConsistency, HeaderApplied and
// HeaderLastContact headers.
func (ri ReadInfo) SetHeaders(h http.Header) {
	h.Set(HeaderConsistency, ri.Consistency)
	h.Set(HeaderApplied, strconv.FormatUint(ri.Applied, 10))
	switch {
	case ri.Leader:
		h.Set(HeaderLastContact, "leader")
	case ri.LastContact < 0:
		h.Set(HeaderLastContact, "never")
	default:
		h.Set(HeaderLastContact, ri.LastContact.Round(time.Millisecond).String())
	}
}

// ParseReadInfo reads what SetHeaders wrote; ok is false when the answer
// carries no such headers (an endpoint without state, an older peer).
func ParseReadInfo(h http.Header) (ri ReadInfo, ok bool) {
	ri.Consistency = h.Get(HeaderConsistency)
	if ri.Consistency == "" {
		return ReadInfo{}, false
	}
	ri.Applied, _ = strconv.ParseUint(h.Get(HeaderApplied), 10, 64)
	switch lc := h.Get(HeaderLastContact); lc {
	case "leader":
		ri.Leader = true
	case "never":
		ri.LastContact = -1
	default:
		ri.LastContact, _ = time.ParseDuration(lc)
	}
	return ri, true
}

// String is ReadInfo as a sentence's end: "applied index 42, last contact
// with the leader 120ms ago".
func (ri ReadInfo) String() string {
	switch {
	case ri.Leader:
		return fmt.Sprintf("applied index %d, on the leader", ri.Applied)
	case ri.LastContact < 0:
		return fmt.Sprintf("applied index %d, never in contact with a leader", ri.Applied)
	}
	return fmt.Sprintf("applied index %d, last contact with the leader %s ago", ri.Applied, ri.LastContact.Round(time.Millisecond))
}
