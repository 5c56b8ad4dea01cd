// Package ipfsserve serves the content the cluster pins to IPFS clients,
// and nothing else: a block Source confined to pinned DAGs, a trustless
// HTTP Gateway over it (boxo's gateway handler), and a Bitswap server
// over one (boxo's bitswap server, on the IPFS-facing host of package
// p2p's NewPublic), and, opt-in, a Provider that announces the pinned
// roots to the IPFS DHT as a DHT client (provide.go).
//
// # Glossary
//
//   - Cluster: what the Source reads through (package cluster implements
//     it over a running peer): the local pinset, the local store, and
//     other members' stores over /shoal/read/1 ("block CID").
//   - Source: the blocks of pinned DAGs, from the local store, a bounded
//     cache of blocks fetched from other peers, or those peers. One per
//     gateway, shared by its requests.
//   - Reader: one request's view of the Source, rooted at a pin's root.
//   - span: the file bytes [from, to) a block of a sharded file covers.
//   - Gateway: GET /ipfs/{cid}[/path] as the trustless gateway spec has it:
//     ?format=raw (application/vnd.ipld.raw), ?format=car
//     (application/vnd.ipld.car, with dag-scope and entity-bytes), and,
//     with Deserialized, files as bytes (with Range) and directory
//     listings.
//
// # What is served
//
// A request's root, the first segment of its path, must be the root of a
// pin: a plain pin (its whole DAG, any layout, directories included) or a
// sharded pin (its file's UnixFS DAG). Any other CID is 404: a CID nothing
// pins, a shard (the root of its list nodes), a sharded pin's cluster-DAG,
// and a block inside a pinned DAG asked for by its CID alone. Shoal's list
// nodes are bookkeeping, dag-cbor, linked from no file DAG, so no request
// ever reaches them. Every other block a request reads is reached from its
// root through links:
//
//	HTTP request /ipfs/ROOT/...
//	   -> backend: ROOT pinned? no: 404; yes: Reader(ROOT) into the context
//	   -> boxo's BlocksBackend: resolves the path, walks the DAG, writes
//	      the CAR or the bytes, asking its blockstore for each link
//	   -> readerStore.Get(ctx, c): Reader(ROOT).Block(ctx, c); without a
//	      Reader in the context, nothing
//
// boxo only ever asks for the root and for CIDs that blocks it got link
// to, so a request cannot read outside its pin's DAG, whatever its path
// and parameters. The Reader checks again every second (pinCheckEvery)
// that its root is still pinned, so an unpin also ends the reads in
// flight; a new request sees it as soon as this peer's state does
// (milliseconds on a follower in contact with the leader).
//
// Blocks inside a pinned DAG by CID alone (what some trustless clients
// ask /ipfs/BLOCK?format=raw for) are 404 here; bitswap serves some of
// them (see "Bitswap"), the rest need a cluster-wide block index ("Next").
//
// # Finding a block
//
// Block looks, in order, in the cache, in this peer's store (whose
// in-memory index names every block of every local shard and plain pin),
// then asks other peers, each block checked against its CID by the
// reader (/shoal/read/1's client hashes what it gets; the store hashes on
// Get). Which peers: for a plain pin, its allocations; for a sharded file,
// the holders of the shards that can hold the block. A sharded file's
// blocks are stored in the ingest's post-order, leaves in file order and
// each internal node right after its last leaf, and every shard records
// the bytes its leaves cover, [Offset, Offset+Length). A block covering
// [from, to) therefore lies in a shard whose range holds to, both ends
// included (shardsEnding):
//
//	blocks in stored order, fan-out 2, leaves of one byte each:
//	shard 0 [l0 l1 n0 l2 l3]     Offset 0, Length 4
//	shard 1 [n1 l4 l5 n2 root]   Offset 4, Length 2
//	n0 = l0..l1 covers [0, 2): 2 is inside shard 0's [0, 4]
//	n1 = l2..l3 covers [2, 4): 4 is in [0, 4] and [4, 6]: shard 0 or 1
//	        (here 1: the shard was cut right after l3)
//	root covers [0, 6): the last shard
//
// The Reader learns the spans as it goes: the root covers the whole file,
// and each dag-pb node it returns names its children's sizes (UnixFS
// blocksizes), so each child's span is known before boxo asks for it.
// Spans are forgotten once used: a depth-first walk holds at most depth x
// fan-out of them (4 x 174 for 1 TiB of 256 KiB blocks), bounded by
// maxSpans. A block without a known span (one asked twice, past the
// cache) is asked of every member; the last one that served goes first.
// This is why the first increment needs no block index: a gateway request
// always starts at a root, and the walk from it gives every block's
// shard.
//
// It follows that a range costs its covering blocks only: an
// entity-bytes CAR holds the root, the internal nodes on the way down and
// the leaves that meet the range; a deserialized Range request reads the
// same plus at most boxo's preload window of 10 sibling leaves and the
// first leaf (content-type sniffing). Nothing reads the whole file.
//
// # Limits and cost
//
//   - Remote fetches: at most SourceConfig.Fetches (8) at once for all
//     requests, a quarter of a holder's 32 read slots, so public load
//     leaves cat, export and repairs room. Each remote block is one
//     /shoal/read/1 stream (one round trip). A whole-DAG walk (a CAR of
//     dag-scope=all, written by dagCAR in car.go; a bitswap client)
//     turns on Reader.ReadAhead: the readAhead (8) blocks the walk asks
//     for next are fetched into the cache meanwhile, on goroutines that
//     end with their fetch.
//   - Shard streams: a whole-file CAR of a sharded pin also turns on
//     Reader.StreamShards: its leaves come from whole-shard streams
//     (Cluster.Shard, the read path of cat and export), the shard the
//     walk is in and the next, each with a buffer of feedBytes (8 MiB);
//     internal nodes are still fetched one by one, ahead (feed.go). At
//     most maxFeeds (8) streams for all requests; a walk without one,
//     or whose stream fails, reads block by block.
//   - Cache: SourceConfig.CacheBytes (32 MiB) of remote blocks, least
//     recently used out; local blocks are not cached (the page cache
//     holds them).
//   - Requests: 128 at once (gatewayRequests), more get 429. boxo's CAR
//     writer keeps the CIDs it wrote (order=dfs, dups=n), about 100 bytes
//     a block for the request's life: 400 MiB for a whole-file CAR of 4
//     Mi blocks. An entity-bytes CAR of a range keeps only its blocks.
//   - Time: boxo's RetrievalTimeout (30 s without progress) and the read
//     protocol's deadlines (5 s to answer, 30 s idle).
//
// # Goroutines
//
// The Gateway's serve goroutine, one goroutine per request (net/http),
// and for each CAR request but a whole-DAG one boxo's traversal goroutine
// writing a pipe that the request's goroutine copies to the client (a
// whole-DAG CAR walks on the request's goroutine). A read-ahead fetch
// runs on a goroutine of its own, bounded by readAhead per walk and by
// the Source's fetch tokens; a shard stream's feed runs on one of its own
// (feed.go) until its shard's last leaf, its request's end or the walk
// leaving its shard, bounded by the Source's maxFeeds tokens; the bitswap
// server's workers are boxo's. The Source owns no other; its Block runs
// on the caller's goroutine, concurrently. Close stops accepting, lets
// requests finish for 2 s, cancels the rest through their base context
// (resetting their /shoal/read/1 streams), and waits for
// every Block and feed in flight.
//
// # Bitswap
//
// A want names a block by CID, with no root, so the Bitswap server's
// blockstore (bitswapStore) confines itself: it serves a pin's root, any
// link of a block it served (a route: the link's root and, in a sharded
// file, its span; at most maxRoutes, oldest out), and a block that this
// peer's store holds in a part of a pin (Cluster.Holding: a plain pin's
// part, or a shard of a sharded pin when the block is dag-pb or raw, so
// never a list node or a cluster-DAG). Everything else is ErrNotFound,
// which the server answers DONT_HAVE; its request filter asks the same
// question first, without reading. A client walking from the root (`ipfs
// cat`) meets only served links, whose routes give each block's shard as
// a gateway request's spans do. A route outlives nothing: its root's
// Reader rechecks the pin every pinCheckEvery, so an unpin stops the
// serving of its blocks within a second. The server's workers call the
// blockstore concurrently; want-have (GetSize) reads the block as
// want-block (Get) does, and the Source's cache serves the second read of
// a remote one.
//
// # Next (issue 15)
//
// Raw requests for inner blocks, and bitswap wants for blocks of another
// peer's shard not reached from the root here, ask by block CID without a
// root, so they need a per-peer index from block CID to the shard or
// plain pin that holds it, kept within bounds for 10^8 blocks.
// The store's in-memory index (about 111 bytes a block) would take 11 GB
// there. The plan is an on-disk table of fixed-size records sorted by
// digest: an 8-byte prefix of each block's multihash digest and a 4-byte
// shard ordinal, 12 bytes a block (1.2 GB on disk for 10^8). In memory it
// needs only a fence index: the first prefix of each 4 KiB page, 16 bytes
// a page, about 5 MB for 10^8 blocks. A lookup is one page read and a
// binary search, then the store confirms the full CID. A prefix collision
// costs one more store read. New shards add a small sorted run that a
// background merge folds in. On start the table is rebuilt from the
// shards' own CARv2 indexes, which are already sorted by multihash: a
// k-way merge, no hashing. A hit names a store key; the pinset says
// whether it belongs to a pin (State.ShardOwner for a shard, the key
// itself for a plain pin), which is the request filter bitswap needs.
// Blocks this peer does not hold are then found by asking the peers that
// hold the pin's shards (/shoal/have/1 in batches), cached per session.
package ipfsserve
