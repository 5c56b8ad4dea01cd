package transfer

import (
	"strings"
	"testing"

	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/dag"
)

// TestReceiverRefusesWeakCIDs: a sender that names a block by a weak hash
// or a cut digest, which it could match with forged bytes, is refused with
// the policy's sentence, and nothing is stored.
func TestReceiverRefusesWeakCIDs(t *testing.T) {
	nodes := newCluster(t, 2)
	from, to := nodes[0], nodes[1]
	to.srv.Free = func() int64 { return 64 << 20 }
	data := []byte("a block of the shard")
	for _, w := range []struct {
		name   string
		code   uint64
		length int
		msg    string // after "CID <c> "
	}{
		{"md5", mh.MD5, -1, "uses hash md5, which shoal does not accept (insecure)"},
		{"sha1", mh.SHA1, -1, "uses hash sha1, which shoal does not accept (insecure)"},
		{"murmur3", mh.MURMUR3X64_64, -1, "uses hash murmur3-x64-64, which shoal does not accept (insecure)"},
		{"1-byte sha2-256", mh.SHA2_256, 1, "has a 1-byte sha2-256 digest, which is too short (at least 20 bytes)"},
	} {
		t.Run(w.name, func(t *testing.T) {
			blk := dag.Block{CID: sum(t, 0x55, data, w.code, w.length), Data: data}
			info, list := shardOf(t, []dag.Block{blk}, 2)
			body := rawEnd(rawFrame(nil, blk.CID, blk.Data), info, list)
			first, second := rawSend(t, from.h, to.h.ID(), rawHeader(1, 1<<20), body)
			want := "CID " + blk.CID.String() + " " + w.msg
			if first.status != statusOK || second.status == statusOK || !strings.Contains(second.reason, want) {
				t.Fatalf("answers %+v, %+v; want a failure saying %q", first, second, want)
			}
			assertEmpty(t, to)
		})
	}
}
