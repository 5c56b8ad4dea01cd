package dag

import (
	"errors"
	"fmt"

	"github.com/ipfs/boxo/verifcid"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// cidPolicy says which multihashes a CID may use: boxo's verifcid default
// allowlist (the one Kubo and boxo's blockservice enforce) without sha1,
// which it keeps only for git objects and whose collisions are practical
// (SHAttered, 2017). Digests must hold 20 to 128 bytes; identity CIDs
// (--inline) are exempt from the minimum and hold at most 128 bytes, above
// the 127 of the largest --inline-limit. Every --hash that `shoal add`
// offers (sha2-256, sha2-512, blake3) is allowed. It is never modified.
var cidPolicy = verifcid.NewOverridingAllowlist(verifcid.DefaultAllowlist, map[uint64]bool{mh.SHA1: false})

// CheckCID refuses a CID whose hash function or digest length could let
// someone forge its content: a weak function (md5, sha1, murmur3, ...) or
// a digest cut short (a 1-byte sha2-256 digest is matched by one block in
// 256). Every CID that comes from a user (the API, the CLI, a state
// import) or from a peer (ops, shard lists, protocol requests and replies)
// goes through here, and Verify checks it before it hashes.
func CheckCID(c cid.Cid) error {
	if !c.Defined() {
		return errors.New("the CID is empty")
	}
	err := verifcid.ValidateCid(cidPolicy, c)
	if err == nil {
		return nil
	}
	pref := c.Prefix()
	switch {
	case errors.Is(err, verifcid.ErrPossiblyInsecureHashFunction):
		return fmt.Errorf("CID %s uses hash %s, which shoal does not accept (insecure)", c, hashName(pref.MhType))
	case errors.Is(err, verifcid.ErrDigestTooSmall):
		return fmt.Errorf("CID %s has a %d-byte %s digest, which is too short (at least %d bytes)",
			c, pref.MhLength, hashName(pref.MhType), cidPolicy.MinDigestSize(pref.MhType))
	case errors.Is(err, verifcid.ErrDigestTooLarge):
		return fmt.Errorf("CID %s has a %d-byte %s digest, which is too long (at most %d bytes)",
			c, pref.MhLength, hashName(pref.MhType), cidPolicy.MaxDigestSize(pref.MhType))
	}
	return fmt.Errorf("CID %s is not accepted: %v", c, err)
}

// hashName is the multihash table's name of code, or its number.
func hashName(code uint64) string {
	if name, ok := mh.Codes[code]; ok {
		return name
	}
	return fmt.Sprintf("0x%x", code)
}
