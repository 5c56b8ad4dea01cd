// Package config is the peer's directory: its libp2p identity, its JSON
// configuration with every default written out, and the cluster secret.
//
//	$SHOAL_PATH (default ~/.shoal)
//	├── config.json   this file's Config, mode 0600 (it holds the secret)
//	├── identity.key  the libp2p private key (protobuf), mode 0600
//	├── ipfs.key      the IPFS-facing host's own key, made when ipfs.listen is first set
//	├── store/        the local shard store (package store)
//	├── consensus/    Raft's log, stable store and snapshots
//	└── consensus.backup-TIME/  what `shoal state import` replaced (docs/state.md)
//
// Init writes a directory, Load reads one and validates it; neither
// changes a Config it is given.
package config

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// File names inside the peer's directory.
const (
	ConfigFile   = "config.json"
	IdentityFile = "identity.key"
	// IPFSIdentityFile is the key of the IPFS-facing host (IPFS), not
	// the cluster's: the public network never sees the cluster identity.
	IPFSIdentityFile = "ipfs.key"
	StoreDir         = "store"
	ConsensusDir     = "consensus"
)

// Sentinel errors.
var (
	// ErrNoRepo: the directory holds no config.json (run shoal init).
	ErrNoRepo = errors.New("no shoal peer here")
	// ErrExists: init found a peer already.
	ErrExists = errors.New("a shoal peer already exists here")
)

// Duration is a time.Duration written as "1.5s" in JSON.
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"1s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Config is config.json. Every field is written out on init so that an
// operator sees each default and can change it.
type Config struct {
	// PeerName is shown wherever the peer is listed. Default: the host
	// name.
	PeerName string `json:"peername"`
	// Secret is the cluster secret, 32 bytes as hex. Peers of one cluster
	// share it; a peer without it cannot join or read anything.
	Secret string `json:"secret"`
	// Listen are libp2p listen addresses. Default /ip4/0.0.0.0/tcp/9096.
	Listen []string `json:"listen"`
	// Capacity is how many bytes of shards this peer may hold, at most
	// the room on the store's disk (its free space plus what it holds);
	// "" means that room minus Reserve.
	Capacity string `json:"capacity"`
	// Reserve is kept free on the disk when Capacity is automatic.
	Reserve string `json:"reserve"`
	// MemoryLimit is the daemon's soft memory limit (Go's GOMEMLIMIT,
	// which overrides it when set); "0" turns it off.
	MemoryLimit string    `json:"memory_limit"`
	API         API       `json:"api"`
	Gateway     Gateway   `json:"gateway"`
	KuboRPC     KuboRPC   `json:"kubo_rpc"`
	IPFS        IPFS      `json:"ipfs"`
	Pinning     Pinning   `json:"pinning"`
	Consensus   Consensus `json:"consensus"`
	Health      Health    `json:"health"`
}

// API configures the REST API.
type API struct {
	// Listen is HOST:PORT. Default 127.0.0.1:9094: loopback only.
	Listen string `json:"listen"`
	// BasicAuth maps user names to passwords; empty means no basic auth.
	BasicAuth map[string]string `json:"basic_auth"`
	// BearerTokens are accepted as "Authorization: Bearer TOKEN".
	BearerTokens []string `json:"bearer_tokens"`
	// AllowUnauthenticatedRemote permits a listener on a non-loopback
	// address without any auth. Off: such a config is refused.
	AllowUnauthenticatedRemote bool `json:"allow_unauthenticated_remote"`
	// MaxBodyBytes bounds JSON request bodies (not uploads, which stream).
	MaxBodyBytes int64 `json:"max_body_bytes"`
	// AllowedOrigins are the browser origins ("https://ui.example.com",
	// SCHEME://HOST[:PORT] as a browser sends it; "*" for any) whose
	// requests are served, with CORS headers. A request with any other
	// Origin header is refused, so that a web page cannot drive the API
	// (CSRF). Requests without one (the CLI, curl) are not affected.
	AllowedOrigins []string `json:"allowed_origins"`
	// AllowedHosts are the names, besides the listen address itself (and
	// localhost or any IP address where that reaches the listener), that
	// the Host header of a request may carry: "NAME" (any port) or
	// "NAME:PORT". Any other name is refused, so that a web page cannot
	// read the API through a DNS name of its own that resolves to it (DNS
	// rebinding). api/doc.go gives the whole rule.
	AllowedHosts []string `json:"allowed_hosts"`
	// TLSCertFile and TLSKeyFile are PEM files of the API's certificate
	// (its chain after it, if any) and private key; a relative path is
	// relative to the peer's directory. Set both and the API serves HTTPS
	// only, TLS 1.2 at least; neither: plain HTTP. Credentials sent to a
	// listener on the network over plain HTTP cross it in clear text, so
	// the daemon warns of such a config (Warnings). docs/api.md shows how
	// to make a self-signed certificate.
	TLSCertFile string `json:"tls_cert_file"`
	TLSKeyFile  string `json:"tls_key_file"`
}

// Gateway configures the trustless IPFS HTTP gateway (package ipfsserve):
// GET /ipfs/{cid} of the content the cluster pins, to any client that
// reaches it, without auth, as IPFS gateways serve.
type Gateway struct {
	// Listen is HOST:PORT; "" (the default) turns the gateway off. It
	// serves raw blocks (?format=raw) and CARs (?format=car, with
	// dag-scope and entity-bytes) of pinned DAGs only; any other CID
	// gets 404.
	Listen string `json:"listen"`
	// Deserialized also serves files as their bytes (curl
	// http://HOST:PORT/ipfs/ROOT, with HTTP Range) and directories as
	// listings. A browser then renders pinned HTML, all of it under the
	// gateway's one origin, so a page of one pin can read the others.
	Deserialized bool `json:"deserialized"`
}

// KuboRPC configures the endpoint of Kubo's RPC API (package kuborpc,
// docs/kubo-rpc.md): /api/v0/add, cat, pin/... as Kubo answers them, so
// that `ipfs --api`, Kubo's RPC clients and scripts written for Kubo reach
// the cluster. It takes the API's auth, TLS, allowed origins and hosts.
type KuboRPC struct {
	// Listen is HOST:PORT; "" (the default) turns it off. Kubo's own is
	// 127.0.0.1:5001.
	Listen string `json:"listen"`
	// ShardAbove is the size above which an add is sharded unless it
	// says otherwise (shard=true or false): "64MiB" by default, "0"
	// shards every add. The peer reads up to that many bytes of an
	// upload before it chooses, because Kubo's clients stream it with no
	// length; so it bounds the memory of one add too.
	ShardAbove string `json:"shard_above"`
}

// IPFS configures the IPFS-facing libp2p host (docs/bitswap.md): a host
// of its own, with its own key (ipfs.key) and port, that runs identify
// and a bitswap server of the content the cluster pins, to anyone who
// connects. It speaks no cluster protocol and needs no secret.
type IPFS struct {
	// Listen are its multiaddrs, such as /ip4/0.0.0.0/tcp/4001; empty (the
	// default) turns it off.
	Listen []string `json:"listen"`
	// MaxConnections bounds its connections; past it, new ones are
	// refused. Its memory, streams and connections are counted apart
	// from the cluster host's, so public load cannot starve Raft or
	// shard transfers.
	MaxConnections int `json:"max_connections"`
	// Provide announces the roots of the pins to the IPFS DHT (as a DHT
	// client), so that IPFS nodes find this host for them; off by
	// default. Roots only, never every block.
	Provide bool `json:"provide"`
	// Bootstrap are the DHT peers to join through, full multiaddrs with
	// /p2p/ID (Kubo's `ipfs bootstrap list` for the public DHT); none
	// by default: shoal joins no network unless told to.
	Bootstrap []string `json:"bootstrap"`
	// ReprovideInterval is how often each root is announced again; DHT
	// records expire after 48 hours. Default 12h.
	ReprovideInterval Duration `json:"reprovide_interval"`
}

func (i IPFS) validate(cluster []string) error {
	for _, a := range i.Listen {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return fmt.Errorf("config: ipfs listen address %q is not a multiaddr: %w", a, err)
		}
		if port, err := m.ValueForProtocol(ma.P_TCP); err == nil && port != "0" && slices.Contains(cluster, a) {
			return fmt.Errorf("config: ipfs listen %s is a cluster listen address too; give the IPFS host a port of its own", a)
		}
	}
	if i.MaxConnections < 1 || i.MaxConnections > 1<<16 {
		return fmt.Errorf("config: ipfs max_connections %d is not in 1..65536", i.MaxConnections)
	}
	for _, b := range i.Bootstrap {
		if _, err := peer.AddrInfoFromString(b); err != nil {
			return fmt.Errorf("config: ipfs bootstrap %q is not a multiaddr ending in /p2p/PEERID: %w", b, err)
		}
	}
	if i.ReprovideInterval < Duration(time.Minute) || i.ReprovideInterval > Duration(47*time.Hour) {
		return fmt.Errorf("config: ipfs reprovide_interval %s is not in 1m..47h (DHT records expire after 48h)", time.Duration(i.ReprovideInterval))
	}
	if i.Provide && len(i.Listen) == 0 {
		return errors.New("config: ipfs provide is on but ipfs listen is empty: the records would name a host that does not run")
	}
	return nil
}

// LoadIPFSIdentity returns the IPFS-facing host's key from dir/ipfs.key,
// making one (Ed25519) the first time.
func LoadIPFSIdentity(dir string) (crypto.PrivKey, error) {
	path := filepath.Join(dir, IPFSIdentityFile)
	kb, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, err
		}
		if kb, err = crypto.MarshalPrivateKey(priv); err != nil {
			return nil, err
		}
		if err := WriteFileAtomic(path, kb); err != nil {
			return nil, err
		}
		return priv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the IPFS host's key: %w", err)
	}
	priv, err := crypto.UnmarshalPrivateKey(kb)
	if err != nil {
		return nil, fmt.Errorf("%s is not a libp2p private key: %w", path, err)
	}
	if err := checkKeyPair(priv); err != nil {
		return nil, fmt.Errorf("%s is damaged: %w", path, err)
	}
	return priv, nil
}

// TLSFiles are the paths of the API's certificate and key with relative
// ones resolved against the peer directory dir; "" when not configured.
func (a API) TLSFiles(dir string) (cert, key string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	return abs(a.TLSCertFile), abs(a.TLSKeyFile)
}

// TLS reports whether the API serves HTTPS.
func (a API) TLS() bool { return a.TLSCertFile != "" }

// Pinning holds pin defaults.
type Pinning struct {
	// ReplicationMin and ReplicationMax apply when a pin gives none;
	// -1 means every peer.
	ReplicationMin int `json:"replication_min"`
	ReplicationMax int `json:"replication_max"`
	// AbandonedAddGrace: the leader aborts a sharded add whose ingesting
	// peer has been unreachable this long, and every peer drops its
	// shards. (A peer that restarts aborts its own unfinished adds.)
	AbandonedAddGrace Duration `json:"abandoned_add_grace"`
	// ResumeGrace: a sharded add whose client went away keeps its
	// confirmed shards this long; the same add sent again (same bytes,
	// name and options) within it resumes after them instead of
	// sending them again. Then it is aborted.
	ResumeGrace Duration `json:"resume_grace"`
}

// Health holds failure detection and repair settings.
type Health struct {
	// HeartbeatInterval is how often a peer sends its heartbeat and
	// metrics to every member; HeartbeatTTL is how long they count: a
	// peer not heard from for HeartbeatTTL is down.
	HeartbeatInterval Duration `json:"heartbeat_interval"`
	HeartbeatTTL      Duration `json:"heartbeat_ttl"`
	// Repair: the leader re-allocates pins and shards whose live holders
	// fell below their replication minimum.
	Repair bool `json:"repair"`
	// RepairGrace is how long a holder must be down before its pins and
	// shards are copied elsewhere.
	RepairGrace Duration `json:"repair_grace"`
	// VerifyInterval is how often a peer re-hashes every shard it stores;
	// 0 turns the periodic check off (shoal verify still works).
	VerifyInterval Duration `json:"verify_interval"`
	// Allocator chooses peers for new pins, shards and repairs:
	// "freespace" (most free bytes first) or "balanced" (fewest stored
	// bytes and shards first).
	Allocator string `json:"allocator"`
}

// Consensus holds Raft's settings (see package consensus for each).
type Consensus struct {
	HeartbeatTimeout     Duration `json:"heartbeat_timeout"`
	ElectionTimeout      Duration `json:"election_timeout"`
	CommitTimeout        Duration `json:"commit_timeout"`
	LeaderLeaseTimeout   Duration `json:"leader_lease_timeout"`
	WaitForLeaderTimeout Duration `json:"wait_for_leader_timeout"`
	// ReadTimeout: a consistent read (every read but --consistency
	// stale) that no leader confirms in this long fails instead of
	// answering from a state that may be stale.
	ReadTimeout Duration `json:"read_timeout"`
	// Retention: Raft looks every one to two snapshot_intervals whether
	// snapshot_threshold entries came since its last snapshot; if so it
	// writes one, keeps snapshots_retained of them and drops the log
	// but for its last trailing_logs entries. Disk use is so bounded by
	// snapshots_retained copies of the pinset plus about
	// snapshot_threshold + trailing_logs entries (+ what arrives between
	// two looks).
	SnapshotInterval  Duration `json:"snapshot_interval"`
	SnapshotThreshold uint64   `json:"snapshot_threshold"`
	SnapshotsRetained int      `json:"snapshots_retained"`
	TrailingLogs      uint64   `json:"trailing_logs"`
	// BackupsRetained: the consensus.backup-TIME directories that state
	// import and cleanup leave, each a whole Raft state, beyond the newest
	// this many are deleted once the daemon has started with the new one.
	BackupsRetained int `json:"backups_retained"`
	// Voters caps the voting peers; peers beyond it join as non-voters.
	Voters int `json:"voters"`
	// PromoteAfter: a voter unreachable this long is replaced by a live
	// non-voter.
	PromoteAfter Duration `json:"promote_after"`
	// LeaveOnShutdown removes the peer from the cluster when its daemon
	// stops.
	LeaveOnShutdown bool `json:"leave_on_shutdown"`
}

// Default returns the configuration init writes.
func Default() Config {
	name, _ := os.Hostname()
	return Config{
		PeerName: name,
		Listen:   []string{"/ip4/0.0.0.0/tcp/9096"},
		// Leave room for the OS, logs and Raft: 1 GiB.
		Reserve: "1GiB",
		// With the default garbage collector pacing a daemon holding 10^6
		// pins (~450 MiB live) reached 1.2-1.36 GiB RSS, half of it
		// garbage not yet collected; a soft limit makes the collector run
		// sooner instead (bench/RESULTS.md). Raise it for larger pinsets:
		// live data above the limit costs extra collector CPU.
		MemoryLimit: "768MiB",
		API: API{
			Listen: "127.0.0.1:9094",
			// Pin and peer requests are tiny; 1 MiB refuses abuse early.
			MaxBodyBytes: 1 << 20,
			// No web page may call the API and only its own address
			// names it, as with Kubo's RPC API: a page open in a browser
			// on this machine can neither drive it nor read it. Written
			// out empty so that config.json shows the settings.
			AllowedOrigins: []string{},
			AllowedHosts:   []string{},
			// Plain HTTP: on loopback nothing crosses a network, and a
			// certificate that clients trust is the operator's to give
			// (docs/api.md). Written out empty, as above.
			TLSCertFile: "",
			TLSKeyFile:  "",
		},
		// Off: serving to IPFS clients is the operator's choice, and
		// these machines reach no network (issue 15). Trustless formats
		// only, when on: a client verifies what it gets, and no browser
		// renders pinned pages under the gateway's origin.
		Gateway: Gateway{Listen: "", Deserialized: false},
		// Off, as the gateway: a second API is the operator's choice.
		// Files above 64 MiB are sharded: below that a file is a few
		// shards' worth of nothing, and a plain pin of rmax copies is
		// simpler to serve; 64 MiB buffered per add is affordable.
		KuboRPC: KuboRPC{Listen: "", ShardAbove: "64MiB"},
		// Off, as the gateway. When on, 512 connections: Kubo's default
		// connection manager keeps up to 192, and each costs a few KiB
		// idle.
		IPFS: IPFS{Listen: []string{}, MaxConnections: 512, Provide: false, Bootstrap: []string{},
			ReprovideInterval: Duration(12 * time.Hour)},
		Pinning: Pinning{
			// Two copies survive the loss of any one peer; a third is
			// kept where a peer has room, so one peer can be down for
			// maintenance without any pin falling below its minimum.
			ReplicationMin: 2,
			ReplicationMax: 3,
			// A minute rides out a short network blip or a slow leader
			// change without leaving a dead add's shards for long.
			AbandonedAddGrace: Duration(time.Minute),
			// Ten minutes covers noticing a dropped connection and
			// running the command again; the shards it keeps meanwhile
			// are at most what the add had already sent.
			ResumeGrace: Duration(10 * time.Minute),
		},
		Consensus: Consensus{
			// hashicorp/raft's defaults (see consensus.DefaultConfig).
			HeartbeatTimeout:     Duration(time.Second),
			ElectionTimeout:      Duration(time.Second),
			CommitTimeout:        Duration(50 * time.Millisecond),
			LeaderLeaseTimeout:   Duration(500 * time.Millisecond),
			WaitForLeaderTimeout: Duration(15 * time.Second),
			// An election takes 1-2 s: a read during one still succeeds,
			// and a peer cut off from its quorum says so within 5 s.
			ReadTimeout: Duration(5 * time.Second),
			// hashicorp/raft's: a snapshot of 10^6 pins takes seconds, so
			// not more often than every 8192 entries, and at most every
			// 2-4 minutes under a steady stream.
			SnapshotInterval:  Duration(2 * time.Minute),
			SnapshotThreshold: 8192,
			// The newest and one to fall back to if it is damaged.
			SnapshotsRetained: 2,
			// hashicorp/raft's: ~2 MB of log lets a follower away for
			// ~10^4 pins catch up without a whole-pinset transfer.
			TrailingLogs: 10240,
			// The states of the last three imports or cleanups: enough
			// to undo a mistake found late, not a growing pile.
			BackupsRetained: 3,
			Voters:          3,
			// Long enough to ride out a restart, short enough that a dead
			// voter does not leave the quorum one failure from loss for
			// long.
			PromoteAfter: Duration(5 * time.Minute),
		},
		Health: Health{
			// A heartbeat every 2 s is a few hundred bytes a peer pair;
			// three missed ones (6 s) make a peer down, so one slow
			// beat on a loaded machine does not.
			HeartbeatInterval: Duration(2 * time.Second),
			HeartbeatTTL:      Duration(6 * time.Second),
			// Data safety is the point: on unless the operator says so.
			Repair: true,
			// A minute rides out a restart or a short network blip, so
			// a peer taken down for maintenance is not emptied; a peer
			// gone for longer has its data copied while the other
			// replicas (rmin >= 2) still hold it.
			RepairGrace: Duration(time.Minute),
			// Re-hashing everything daily finds silent corruption while a
			// healthy replica still exists, at a cost of one full read a
			// day (minutes for a few TB at disk speed).
			VerifyInterval: Duration(24 * time.Hour),
			Allocator:      "freespace",
		},
	}
}

// Validate checks the configuration's fields and their combinations.
func (c Config) Validate() error {
	if _, err := c.SecretBytes(); err != nil {
		return err
	}
	if len(c.Listen) == 0 {
		return errors.New("config: listen has no address")
	}
	for _, a := range c.Listen {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return fmt.Errorf("config: listen address %q is not a multiaddr: %w", a, err)
		}
	}
	if _, err := c.CapacityBytes(); err != nil {
		return err
	}
	if _, err := c.MemoryLimitBytes(); err != nil {
		return err
	}
	if _, err := ParseSize(c.Reserve); err != nil && c.Reserve != "" {
		return fmt.Errorf("config: reserve: %w", err)
	}
	host, _, err := net.SplitHostPort(c.API.Listen)
	if err != nil {
		return fmt.Errorf("config: api listen %q: %w", c.API.Listen, err)
	}
	if !isLoopback(host) && len(c.API.BasicAuth) == 0 && len(c.API.BearerTokens) == 0 && !c.API.AllowUnauthenticatedRemote {
		return fmt.Errorf("config: api listen %s is not a loopback address and no auth is configured; set basic_auth or bearer_tokens, or allow_unauthenticated_remote", c.API.Listen)
	}
	switch {
	case c.API.TLSCertFile != "" && c.API.TLSKeyFile == "":
		return errors.New("config: api tls_cert_file is set without tls_key_file; set both to serve HTTPS, or neither")
	case c.API.TLSKeyFile != "" && c.API.TLSCertFile == "":
		return errors.New("config: api tls_key_file is set without tls_cert_file; set both to serve HTTPS, or neither")
	}
	if c.API.MaxBodyBytes < 1024 {
		return errors.New("config: api max_body_bytes must be at least 1024")
	}
	for _, o := range c.API.AllowedOrigins {
		if _, err := ParseOrigin(o); err != nil {
			return fmt.Errorf("config: api allowed_origins: %w", err)
		}
	}
	for _, h := range c.API.AllowedHosts {
		if _, _, err := ParseAllowedHost(h); err != nil {
			return fmt.Errorf("config: api allowed_hosts: %w", err)
		}
	}
	if err := c.Gateway.validate(c.API.Listen); err != nil {
		return err
	}
	if err := c.KuboRPC.validate(c.API.Listen, c.Gateway.Listen); err != nil {
		return err
	}
	if err := c.IPFS.validate(c.Listen); err != nil {
		return err
	}
	if err := CheckReplication(c.Pinning.ReplicationMin, c.Pinning.ReplicationMax); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.Pinning.AbandonedAddGrace < Duration(time.Second) {
		return errors.New("config: pinning abandoned_add_grace must be at least 1s")
	}
	if c.Pinning.ResumeGrace < 0 {
		return errors.New("config: pinning resume_grace may not be negative (0 aborts an interrupted add at once)")
	}
	h := c.Health
	switch {
	case h.HeartbeatInterval < Duration(100*time.Millisecond):
		return errors.New("config: health heartbeat_interval must be at least 100ms")
	case h.HeartbeatTTL < 2*h.HeartbeatInterval:
		return fmt.Errorf("config: health heartbeat_ttl %s must be at least twice heartbeat_interval %s", h.HeartbeatTTL, h.HeartbeatInterval)
	case h.RepairGrace < 0 || h.VerifyInterval < 0:
		return errors.New("config: health repair_grace and verify_interval may not be negative")
	case h.Allocator != "freespace" && h.Allocator != "balanced":
		return fmt.Errorf("config: health allocator %q: use freespace or balanced", h.Allocator)
	}
	return c.Consensus.validateRetention()
}

// Warnings are sentences about a configuration that Validate accepts but
// that is likely a mistake; the daemon logs them at start.
func (c Config) Warnings() []string {
	var w []string
	host, _, _ := net.SplitHostPort(c.API.Listen)
	// Not refused: plain HTTP is right behind a TLS-terminating proxy or
	// on an encrypted network (WireGuard), which shoal cannot see.
	if !isLoopback(host) && (len(c.API.BasicAuth) > 0 || len(c.API.BearerTokens) > 0) && !c.API.TLS() {
		w = append(w, fmt.Sprintf("api listen %s is not a loopback address and serves plain HTTP, so its credentials cross the network in clear text; set api.tls_cert_file and api.tls_key_file unless a TLS proxy or an encrypted network carries it", c.API.Listen))
	}
	if ghost, _, err := net.SplitHostPort(c.Gateway.Listen); err == nil && c.Gateway.Deserialized && !isLoopback(ghost) {
		w = append(w, fmt.Sprintf("gateway listen %s is not a loopback address and gateway.deserialized is on: browsers render pinned HTML under the gateway's one origin, where a page of one pin can read every other; serve deserialized responses to the network only through a subdomain gateway in front", c.Gateway.Listen))
	}
	if c.IPFS.Provide && len(c.IPFS.Bootstrap) == 0 {
		w = append(w, "ipfs provide is on with no ipfs bootstrap peers: the DHT client knows only the peers that connect to it, and may have nobody to announce to")
	}
	return w
}

// validate checks the gateway's listen address against the API's.
func (g Gateway) validate(apiListen string) error {
	if g.Listen == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(g.Listen)
	if err != nil {
		return fmt.Errorf("config: gateway listen %q: %w", g.Listen, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("config: gateway listen %q: the port must be a number in 0..65535", g.Listen)
	}
	if n != 0 && g.Listen == apiListen {
		return fmt.Errorf("config: gateway listen %s is the api listen address too; give the gateway a port of its own", g.Listen)
	}
	return nil
}

// validate checks the endpoint's address against the API's and the
// gateway's, and its shard threshold.
func (k KuboRPC) validate(apiListen, gatewayListen string) error {
	if _, err := k.ShardAboveBytes(); err != nil {
		return err
	}
	if k.Listen == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(k.Listen)
	if err != nil {
		return fmt.Errorf("config: kubo_rpc listen %q: %w", k.Listen, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("config: kubo_rpc listen %q: the port must be a number in 0..65535", k.Listen)
	}
	if n != 0 && (k.Listen == apiListen || k.Listen == gatewayListen) {
		return fmt.Errorf("config: kubo_rpc listen %s is the api's or the gateway's address too; give it a port of its own", k.Listen)
	}
	return nil
}

// ShardAboveBytes is ShardAbove in bytes ("" is the default, 64 MiB).
func (k KuboRPC) ShardAboveBytes() (int64, error) {
	if k.ShardAbove == "" {
		return 64 << 20, nil
	}
	n, err := ParseSize(k.ShardAbove)
	if err != nil {
		return 0, fmt.Errorf("config: kubo_rpc shard_above %q: %w", k.ShardAbove, err)
	}
	return n, nil
}

// validateRetention checks the settings that bound Raft's disk use. The
// limits are package consensus's (Config.Validate), named here as
// config.json names them.
func (c Consensus) validateRetention() error {
	const maxEntries = 1 << 24
	switch {
	case c.SnapshotInterval < Duration(5*time.Millisecond) || c.SnapshotInterval > Duration(24*time.Hour):
		return fmt.Errorf("config: consensus snapshot_interval %s is not in 5ms..24h", time.Duration(c.SnapshotInterval))
	case c.SnapshotThreshold < 1 || c.SnapshotThreshold > maxEntries:
		return fmt.Errorf("config: consensus snapshot_threshold %d is not in 1..%d", c.SnapshotThreshold, maxEntries)
	case c.TrailingLogs > maxEntries:
		return fmt.Errorf("config: consensus trailing_logs %d exceeds %d", c.TrailingLogs, maxEntries)
	case c.SnapshotsRetained < 1 || c.SnapshotsRetained > 100:
		return fmt.Errorf("config: consensus snapshots_retained %d is not in 1..100", c.SnapshotsRetained)
	case c.BackupsRetained < 0 || c.BackupsRetained > 100:
		return fmt.Errorf("config: consensus backups_retained %d is not in 0..100", c.BackupsRetained)
	}
	return nil
}

// CheckReplication validates a replication factor pair: each is -1 (every
// peer) or at least 1, and min <= max unless max is -1.
func CheckReplication(rmin, rmax int) error {
	switch {
	case rmin == 0 || rmin < -1:
		return fmt.Errorf("replication minimum %d: use -1 (every peer) or a count of at least 1", rmin)
	case rmax == 0 || rmax < -1:
		return fmt.Errorf("replication maximum %d: use -1 (every peer) or a count of at least 1", rmax)
	case rmin == -1 && rmax != -1:
		return fmt.Errorf("replication minimum -1 (every peer) needs maximum -1 too, not %d", rmax)
	case rmax != -1 && rmin > rmax:
		return fmt.Errorf("replication minimum %d is above the maximum %d", rmin, rmax)
	}
	return nil
}

// ParseOrigin checks an entry of api.allowed_origins and returns it as a
// browser sends it in an Origin header, which it is compared with: scheme
// and host in lower case, without the scheme's default port. "*" stays
// "*".
func ParseOrigin(s string) (string, error) {
	if s == "*" {
		return s, nil
	}
	bad := fmt.Errorf("origin %q: use SCHEME://HOST[:PORT] as a browser sends it (no path, no trailing slash), or * for any", s)
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Hostname() == "" || u.User != nil || u.Opaque != "" ||
		u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(s, "*#") {
		return "", bad
	}
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	port := u.Port()
	if port != "" && !validPort(port) {
		return "", bad
	}
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	if port != "" {
		host += ":" + port
	}
	return u.Scheme + "://" + host, nil
}

// ParseAllowedHost checks an entry of api.allowed_hosts, NAME or NAME:PORT
// (an IPv6 address in brackets when it has a port), and returns the name
// in lower case without a trailing dot, and the port ("" for any).
func ParseAllowedHost(s string) (host, port string, err error) {
	bad := fmt.Errorf("host %q: use NAME or NAME:PORT as a client sends it in the Host header, without scheme or path", s)
	if s == "" || strings.ContainsAny(s, "/@?#*%, \t") {
		return "", "", bad
	}
	host = s
	if h, p, serr := net.SplitHostPort(s); serr == nil {
		if !validPort(p) {
			return "", "", bad
		}
		host, port = h, p
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" || strings.ContainsAny(host, "[]") || (strings.Contains(host, ":") && net.ParseIP(host) == nil) {
		return "", "", bad
	}
	return host, port, nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535 && strconv.Itoa(n) == p
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// SecretBytes decodes the cluster secret.
func (c Config) SecretBytes() ([]byte, error) {
	b, err := hex.DecodeString(c.Secret)
	if err != nil || len(b) != 32 {
		return nil, errors.New("config: secret must be 32 bytes written as 64 hex digits")
	}
	return b, nil
}

// MemoryLimitBytes is the configured soft memory limit, 0 for none.
func (c Config) MemoryLimitBytes() (int64, error) {
	if c.MemoryLimit == "" || c.MemoryLimit == "0" {
		return 0, nil
	}
	n, err := ParseSize(c.MemoryLimit)
	if err != nil {
		return 0, fmt.Errorf("config: memory_limit: %w", err)
	}
	if n < 64<<20 {
		return 0, fmt.Errorf("config: memory_limit %s is below 64MiB", c.MemoryLimit)
	}
	return n, nil
}

// CapacityBytes is the configured capacity, or 0 for automatic.
func (c Config) CapacityBytes() (int64, error) {
	if c.Capacity == "" {
		return 0, nil
	}
	n, err := ParseSize(c.Capacity)
	if err != nil {
		return 0, fmt.Errorf("config: capacity: %w", err)
	}
	return n, nil
}

// ParseSize reads sizes written as 1048576, 100MiB, 1GiB, 2TB or 512KB
// (binary and decimal units, case-insensitive).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: expected a number with an optional unit such as MiB or GB", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	units := map[string]int64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1000,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1000 * 1000,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1000 * 1000 * 1000,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1000 * 1000 * 1000 * 1000,
	}
	mul, ok := units[strings.ToLower(strings.TrimSpace(t[i:]))]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB)", s, t[i:])
	}
	if n > (1<<63-1)/mul {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mul, nil
}

// Init creates a peer directory at dir with cfg, a new identity, and a new
// secret when cfg has none. It refuses a directory that holds a peer.
func Init(dir string, cfg Config) (peer.ID, error) {
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
		return "", fmt.Errorf("%s: %w", dir, ErrExists)
	}
	if cfg.Secret == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		cfg.Secret = hex.EncodeToString(b)
	}
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return "", err
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return "", err
	}
	keyBytes, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, IdentityFile), keyBytes); err != nil {
		return "", err
	}
	if err := Save(dir, cfg); err != nil {
		return "", err
	}
	return id, nil
}

// Save writes cfg as dir/config.json atomically.
func Save(dir string, cfg Config) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, ConfigFile), append(b, '\n'))
}

// Load reads and validates the peer directory at dir.
func Load(dir string) (Config, crypto.PrivKey, error) {
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return Config{}, nil, fmt.Errorf("%s: %w (run shoal init)", dir, ErrNoRepo)
	}
	if err != nil {
		return Config{}, nil, err
	}
	cfg := Default()
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
	}
	// A second object (a block pasted twice) would be silently ignored.
	if rest := strings.Trim(string(b[dec.InputOffset():]), " \t\r\n"); rest != "" {
		return Config{}, nil, fmt.Errorf("%s: data after the configuration object at byte %d; the file must hold one JSON object", filepath.Join(dir, ConfigFile), dec.InputOffset())
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
	}
	kb, err := os.ReadFile(filepath.Join(dir, IdentityFile))
	if err != nil {
		return Config{}, nil, fmt.Errorf("read identity: %w", err)
	}
	priv, err := crypto.UnmarshalPrivateKey(kb)
	if err != nil {
		return Config{}, nil, fmt.Errorf("%s is not a libp2p private key: %w", filepath.Join(dir, IdentityFile), err)
	}
	if err := checkKeyPair(priv); err != nil {
		return Config{}, nil, fmt.Errorf("%s is damaged: %w", filepath.Join(dir, IdentityFile), err)
	}
	return cfg, priv, nil
}

// checkKeyPair checks that priv's public key verifies its signatures. An
// Ed25519 key file holds its public half too, and a damaged one
// unmarshals: the peer would start under another peer ID and fail every
// handshake.
func checkKeyPair(priv crypto.PrivKey) error {
	probe := []byte("shoal identity check")
	sig, err := priv.Sign(probe)
	if err != nil {
		return fmt.Errorf("it cannot sign: %w", err)
	}
	if ok, err := priv.GetPublic().Verify(probe, sig); !ok || err != nil {
		return errors.New("its public key does not match its private key")
	}
	return nil
}

// WriteFileAtomic writes a 0600 file durably: a temporary file beside it,
// fsync, rename, fsync of the directory. A reader sees the old file or the
// whole new one, and after a crash the new one if it returned nil.
func WriteFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// DefaultDir is $SHOAL_PATH, else ~/.shoal.
func DefaultDir() string {
	if p := os.Getenv("SHOAL_PATH"); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".shoal"
	}
	return filepath.Join(home, ".shoal")
}
