package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/dag"
)

// weakCIDs are CIDs a forger could match (a 1-byte digest is matched by
// one block in 256) with the sentence that refuses each.
func weakCIDs(t *testing.T) []struct {
	name string
	c    cid.Cid
	msg  string
} {
	t.Helper()
	mk := func(code uint64, n int) cid.Cid {
		h, err := mh.Encode(bytes.Repeat([]byte{0x5a}, n), code)
		if err != nil {
			t.Fatal(err)
		}
		return cid.NewCidV1(cid.Raw, h)
	}
	md5, sha1, murmur, short := mk(mh.MD5, 16), mk(mh.SHA1, 20), mk(mh.MURMUR3X64_64, 8), mk(mh.SHA2_256, 1)
	return []struct {
		name string
		c    cid.Cid
		msg  string
	}{
		{"md5", md5, "CID " + md5.String() + " uses hash md5, which shoal does not accept (insecure)"},
		{"sha1", sha1, "CID " + sha1.String() + " uses hash sha1, which shoal does not accept (insecure)"},
		{"murmur3", murmur, "CID " + murmur.String() + " uses hash murmur3-x64-64, which shoal does not accept (insecure)"},
		{"1-byte sha2-256", short, "CID " + short.String() + " has a 1-byte sha2-256 digest, which is too short (at least 20 bytes)"},
	}
}

// TestWeakCIDsRefused: a CID with a weak hash or a cut digest is refused
// with one sentence wherever it enters: every API call that names a CID,
// the backend's own parsing, and the peer protocols that take a CID from
// another peer. Nothing is pinned.
func TestWeakCIDsRefused(t *testing.T) {
	peers := newTestPeers(t, 2)
	addr := peers[0].APIAddr()
	b := backend{peers[0]}
	ctx := context.Background()
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var e api.Error
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("%s %s: status %d, body %q is not an error", method, path, resp.StatusCode, raw)
		}
		return resp.StatusCode, e.Message
	}
	for _, w := range weakCIDs(t) {
		t.Run(w.name, func(t *testing.T) {
			s := w.c.String()
			for _, rq := range []struct{ method, path, body string }{
				{"POST", "/pins", `{"cid":"` + s + `"}`},
				{"GET", "/status/" + s, ""},
				{"GET", "/cat/" + s, ""},
				{"GET", "/export/" + s, ""},
				{"DELETE", "/pins/" + s, ""},
				{"POST", "/verify?cid=" + s, ""},
			} {
				if code, msg := do(rq.method, rq.path, rq.body); code != http.StatusBadRequest || msg != w.msg {
					t.Errorf("%s %s: %d %q, want 400 %q", rq.method, rq.path, code, msg, w.msg)
				}
			}
			// The backend parses for itself too (callers other than the API).
			if _, err := b.Pin(ctx, api.PinRequest{CID: s}); !errors.Is(err, api.ErrBadRequest) || err.Error() != "bad request: "+w.msg {
				t.Errorf("backend Pin: %v, want bad request: %s", err, w.msg)
			}
			// A peer asking about it, or for it, is refused.
			var st map[string]api.PeerStatus
			if err := peers[1].call(ctx, peers[0].ID(), protoStatus, statusReq{CIDs: []string{s}}, &st); err == nil || !strings.Contains(err.Error(), w.msg) {
				t.Errorf("status request: %v, want it to say %q", err, w.msg)
			}
			err := peers[1].fetch(ctx, peers[0].ID(), w.c, func(dag.Block) error { return nil })
			if err == nil || !strings.Contains(err.Error(), w.msg) {
				t.Errorf("fetch: %v, want it to say %q", err, w.msg)
			}
			if _, err := peers[1].readBlock(ctx, peers[0].ID(), w.c); err == nil || !strings.Contains(err.Error(), w.msg) {
				t.Errorf("read: %v, want it to say %q", err, w.msg)
			}
			if pins := peers[0].cons.State().Pins(); len(pins) != 0 {
				t.Fatalf("pins %v", pins)
			}
		})
	}
}
