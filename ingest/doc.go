// Package ingest turns a byte stream, a file or a directory tree into a
// UnixFS DAG (package dag) and hands its blocks to a Sink.
//
// The pipeline of one file:
//
//	reader --> chunker goroutine --work--> N hashing workers
//	              |                            | (close job.done)
//	              +--------order (file order)--+--> builder (caller's goroutine)
//	                                                  | BuildFile: layout, internal nodes
//	                                                  v
//	                                                 Sink.Put, one block at a time
//
// The chunker fills buffers taken from a fixed pool, so memory is bounded by
// Buffers x (largest chunk + framing), whatever the size of the input. The
// builder consumes leaves strictly in file order, emits each one as it links
// it, and returns its buffer to the pool once Sink.Put returns.
//
// Block order, which sinks may rely on (a shard writer cuts this stream):
// a file's blocks leave in DAG post-order: leaves in file order, each
// internal node right after its last child, the file's root last. A
// directory's entries leave in name order, each entry's blocks complete
// before the next entry starts, and the directory's own node (or its HAMT
// shard nodes, children first) after all its entries. The order depends
// only on the input and the options, never on scheduling.
//
// Goroutines: File starts the chunker and the workers and waits for all of
// them before it returns, also on error or cancellation. A cancelled context
// stops the chunker at its next read or buffer wait; File then returns the
// context's error, or the read error that caused the stop.
package ingest
