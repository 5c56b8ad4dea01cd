// Package transfer moves a shard from the peer that ingests it to the
// peers allocated to it, over the gated libp2p protocol /shoal/shard/1,
// while the shard is being cut: no peer ever holds a whole shard in memory.
//
// Glossary:
//
//   - sender: the ingesting peer. Its Fanout is the shard.Writer the
//     shard.Cutter writes one shard into.
//   - target: where a Fanout writes the shard: a remote peer (one stream)
//     or, when the ingesting peer is itself allocated, its own store.
//   - receiver: a peer's Server, which verifies each block against its CID,
//     writes the shard into its store.Store under the key of the shard's
//     root CID string, fsyncs it (store Commit), and only then confirms.
//   - confirmed: a target answered OK, so the shard is durable there. The
//     caller records confirmed targets as the shard's allocations.
//
// # Why fan-out from the sender, not a chain
//
//	        sender (has every byte anyway)
//	     /      |       \
//	peer A    peer B    local store          (one hop each, in parallel)
//
// A chain (sender -> A -> B) would halve the sender's uplink, but it adds a
// hop of latency per replica, makes A's speed and health B's, and a dead A
// loses the shard for everyone behind it. Fanning out, the data crosses one
// hop, a slow or dead receiver only fails its own copy (the caller can send
// the shard again elsewhere), and the sender needs no other peer to relay.
// The cost is that the sender's uplink carries r copies; on one machine or
// on loopback that cost is CPU (each copy is encrypted). PERF.md measured
// ~380 MB/s for a prototype sending 2 replicas to loopback peers.
//
// # Protocol /shoal/shard/1
//
//	sender                                              receiver
//	  | version=1  uvarint(maxSize)                ---->  | room check: Free() minus the
//	  |                                                   | shards being received >= maxSize?
//	  | <----  answer: status 0 (go on) | 1 + reason      | (refused before any data)
//	  |                                                   |
//	  | block frame: uvarint(len(cid)) cid                |
//	  |              uvarint(len(data)) data       ---->  | check hash, store.Writer.Put
//	  | ... one frame per block, in stream order ...      |
//	  |                                                   |
//	  | end frame:  0x00                                  |
//	  |   uvarint(index) uvarint(len(root)) root          |
//	  |   uvarint(size) uvarint(blocks)                   |
//	  |   uvarint(offset) uvarint(length)                 |
//	  |   uvarint(#nodes) #nodes x block frame     ---->  | list tree names exactly the
//	  |   (list nodes, children first, root last)         | blocks received, in order? each
//	  |                                                   | node hashed, copies identical? size
//	  |                                                   | and count right? Put the nodes,
//	  |                                                   | Commit (fdatasync, rename)
//	  | <----  answer: status 0 (stored) | 1 + reason     |
//
//	answer = status byte, uvarint(len(reason)), reason (one sentence, <= 1 KiB)
//
// A CID is never empty, so a zero CID length ends the blocks. The receiver
// may answer an error at any time (a corrupt block, a full disk); it then
// closes the stream, and the sender, which reads answers on a goroutine of
// its own, resets it. A shard's size is counted as shard.Info.Size counts
// it: the CAR sections (varint, CID, data) of its blocks and list nodes.
//
// What the receiver confirms passes its own store.Verify: every section
// hashes to its CID. Each block is hashed as it arrives. The list nodes
// are the nodes of the tree under the root, each sent exactly as often as
// the tree names it (identical runs of blocks give identical nodes): the
// walk from the root hashes one copy of each, and every other copy must be
// the same bytes, or the shard is refused ("node ... was sent twice with
// different bytes"); a node the tree does not name is refused too. A block
// may come more than once (the list names each occurrence, and readers
// stream a shard in stored order); a repeated block is hashed like any
// other, so its copies are identical. Duplicates are stored as sent, as
// the sender's own copy stores them, so that a receiver's file is the
// sender's, byte for byte (a store holding a shard under its key commits
// another copy only if it is the same file, else store.ErrExists).
//
// Limits on everything a receiver reads, so that a hostile member can make
// it allocate or write only bounded amounts: a CID is at most 128 bytes, a
// block at most 8 MiB (a CAR section's limit), a list node at most what
// shard.MaxLinks links of such CIDs take, the list nodes together at most
// 300 bytes per block received (plus 16 blocks' worth), the number of nodes
// at most the blocks received plus 16, and all sections at most the
// announced maxSize, itself within the receiver's free space. A list node
// is walked at most as often as it was sent, so a hostile tree that names
// one node many times cannot make the check expand it. A Server receives at most
// Server.MaxConcurrent shards at once, and a stream that makes no progress
// for Server.IdleTimeout is dropped. Any failure aborts the store.Writer:
// nothing partial stays on disk.
//
// # Sender
//
//	Put --copy into a pooled frame--+--> queue A (8 frames) --> goroutine A --> stream A
//	    (one copy, shared by        +--> queue B (8 frames) --> goroutine B --> stream B
//	     every queue, refcounted)   +--> store.Writer.Put (the caller's goroutine)
//
// Each remote target has a goroutine that writes its queue to its stream and
// one that waits for the receiver's answer. Put blocks while the slowest
// live target's queue is full, so the sender holds at most queueDepth+2
// frames whatever the shard size and the number of peers (the slowest
// target holds at most its queue and the frame it writes; every other frame
// in flight is newer). A target that fails is dropped and the others go on;
// Commit reports each target's outcome (Result) and the caller decides
// whether the shard has enough copies.
//
// # Throughput
//
//	go test -run '^$' -bench BenchmarkFanout -benchtime 3x -count 2 ./transfer/
//
// sends a 256 MiB shard of 256 KiB blocks; figures are shard bytes per
// second (each peer receives all of them) and, steadier on a shared
// machine, shard bytes per CPU-second of the process, which holds both
// ends. On the 2-core machine of PERF.md while other jobs ran (load
// average 11-13):
//
//	                       MB/s       MB/cpu-s   reference in the same run
//	local store only       940-1,070  3,700-4,000
//	1 peer                 130-264    332-378    bare stream: 227-485 MB/s, 540-600 MB/cpu-s
//	2 peers                64         169-172    2 bare streams: 92-125 MB/s, 280 MB/cpu-s
//	2 peers + local store  68-88      155-159
//
// A peer costs about 1.6 times the CPU of a bare Noise stream (the
// receiver hashes every block and copies it into its store), and two peers
// cost twice one. On an idle machine PERF.md measured one bare stream at
// ~1,180 MB/s.
//
// Using it, per shard:
//
//	f, err := transfer.NewFanout(ctx, host, peers, localStoreOrNil, maxSize)
//	// f.Result() already names the peers that refused (no room, busy).
//	for each block { f.Put(ctx, b) }   // or hand f to a shard.Cutter
//	err = f.Commit(ctx, info, nodes)   // nil: every target confirmed
//	res := f.Result()                  // who confirmed, who failed and why
//
// and on every peer:
//
//	srv := &transfer.Server{Store: st, Free: free}
//	host.Handle(transfer.Protocol, srv.Handle)
package transfer
