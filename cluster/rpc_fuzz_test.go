package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/p2p"
)

// jsonAnswer is the answer of serveJSONFor, as callFor reads it.
type jsonAnswer struct {
	Error string          `json:"error"`
	Body  json.RawMessage `json:"body"`
}

// FuzzServeJSON feeds arbitrary request bodies to every JSON RPC handler
// of a real peer (kind picks the handler). Each answers with exactly one
// JSON object, {"error": "..."} with a message or {"body": ...}, and
// closes the stream; no request, /shoal/removed/1's included, stops the
// peer (its own Raft configuration still lists it).
func FuzzServeJSON(f *testing.F) {
	e := newFuzzEnv(f)
	p := e.p
	handlers := []network.StreamHandler{
		serveJSON(p, p.serveInfo),
		serveJSON(p, p.serveStatus),
		serveJSON(p, p.serveRemoved),
		serveJSON(p, p.serveAddrs),
		serveJSON(p, p.serveWanted),
		serveJSON(p, p.serveHave),
		serveJSON(p, p.serveMetrics),
		serveJSONFor(p, verifyRPCTimeout, p.serveVerify),
		serveJSONFor(p, syncTimeout+p.rpcTimeout, p.serveTracker),
	}
	seed := func(kind int, req any) {
		b, err := json.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(kind), append(b, '\n'))
	}
	keys := []string{e.plain.String(), e.sh.CID.String(), e.leaf.CID.String(), "not a CID"}
	seed(0, struct{}{})
	seed(1, statusReq{CIDs: keys[:1], Shards: keys[1:2]})
	seed(1, statusReq{CIDs: keys})
	seed(2, struct{}{})
	seed(3, addrsReq{ID: p.ID().String()})
	seed(3, addrsReq{ID: "12D3KooW"})
	seed(4, wantedReq{Keys: keys})
	seed(4, wantedReq{Keys: keys, Here: true})
	seed(5, haveReq{Keys: keys})
	seed(6, api.Metrics{Name: "other"})
	seed(7, verifyReq{CID: e.plain.String()})
	seed(7, verifyReq{CID: "bafk5kaiqp3gbtynaxy3luldpaxigwxjqla"})
	seed(8, trackerReq{Action: "recover", Parts: keys[:2]})
	seed(8, trackerReq{Action: "frob"})
	for k := range handlers {
		f.Add(uint8(k), []byte(`{"cids": 7, "keys": {}}`))
		f.Add(uint8(k), []byte(`[`))
	}
	from := e.holder.ID()
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		s := &memStream{r: bytes.NewReader(body), from: from}
		handlers[int(kind)%len(handlers)](s)
		if !s.closed.Load() || s.reset.Load() {
			t.Fatalf("stream closed %v, reset %v", s.closed.Load(), s.reset.Load())
		}
		out := s.w.Bytes()
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.DisallowUnknownFields()
		var ans jsonAnswer
		if err := dec.Decode(&ans); err != nil || dec.More() || !bytes.HasSuffix(out, []byte("\n")) {
			t.Fatalf("answer %q to %q: not one JSON object: %v", out, body, err)
		}
		if (ans.Error == "") == (ans.Body == nil) || ans.Error != "" && strings.TrimSpace(ans.Error) == "" {
			t.Fatalf("answer %+v to %q: want an error message or a body", ans, body)
		}
		select {
		case <-p.removed:
			t.Fatalf("request %q stopped the peer", body)
		default:
		}
	})
}

// FuzzCallAnswer feeds arbitrary answers, on a real stream, to call, the
// client of the JSON RPCs, decoding into each type the peers ask for
// (kind picks it), and then to what their callers do with them. A call
// succeeds only on an answer that holds a body and no error; an error
// says something.
func FuzzCallAnswer(f *testing.F) {
	e := newFuzzEnv(f)
	good := func(body any) []byte {
		b, err := json.Marshal(map[string]any{"body": body})
		if err != nil {
			f.Fatal(err)
		}
		return append(b, '\n')
	}
	f.Add(uint8(0), good(e.p.localInfo()))
	f.Add(uint8(0), good(info{Capacity: 10, Free: 20}))
	f.Add(uint8(1), good(map[string]api.PeerStatus{e.plain.String(): {Name: "fuzz", Status: "pinned"}}))
	f.Add(uint8(2), good([]string{"/ip4/10.0.0.1/tcp/9096", "/ip4/garbage"}))
	f.Add(uint8(3), good(map[string]bool{e.plain.String(): true}))
	f.Add(uint8(4), good([]bool{true, false}))
	f.Add(uint8(0), []byte(`{"error":"busy"}`))
	f.Add(uint8(0), []byte(`{"error":"","body":null}`))
	f.Add(uint8(1), []byte(`{"body":{"x":{"status":7}}}`))
	f.Add(uint8(2), []byte(`{"body":`))
	f.Add(uint8(3), []byte{})
	to := e.holder.ID()
	f.Fuzz(func(t *testing.T, kind uint8, in []byte) {
		e.answer.Store(&in)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var out any
		var use func()
		switch kind % 5 {
		case 0:
			var v info
			out, use = &v, func() { _ = v.check() }
		case 1:
			out = &map[string]api.PeerStatus{}
		case 2:
			var v []string
			out, use = &v, func() {
				for _, a := range v {
					_, _ = ma.NewMultiaddr(a)
				}
			}
		case 3:
			out = &map[string]bool{}
		case 4:
			out = &[]bool{}
		}
		err := e.p.call(ctx, to, fuzzProto, struct{}{}, out)
		if ctx.Err() != nil {
			t.Fatalf("call hung on %q", in)
		}
		if err != nil {
			checkMessage(t, err)
			return
		}
		var ans jsonAnswer
		if derr := json.NewDecoder(bytes.NewReader(in)).Decode(&ans); derr != nil || ans.Error != "" {
			t.Fatalf("call accepted %q: %v, error %q", in, derr, ans.Error)
		}
		if use != nil {
			use()
		}
	})
}

// FuzzLoadPeerstore writes arbitrary bytes as peerstore.json and loads
// them into a host: a file that is not a map of peer IDs to address lists
// is ignored with one log line saying why, and no entry, not even one
// naming this peer, changes this peer's own addresses.
func FuzzLoadPeerstore(f *testing.F) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	hc := p2p.DefaultConfig()
	hc.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	hc.PrivKey = key
	hc.Secret = bytes.Repeat([]byte{3}, p2p.SecretSize)
	var h *p2p.Host
	uses := 0
	// Each input may add addresses for good: a fresh host now and then
	// keeps the fuzzer's memory flat.
	host := func() *p2p.Host {
		if uses++; h == nil || uses%2000 == 0 {
			if h != nil {
				_ = h.Close()
			}
			if h, err = p2p.New(hc, nil); err != nil {
				f.Fatal(err)
			}
		}
		return h
	}
	f.Cleanup(func() {
		if h != nil {
			_ = h.Close()
		}
	})
	selfID, err := peer.IDFromPrivateKey(key)
	if err != nil {
		f.Fatal(err)
	}
	other := "12D3KooWGRUVh4BrXQvpRWRFAEv5ANbFzUYw4Rw4yqyojnCgBdZ4"
	for _, saved := range []map[string][]string{
		{other: {"/ip4/10.0.0.1/tcp/9096", "/ip6/::1/tcp/9096"}},
		{selfID.String(): {"/ip4/10.0.0.9/tcp/1"}, other: {"/ip4/garbage", "/dns4/peer.example/tcp/9096/p2p/" + other}},
		{"not a peer": {"/ip4/10.0.0.1/tcp/9096"}},
		{},
	} {
		b, err := json.MarshalIndent(saved, "", "  ")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"` + other + `": "/ip4/10.0.0.1/tcp/1"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{`))
	f.Add([]byte{0xff, 0xfe})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, in []byte) {
		if err := os.WriteFile(filepath.Join(dir, peerstoreFile), in, 0o600); err != nil {
			t.Fatal(err)
		}
		var logged bytes.Buffer
		q := &Peer{dir: dir, host: host(), logger: log.New(&logged, "", 0)}
		before := len(q.host.PeerAddrs(selfID))
		q.loadPeerstore()
		var saved map[string][]string
		bad := json.Unmarshal(in, &saved) != nil
		line := logged.String()
		if bad != strings.HasPrefix(line, "ignoring "+peerstoreFile+": ") || strings.Count(line, "\n") > 1 {
			t.Fatalf("peerstore %q (unreadable: %v) logged %q", in, bad, line)
		}
		if len(q.host.PeerAddrs(selfID)) != before {
			t.Fatal("the peerstore changed this peer's own addresses")
		}
	})
}
