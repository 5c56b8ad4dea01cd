package dag

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// mhCID is a raw CIDv1 whose multihash is code over a digest of n bytes.
func mhCID(t *testing.T, code uint64, n int) cid.Cid {
	t.Helper()
	h, err := mh.Encode(bytes.Repeat([]byte{0xab}, n), code)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

func TestCheckCID(t *testing.T) {
	v0, err := cid.Decode("QmdSaj6ufqXz4byUKYGoeZ2gohe4K7H74eeqsWjw49vkUQ")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    cid.Cid
		err  string // after "CID <c> "; "" for accepted
	}{
		{"cidv0", v0, ""},
		{"sha2-256", mhCID(t, mh.SHA2_256, 32), ""},
		{"sha2-512", mhCID(t, mh.SHA2_512, 64), ""},
		{"blake3", mhCID(t, mh.BLAKE3, 32), ""},
		{"sha2-256 cut to 20 bytes", mhCID(t, mh.SHA2_256, 20), ""},
		{"identity, empty", mhCID(t, mh.IDENTITY, 0), ""},
		{"identity, the largest --inline-limit", mhCID(t, mh.IDENTITY, 127), ""},
		{"identity, 128 bytes", mhCID(t, mh.IDENTITY, 128), ""},
		{"identity, 129 bytes", mhCID(t, mh.IDENTITY, 129), "has a 129-byte identity digest, which is too long (at most 128 bytes)"},
		{"md5", mhCID(t, mh.MD5, 16), "uses hash md5, which shoal does not accept (insecure)"},
		{"sha1", mhCID(t, mh.SHA1, 20), "uses hash sha1, which shoal does not accept (insecure)"},
		{"murmur3", mhCID(t, mh.MURMUR3X64_64, 8), "uses hash murmur3-x64-64, which shoal does not accept (insecure)"},
		{"unknown hash", mhCID(t, 0x300000, 32), "uses hash 0x300000, which shoal does not accept (insecure)"},
		{"sha2-256 cut to 1 byte", mhCID(t, mh.SHA2_256, 1), "has a 1-byte sha2-256 digest, which is too short (at least 20 bytes)"},
		{"sha2-256 cut to 19 bytes", mhCID(t, mh.SHA2_256, 19), "has a 19-byte sha2-256 digest, which is too short (at least 20 bytes)"},
		{"blake3 of 129 bytes", mhCID(t, mh.BLAKE3, 129), "has a 129-byte blake3 digest, which is too long (at most 128 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckCID(tt.c)
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.err == "":
			case err == nil:
				t.Fatalf("accepted, want %q", tt.err)
			case err.Error() != "CID "+tt.c.String()+" "+tt.err:
				t.Fatalf("error %q, want %q", err, "CID "+tt.c.String()+" "+tt.err)
			}
		})
	}
	if err := CheckCID(cid.Undef); err == nil || err.Error() != "the CID is empty" {
		t.Fatalf("empty CID: %v", err)
	}
}

// TestVerifyRefusesWeakCIDs: a CID with a 1-byte sha2-256 digest is
// matched by one block in 256, so a forger finds one in a few hundred
// tries; Verify refuses it rather than report a match. The same for a hash
// that is broken (md5).
func TestVerifyRefusesWeakCIDs(t *testing.T) {
	genuine := []byte("the genuine block")
	h, err := mh.Sum(genuine, mh.SHA2_256, 1)
	if err != nil {
		t.Fatal(err)
	}
	short := cid.NewCidV1(cid.Raw, h)
	var forged []byte
	for i := 0; forged == nil; i++ {
		cand := []byte{byte(i), byte(i >> 8), 'f', 'o', 'r', 'g', 'e', 'd'}
		if g, _ := mh.Sum(cand, mh.SHA2_256, 1); bytes.Equal(g, h) {
			forged = cand
		}
	}
	md5, err := mh.Sum(genuine, mh.MD5, -1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []cid.Cid{short, cid.NewCidV1(cid.Raw, md5)} {
		for _, data := range [][]byte{genuine, forged} {
			err := Verify(c, data)
			if err == nil || errors.Is(err, ErrMismatch) || err.Error() != CheckCID(c).Error() {
				t.Errorf("Verify(%s, %q) = %v, want CheckCID's refusal", c, data, err)
			}
		}
	}
}
