// Package shard cuts a DAG's block stream into shards and describes them
// with list nodes. It does no I/O: where a shard's blocks go is the
// caller's Writer, and how big a shard may be is the caller's Opener
// (which asks the allocator).
//
// Glossary:
//
//   - shard: a run of consecutive blocks of the ingest pipeline's stream
//     (package ingest documents the order), stored and verified together on
//     each peer it is allocated to. Its size is counted as the CAR sections
//     its blocks and list nodes take in a store.
//
//   - list node: a dag-cbor node {"d": depth, "k": kind, "l": [CIDs], "v": 1}.
//     A shard's list (kind "shard") names its blocks in stream order; a
//     file's cluster-DAG (kind "cluster") names its shards' roots in order.
//     A list longer than MaxLinks (8192) becomes a tree (picture below).
//
//   - Info: what a sharded pin records of a shard: index, root CID, size,
//     block count and the byte range of the file its leaves cover. Block
//     CIDs stay in the list nodes on the peers, never in Raft.
//
// A list tree, each node holding at most 8192 links, the items in order:
//
//	         list d=1
//	       /    |     \
//	list d=0  list d=0  list d=0
//	b1..b8192 b8193..   ..bN
//
// The Cutter is an ingest.Sink. When a block would push the open shard past
// the limit its Opener gave, it builds the shard's list tree, commits it
// through the Writer (which returns once the shard is safe), and opens the
// next shard, whose limit may differ (the smallest free space among the
// peers allocated to it). A block that does not fit an empty shard is an
// error (ErrBlockTooBig) before anything of it is sent. Memory holds the
// open shard's CIDs and one Info per shard, never block data.
//
// Verifying a shard means reading its list tree from the root and hashing
// every block it names (ReadList verifies each list node it reads).
package shard
