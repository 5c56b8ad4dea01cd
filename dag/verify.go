package dag

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/zeebo/blake3"
)

// ErrMismatch says a block's bytes do not hash to its CID.
var ErrMismatch = errors.New("content does not match its CID")

// Verify re-hashes data with the hash function of c's multihash and
// compares: nil when they match, ErrMismatch when they do not, CheckCID's
// error when c's hash is one shoal does not accept (a match of a weak or
// truncated digest proves nothing), another error when the multihash is
// malformed or its function unknown. SHA2-256 and BLAKE3-256 with full
// digests take fast paths that do not allocate; the others go through
// CheckCID and go-multihash's registry. Every reader of untrusted blocks
// (the store, shard transfers, reads from other peers) calls this.
func Verify(c cid.Cid, data []byte) error {
	h := []byte(c.Hash())
	dec, err := mh.Decode(h)
	if err != nil {
		return fmt.Errorf("malformed multihash: %w", err)
	}
	var ok bool
	switch {
	case dec.Code == mh.SHA2_256 && dec.Length == sha256.Size:
		d := sha256.Sum256(data)
		ok = bytes.Equal(d[:], dec.Digest)
	case dec.Code == mh.BLAKE3 && dec.Length == 32:
		d := blake3.Sum256(data)
		ok = bytes.Equal(d[:], dec.Digest)
	default:
		if err := CheckCID(c); err != nil {
			return err
		}
		if dec.Code == mh.IDENTITY {
			ok = bytes.Equal(data, dec.Digest)
			break
		}
		got, err := mh.Sum(data, dec.Code, dec.Length)
		if err != nil {
			return fmt.Errorf("cannot hash with multihash 0x%x: %w", dec.Code, err)
		}
		ok = bytes.Equal(got, h)
	}
	if !ok {
		return ErrMismatch
	}
	return nil
}
