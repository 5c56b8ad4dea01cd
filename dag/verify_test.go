package dag

import (
	"errors"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

func TestVerify(t *testing.T) {
	data := []byte("hello world\n")
	for _, code := range []uint64{mh.SHA2_256, mh.BLAKE3, mh.SHA2_512, mh.IDENTITY} {
		h, err := mh.Sum(data, code, -1)
		if err != nil {
			t.Fatal(err)
		}
		c := cid.NewCidV1(cid.Raw, h)
		if err := Verify(c, data); err != nil {
			t.Errorf("0x%x: %v", code, err)
		}
		if err := Verify(c, []byte("hello world!")); !errors.Is(err, ErrMismatch) {
			t.Errorf("0x%x: altered bytes gave %v, want ErrMismatch", code, err)
		}
	}
}
