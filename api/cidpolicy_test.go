package api_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/api"
)

// TestWeakCIDsRefused: the API refuses a CID with a weak hash or a cut
// digest with one sentence, before the backend sees it; inline (identity)
// CIDs, which `shoal add --inline` makes, pass. (The fake serves no cat,
// export or verify: cluster's TestWeakCIDsRefused covers those.)
func TestWeakCIDsRefused(t *testing.T) {
	s := startServer(t, api.ServerConfig{}, newFake())
	mk := func(code uint64, n int) string {
		h, err := mh.Encode(bytes.Repeat([]byte{0x5a}, n), code)
		if err != nil {
			t.Fatal(err)
		}
		return cid.NewCidV1(cid.Raw, h).String()
	}
	md5, sha1, murmur, short := mk(mh.MD5, 16), mk(mh.SHA1, 20), mk(mh.MURMUR3X64_64, 8), mk(mh.SHA2_256, 1)
	weak := map[string]string{
		md5:    "CID " + md5 + " uses hash md5, which shoal does not accept (insecure)",
		sha1:   "CID " + sha1 + " uses hash sha1, which shoal does not accept (insecure)",
		murmur: "CID " + murmur + " uses hash murmur3-x64-64, which shoal does not accept (insecure)",
		short:  "CID " + short + " has a 1-byte sha2-256 digest, which is too short (at least 20 bytes)",
	}
	for c, msg := range weak {
		for _, rq := range []struct{ method, path, body string }{
			{"POST", "/pins", `{"cid":"` + c + `"}`},
			{"GET", "/status/" + c, ""},
			{"DELETE", "/pins/" + c, ""},
		} {
			code, _, body := call(t, s, rq.method, rq.path, rq.body, "Content-Type", "application/json")
			if code != http.StatusBadRequest || body != errBody(400, msg) {
				t.Errorf("%s %s: %d %s, want 400 %q", rq.method, rq.path, code, body, msg)
			}
		}
	}
	inline := mk(mh.IDENTITY, 32)
	if code, _, body := call(t, s, "GET", "/status/"+inline, ""); code != http.StatusNotFound {
		t.Errorf("status of the inline CID %s: %d %s, want 404 (not pinned)", inline, code, body)
	}
}
