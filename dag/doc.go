// Package dag builds UnixFS file DAGs whose blocks and root CID are
// identical to those Kubo's `ipfs add` (boxo's importer) produces for the
// same bytes and options.
//
// Glossary:
//
//   - chunk: a piece of the file cut by the chunker (size-N, rabin, buzhash).
//   - leaf: the block holding one chunk: the raw chunk (--raw-leaves) or a
//     dag-pb node wrapping a UnixFS Data message of type File (balanced) or
//     Raw (trickle), as boxo types them.
//   - internal node: a dag-pb node with links to its children and a UnixFS
//     File message carrying the total file size and each child's file size.
//   - Link: a child as its parent sees it: CID, Tsize (the child's block
//     plus everything below it) and the file bytes it covers.
//   - Params: resolved options. Options applies Kubo's implications (a
//     non-default hash implies CIDv1; CIDv1 implies raw leaves unless
//     --raw-leaves is given).
//
// The package does no I/O and starts no goroutines. Encoder.Leaf frames a
// chunk in place in a caller-owned buffer (LeafHeadroom bytes before it,
// LeafTailroom after) and hashes it; callers run it on as many goroutines
// as they like. BuildFile runs a layout on the caller's goroutine, pulling
// finished leaves in file order from a LeafSource and emitting each internal
// node after its children, so a DAG leaves the builder in post-order:
//
//	balanced, MaxLinks=3, 7 leaves        emitted order
//
//	            R                         L1 L2 L3 A L4 L5 L6 B L7 C R
//	       /    |    \
//	      A     B     C
//	    / | \ / | \   |
//	   L1 L2 L3 L4 L5 L6 L7
//
// The balanced layout replaces its root with a parent one level higher each
// time the tree fills; the trickle layout gives each node MaxLinks leaves,
// then four subtrees of each depth below its own. Both are written out on
// the functions that build them. Directories are not built here: the
// ingest package uses boxo's directory code, which is not on the hot path.
//
// Encoding facts that CID equality depends on, checked against boxo in
// ingest's tests: dag-pb links precede data; every link carries its Name,
// empty for file nodes; the UnixFS filesize field is always present, the
// data field only when the leaf has data.
package dag
