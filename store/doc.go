// Package store is a peer's durable local block storage. Blocks are grouped
// in shards, and each shard is one CARv2 file with an index, so that go-car
// and Kubo's `ipfs dag import` read it as it lies on disk.
//
// # Glossary
//
//   - block: a CID and the bytes it hashes (dag.Block).
//   - shard: a group of blocks written, committed and verified together,
//     stored as one file and named by a key the caller chooses (a CID string,
//     say). Committed shards are immutable; they are only ever deleted whole.
//   - section: one block as a CAR stores it: varint(len(cid)+len(data)) cid data.
//   - index: the shard file's list of (multihash, section offset), sorted by
//     multihash, in go-car's car-multihash-index-sorted encoding.
//
// # Usage
//
//  1. Open(dir) locks the directory, checks its VERSION and loads every
//     shard's index. Quarantined lists shard files it had to move aside.
//  2. Create starts a Writer; one goroutine calls Put for each block, then
//     Commit(ctx, key, root). When Commit returns, the shard is durable and
//     its blocks are visible to Has and Get. Abort, or any failed Commit,
//     discards it. Every Writer ends with Commit or Abort.
//  3. Has, Get, Shards, Used, OpenShard, OpenShardUnchecked, Verify and
//     Delete may be called from any goroutine, concurrently with writers and
//     with each other. Get and ShardReader check every block they read
//     against its CID; damage is reported as a *CorruptError (ErrCorrupt)
//     naming shard and CID. A ShardReader of OpenShardUnchecked checks the
//     file's structure only, for a caller that hashes every block itself.
//  4. Close releases the lock.
//
// # Directory
//
//	dir/
//	  VERSION            "shoal-store 1\n": FormatVersion; Open refuses others
//	  LOCK               flock(LOCK_EX) held while a Store is open; the kernel
//	                     drops it when the process dies, so it is never stale
//	  shards/<key>.car   committed shards
//	  tmp/               shards being written; Open empties it
//	  corrupt/           shard files Open could not load, moved here
//
// # Shard file, format version 1
//
//	0       11               51              dataOffset         4096
//	+-------+----------------+---------------+------------------+
//	|pragma | CARv2 header   | zero padding  | CARv1 header     |
//	|0a a1  | characteristics|               | varint(n) DAG-   |
//	|67 ... | (16, Hi=0x80:  |               | CBOR {roots:     |
//	|"ver-  | fully indexed) |               | [root],          |
//	|sion"02| dataOffset  u64|               | version: 1}      |
//	|       | dataSize    u64|               |                  |
//	|       | indexOffset u64|               |                  |
//	+-------+----------------+---------------+------------------+
//	4096                                         indexOffset      EOF
//	+--------------------------------------------+---------------+
//	| section | section | ... | section          | index         |
//	+--------------------------------------------+---------------+
//	  section = varint(len(cid)+len(data)) cid data
//
//	dataOffset  = 4096 - len(CARv1 header)       (the header ends at 4096)
//	dataSize    = len(CARv1 header) + bytes of sections
//	indexOffset = 4096 + bytes of sections       (right after the data)
//
// All integers of the CARv2 header and index are little-endian. The index
// is varint(0x0401) int32(#hash codes), then per code in ascending order:
// uint64(code) int32(#widths), then per width in ascending order:
// uint32(width = digest length + 8) int64(bytes) and records of digest ||
// uint64(offset of the section from dataOffset), sorted by digest. It lists
// every section, identity CIDs included, which the "fully indexed"
// characteristic says; section lengths are then the gaps between offsets,
// so loading the index needs no read of the sections.
//
// The first page is written last: the root is known only at Commit, but the
// blocks start at the fixed offset 4096, so they can be written from the
// start, page-aligned, with O_DIRECT.
//
// A shard without an index, or with an index of another codec or not
// marked fully indexed, is loaded by scanning its section headers. Changing
// any byte of the format requires bumping FormatVersion and the golden
// digest in TestGolden.
//
// # Writing
//
//	Put --copy--> [buffer A]  --full--> flusher goroutine --pwrite, O_DIRECT--> tmp/shard-*.car
//	    <-------- [buffer B]  <-written--
//
// A Writer copies sections into two 4096-aligned 4 MiB buffers; its own
// goroutine writes a full buffer with O_DIRECT while Put fills the other.
// PERF.md measured 1.0-1.2 GB/s for O_DIRECT 4 MiB writes against
// 0.26-0.45 GB/s through the page cache with fdatasync. A filesystem that
// refuses O_DIRECT (EINVAL) gets plain writes. Commit appends the index,
// writes the padded tail and the header page, truncates the padding,
// fdatasyncs, renames the file into shards/ and fsyncs shards/. After a
// crash a shard is therefore either whole, indexed and in shards/, or absent
// (its temporary file is deleted by the next Open).
//
//	go test -run '^$' -bench BenchmarkWriter -benchtime 5x ./store/
//
// gave 1,190-1,520 MB/s with 4 MiB buffers (the default) and 590-1,320 MB/s
// with 8 MiB, against 460-910 MB/s for the reference in the same runs (the
// same bytes written through the page cache in 4 MiB writes, then
// fdatasync): 256 MiB shards of 256 KiB blocks, Commit included, on the
// 2-core machine of PERF.md while other jobs ran (load average ~9).
//
// # Reading
//
// A ShardReader (OpenShard) reads the blocks through a second descriptor
// opened with O_DIRECT, in aligned 1 MiB reads into two pooled aligned
// buffers, its own goroutine reading one ahead while Next hashes the
// other. Shards are written past the page cache, so a buffered first read
// would be a cold one that allocates page-cache pages: ~2 s of system time
// per GiB on the VMs of PERF.md, against ~0.1 s direct.
//
//	go test -run '^$' -bench BenchmarkShardReader -benchtime 5x ./store/
//
// gave 732-1,175 MB/s against 649-660 MB/s buffered (a 256 MiB shard
// dropped from the page cache before each read; load average ~4-5).
// Headers, the index and Get read through the page cache.
//
// # Memory
//
//   - A Writer holds its two buffers (8 MiB) whatever the shard size, plus a
//     24-byte index entry per block until Commit, which builds the index in
//     memory (about 0.6 KB allocated per block, released after).
//   - The Store keeps, for every stored block, its multihash as a map key and
//     its location: about 111 bytes per sha2-256 block (TestIndexMemory),
//     so 4 Mi blocks (1 TiB of 256 KiB blocks) take about 450 MiB. A block
//     stored in several shards costs one more location per copy. Open reads
//     each shard's index once; Get opens the shard file per call, so the
//     number of open files does not grow with the number of shards.
//   - ShardReader reuses one section buffer (at most 8 MiB) and two 1 MiB
//     read buffers (a 256 KiB read-ahead where O_DIRECT is refused).
//
// Limits: a section (CID + data) is at most 8 MiB, go-car's default, so that
// every reader of CARs accepts our shards. A shard has exactly one root.
package store
