package dag

import "github.com/ipfs/go-cid"

// Block is one encoded IPLD block: its CID and the exact bytes the CID hashes.
//
// A Block handed to a Sink is only valid for the duration of the call: the
// pipeline reuses Data's backing array afterwards. Copy what you keep.
type Block struct {
	CID  cid.Cid
	Data []byte
	// FileBytes is how many bytes of the file this block carries: the
	// chunk's length for a leaf, 0 for an internal node. Summed over a run
	// of blocks it gives the byte range of the file they cover.
	FileBytes uint64
}
