// Package cluster is the shoal daemon: the one place that wires a peer's
// libp2p host (package p2p), Raft consensus (consensus), local store
// (store), shard transfers (transfer) and REST API (api) together, and the
// side effects consensus must not have.
//
// Glossary:
//
//   - Peer: a running daemon (Start, Close).
//   - backend: the api.Backend the REST API serves; it reads the state,
//     allocates (package allocate) and commits ops.
//   - tracker: the per-peer reconciler. Each round it compares what the
//     state says this peer should hold (plain pins allocated here, shards
//     of sharded pins and of adds in progress allocated here) with the
//     store's keys, fetches missing plain pins from holders, and deletes
//     keys nothing wants. Keys being written by an add are protected until
//     the state records them or the add ends.
//   - unknown shards (unknown.go): what the store held when this peer's
//     state began (state cleanup or import, a new cluster). The tracker
//     keeps them whatever the state says, until it wants them here or
//     `shoal state prune` (Offline.DeleteUnknown) deletes them.
//   - sharded add (shardadd.go): ingest -> shard.Cutter -> one
//     transfer.Fanout per shard -> consensus ops begin / shard / commit.
//   - reads (read.go, readahead.go) and exports (export.go): cat/get
//     stream a file's bytes, two shards fetched at once into bounded
//     queues and written in order; export streams its whole DAG as a CARv1
//     file; from this peer's store or the holders, every block checked
//     against its CID by the reading peer.
//   - ipfs.go: the trustless gateway (gateway.listen; package ipfsserve)
//     reads pinned DAGs through ipfsCluster: the pinset, the store, and
//     other members' blocks over /shoal/read/1.
//   - reaper: aborts adds that can never finish (owner restarted, left, or
//     unreachable past pinning.abandoned_add_grace; interrupted by their
//     client and not resumed within pinning.resume_grace); only the
//     leader reaps others' adds.
//   - rebalance (rebalance.go): moves parts from the fullest live peer to
//     the emptiest, copy first, then drop the old holder.
//   - monitor (monitor.go): heartbeats with metrics; repairer (repair.go):
//     the leader re-allocates parts whose live holders fell below rmin;
//     drain (drain.go): the same ops empty a peer before its removal.
//   - verification (verify.go): re-hashes stored parts on demand and every
//     health.verify_interval; a damaged part is quarantined and the
//     tracker fetches it again. trackerctl.go: recover and sync.
//
// Peer-to-peer protocols, all gated by membership (package p2p):
//
//	/shoal/info/1     name, addresses, capacity, used, free
//	/shoal/status/1   this peer's state of some pins and shards
//	/shoal/fetch/1    a whole DAG in pre-order (plain pins)
//	/shoal/shard/1    a shard, as it is cut (package transfer)
//	/shoal/read/1     a stored shard, list first, for cat/get
//	/shoal/addrs/1    addresses this peer knows of another
//	/shoal/removed/1  "you were removed from the cluster"
//	/shoal/wanted/1   which store keys the leader's state still wants
//	/shoal/have/1     which of some CIDs this peer stores
//	/shoal/metrics/1  a heartbeat with this peer's metrics
//	/shoal/verify/1   verify the parts this peer stores (long: 6 h bound)
//	/shoal/tracker/1  retry failures now (recover) or walk everything (sync)
//
// Every stream has deadlines, and the streaming ones a cap (limits.go):
// fetch and read answer their request within 5 s, then each read and
// write must progress within 30 s or the stream is reset; a peer serves
// at most 16 fetches and 32 reads at once and refuses more as "busy". The
// JSON RPCs have one deadline each (rpcTimeout, or their own).
//
// Goroutines: Start runs the tracker (once the state has caught up with
// the log the peer started with: consensus.CaughtUp), the monitor, the
// repairer, the periodic verification, the membership watch, the peerstore
// saver and the reaper, each until Close, which stops the API first, then
// them, then consensus, the host and the store, and waits for all.
package cluster
