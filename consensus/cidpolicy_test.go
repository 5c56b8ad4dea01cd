package consensus

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

// weakCID is a raw CIDv1 whose multihash is code over an n-byte digest.
func weakCID(t testing.TB, code uint64, n int) cid.Cid {
	t.Helper()
	h, err := mh.Encode(bytes.Repeat([]byte{0x5a}, n), code)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

// weakPinOp encodes a pin op of c as AppendBinary would, without its
// Validate: what a peer that skips the check could send.
func weakPinOp(c cid.Cid, now time.Time) []byte {
	p := NewPin(c)
	b := append([]byte{OpFormatVersion, byte(OpPin)}, binary.AppendVarint(nil, now.UnixNano())...)
	return appendPinFields(b, &p)
}

// TestOpsRefuseWeakCIDs: no op this peer proposes names a CID with a weak
// hash or a cut digest, whichever field carries it.
func TestOpsRefuseWeakCIDs(t *testing.T) {
	good := fixedCID(t, true, "good")
	p1, p2 := fixedPeer(t, 1), fixedPeer(t, 2)
	weak := []struct {
		c   cid.Cid
		msg string // after "CID <c> "
	}{
		{weakCID(t, mh.MD5, 16), "uses hash md5, which shoal does not accept (insecure)"},
		{weakCID(t, mh.SHA1, 20), "uses hash sha1, which shoal does not accept (insecure)"},
		{weakCID(t, mh.MURMUR3X64_64, 8), "uses hash murmur3-x64-64, which shoal does not accept (insecure)"},
		{weakCID(t, mh.SHA2_256, 1), "has a 1-byte sha2-256 digest, which is too short (at least 20 bytes)"},
	}
	for _, w := range weak {
		ops := map[string]Op{
			"pin":          PinOp(NewPin(w.c), t0),
			"unpin":        UnpinOp(w.c, t0),
			"add-shard":    AddShardOp("add-1", 0, Shard{CID: w.c, Allocations: []peer.ID{p1}}, t0),
			"add-commit":   AddCommitOp("add-1", good, w.c, 10, []peer.ID{p1}, t0),
			"add-commit 2": AddCommitOp("add-1", w.c, good, 10, []peer.ID{p1}, t0),
			"repair":       RepairOp(good, w.c, []peer.ID{p1}, []peer.ID{p2}, t0),
		}
		for name, op := range ops {
			_, err := op.MarshalBinary()
			want := op.Type.String() + ": CID " + w.c.String() + " " + w.msg + ": invalid op"
			if !errors.Is(err, ErrInvalidOp) || err.Error() != want {
				t.Errorf("%s of %s: %v, want %q", name, w.c, err, want)
			}
		}
	}
	// A log written before the policy replays as it was applied.
	if op, err := DecodeOp(weakPinOp(weak[0].c, t0)); err != nil || !op.Pin.CID.Equals(weak[0].c) {
		t.Fatalf("DecodeOp of an old pin of %s: %+v, %v", weak[0].c, op, err)
	}
}

// TestLeaderRefusesForwardedWeakCID: a member that forwards an op naming a
// weak CID, skipping its own Validate, is refused by the leader, and the
// state does not change.
func TestLeaderRefusesForwardedWeakCID(t *testing.T) {
	peers := newCluster(t, 2, nil)
	leader, others := leaderOf(t, peers)
	c := weakCID(t, mh.SHA2_256, 1)
	_, err := others[0].c.call(ctxT(t, 5*time.Second), leader.id(), reqCommit, weakPinOp(c, time.Now()))
	want := "pin: CID " + c.String() + " has a 1-byte sha2-256 digest, which is too short (at least 20 bytes)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("forwarded pin of %s: %v, want it to say %q", c, err, want)
	}
	pinN(t, others[0], 0, 1) // a good op after it goes through
	waitSameState(t, peers, 1)
}
