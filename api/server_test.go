package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
	"github.com/shoal-project/shoal/internal/nettest"
)

// Known-good identifiers.
const (
	cidV0  = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
	cidV1  = "bafybeiatdrtl43kv3bhcj2wvryjwj4rw4wcbjqe4xqgkqngkllgdxibm2y"
	peerA  = "12D3KooWGRUVh4BrXQvpRWRFAEv5ANbFzUYw4Rw4yqyojnCgBdZ4"
	peerB  = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"
	cidV1B = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
)

// fakeBackend is an in-memory api.Backend: enough to check what the HTTP
// layer passes through and how it maps errors. The real daemon is tested
// end to end in cmd/shoal.
type fakeBackend struct {
	mu      sync.Mutex
	pins    map[string]api.Pin
	pinReqs []api.PinRequest
	removed []string
	local   []bool // the local flag of each status call

	// Add's record: the bytes' digest and count, and the params.
	addSum    [32]byte
	addN      int64
	addParams api.AddParams
	// addStarted receives the count of bytes read so far, once per
	// MiB, when not nil.
	addProgress chan int64

	// Set by tests to make calls fail.
	peersErr      error
	conflictAbove int           // Pin refuses rmin above it (0: never)
	pinBlock      chan struct{} // Pin waits for it to close, or ctx
	pinEntered    chan struct{} // closed when a blocked Pin starts waiting
	pinSawCancel  bool
}

var _ api.Backend = (*fakeBackend)(nil)

func newFake() *fakeBackend { return &fakeBackend{pins: map[string]api.Pin{}} }

func (f *fakeBackend) ID(context.Context) api.ID {
	return api.ID{ID: peerA, Name: "alice", Addresses: []string{"/ip4/127.0.0.1/tcp/9096/p2p/" + peerA}}
}

func (f *fakeBackend) Peers(context.Context) ([]api.Peer, error) {
	if f.peersErr != nil {
		return nil, f.peersErr
	}
	return []api.Peer{
		{ID: peerA, Name: "alice", Role: "leader", Alive: true, Addresses: []string{"/ip4/127.0.0.1/tcp/9096"}, Capacity: 100, Used: 40, Free: 60},
		{ID: peerB, Name: "bob", Role: "follower", Error: "dial backoff"},
	}, nil
}

func (f *fakeBackend) RemovePeer(_ context.Context, id string) error {
	if id != peerB {
		return fmt.Errorf("peer %s is not a member of the cluster: %w", id, api.ErrNotFound)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, id)
	return nil
}

func (f *fakeBackend) Pin(ctx context.Context, req api.PinRequest) (api.Pin, error) {
	if f.pinBlock != nil {
		close(f.pinEntered)
		select {
		case <-f.pinBlock:
		case <-ctx.Done():
			f.mu.Lock()
			f.pinSawCancel = true
			f.mu.Unlock()
			return api.Pin{}, ctx.Err()
		}
	}
	if f.conflictAbove > 0 && req.RMin > f.conflictAbove {
		return api.Pin{}, fmt.Errorf("%w: replication minimum %d is above the %d peers that can hold the pin", api.ErrConflict, req.RMin, f.conflictAbove)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pinReqs = append(f.pinReqs, req)
	p := api.Pin{CID: req.CID, Name: req.Name, RMin: req.RMin, RMax: req.RMax, Allocations: []string{peerA}, Created: time.Unix(1700000000, 0).UTC()}
	f.pins[req.CID] = p
	return p, nil
}

func (f *fakeBackend) Unpin(_ context.Context, c string) (api.Pin, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pins[c]
	if !ok {
		return api.Pin{}, fmt.Errorf("%s is not pinned: %w", c, api.ErrNotFound)
	}
	delete(f.pins, c)
	return p, nil
}

func (f *fakeBackend) Pins(context.Context) ([]api.Pin, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ps []api.Pin
	for _, p := range f.pins {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b api.Pin) int { return strings.Compare(a.CID, b.CID) })
	return ps, nil
}

func (f *fakeBackend) status(p api.Pin) api.PinStatus {
	return api.PinStatus{
		CID: p.CID, Name: p.Name, RMin: p.RMin, RMax: p.RMax, Allocations: p.Allocations,
		Peers: map[string]api.PeerStatus{
			peerA: {Name: "alice", Status: api.StatusPinned},
			peerB: {Name: "bob", Status: api.StatusPinError, Error: "disk full"},
		},
	}
}

func (f *fakeBackend) Status(_ context.Context, c string, local bool) (api.PinStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.local = append(f.local, local)
	p, ok := f.pins[c]
	if !ok {
		return api.PinStatus{}, fmt.Errorf("%s is not pinned: %w", c, api.ErrNotFound)
	}
	return f.status(p), nil
}

func (f *fakeBackend) StatusAll(ctx context.Context, local bool) ([]api.PinStatus, error) {
	pins, _ := f.Pins(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.local = append(f.local, local)
	var sts []api.PinStatus
	for _, p := range pins {
		sts = append(sts, f.status(p))
	}
	return sts, nil
}

func (f *fakeBackend) Add(_ context.Context, r io.Reader, p api.AddParams) (api.AddResult, error) {
	switch p.Name {
	case "refuse":
		return api.AddResult{}, fmt.Errorf("%w: no peer has room for the file", api.ErrConflict)
	case "crash":
		return api.AddResult{}, errors.New("the disk caught fire")
	}
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, err := r.Read(buf)
		h.Write(buf[:m])
		if f.addProgress != nil && (n+int64(m))>>20 > n>>20 {
			f.addProgress <- n + int64(m)
		}
		n += int64(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return api.AddResult{}, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	copy(f.addSum[:], h.Sum(nil))
	f.addN, f.addParams = n, p
	return api.AddResult{CID: cidV1B, Name: p.Name, Size: uint64(n), Pin: api.Pin{CID: cidV1B, Name: p.Name}}, nil
}

// startServer runs a Server of b on a loopback port until the test ends.
func startServer(t *testing.T, cfg api.ServerConfig, b api.Backend) *api.Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	s, err := api.NewServer(cfg, b, "v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// call sends one raw request and returns the status and body. hdr are
// header names and values; a "Host" sets the request's Host header.
func call(t *testing.T, s *api.Server, method, path, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+s.Addr()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func errBody(code int, msg string) string {
	b, _ := json.Marshal(api.Error{Code: code, Message: msg})
	return string(b) + "\n"
}

func TestErrors(t *testing.T) {
	f := newFake()
	f.conflictAbove = 5
	s := startServer(t, api.ServerConfig{MaxBodyBytes: 1024}, f)
	pin := func(fields string) string { return `{"cid":"` + cidV0 + `"` + fields + `}` }
	tests := []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{"malformed CID in path", "DELETE", "/pins/notacid", "", 400, `"notacid" is not a CID`},
		{"malformed CID in body", "POST", "/pins", `{"cid":"Qmnope"}`, 400, `"Qmnope" is not a CID`},
		{"malformed CID in status", "GET", "/status/xyz", "", 400, `"xyz" is not a CID`},
		{"no CID", "POST", "/pins", `{"name":"x"}`, 400, "the pin request has no cid"},
		{"unknown pin", "DELETE", "/pins/" + cidV0, "", 404, cidV0 + " is not pinned"},
		{"unknown pin status", "GET", "/status/" + cidV1, "", 404, cidV1 + " is not pinned"},
		{"rmin above rmax", "POST", "/pins", pin(`,"rmin":3,"rmax":2`), 400, "replication minimum 3 is above the maximum 2"},
		{"negative rmin", "POST", "/pins", pin(`,"rmin":-2`), 400, "replication minimum -2: use -1 (every peer) or a count of at least 1"},
		{"negative rmax", "POST", "/pins", pin(`,"rmax":-3`), 400, "replication maximum -3: use -1 (every peer) or a count of at least 1"},
		{"rmin every peer, rmax not", "POST", "/pins", pin(`,"rmin":-1,"rmax":3`), 400, "replication minimum -1 (every peer) needs maximum -1 too, not 3"},
		{"negative timeout", "POST", "/pins", pin(`,"wait":true,"timeout":-1`), 400, "timeout -1ns is negative"},
		{"conflict", "POST", "/pins", pin(`,"rmin":6,"rmax":7`), 409, "replication minimum 6 is above the 5 peers that can hold the pin"},
		{"oversized body", "POST", "/pins", pin(`,"name":"` + strings.Repeat("x", 1100) + `"`), 413, "the request body is larger than 1024 bytes"},
		{"unknown field", "POST", "/pins", pin(`,"replication":2`), 400, `the request body has an unknown field "replication"`},
		{"malformed JSON", "POST", "/pins", `{"cid" "x"}`, 400, "the request body is malformed JSON at byte 8"},
		{"truncated JSON", "POST", "/pins", `{"cid":`, 400, "the request body ends in the middle of its JSON"},
		{"empty body", "POST", "/pins", ``, 400, "the request body is empty; expected a JSON object"},
		{"wrong type", "POST", "/pins", pin(`,"rmin":"2"`), 400, `field "rmin" of the request body must be an integer, not string`},
		{"duration as string", "POST", "/pins", pin(`,"timeout":"5s"`), 400, `field "timeout" of the request body must be an integer (nanoseconds), not string`},
		{"not an object", "POST", "/pins", `[1]`, 400, "the request body must be a JSON object, not array"},
		{"two values", "POST", "/pins", pin(``) + `{}`, 400, "the request body holds more than one JSON value"},
		{"unknown query", "GET", "/pins?all=1", "", 400, `unknown query parameter "all" (known: consistency)`},
		{"no query", "GET", "/id?all=1", "", 400, `/id takes no query parameters, got "all"`},
		{"bad consistency", "GET", "/pins?consistency=eventual", "", 400, `query parameter consistency must be consistent or stale, not "eventual"`},
		{"bad local", "GET", "/status?local=maybe", "", 400, `query parameter local must be true or false, not "maybe"`},
		{"repeated query", "GET", "/status?local=true&local=false", "", 400, "query parameter local is given 2 times"},
		{"bad peer ID", "DELETE", "/peers/bob", "", 400, `"bob" is not a peer ID`},
		{"unknown peer", "DELETE", "/peers/" + peerA, "", 404, "peer " + peerA + " is not a member of the cluster"},
		{"no endpoint", "GET", "/nope", "", 404, "no API endpoint at /nope"},
		{"wrong method", "PUT", "/pins", "", 405, "PUT /pins is not supported; use GET, HEAD, POST"},
		{"add unknown query", "POST", "/add?recursive=true", "", 400, `unknown query parameter "recursive" (known: chunker, trickle, cid-version, raw-leaves, hash, inline, inline-limit, wrap-with-directory, name, rmin, rmax, allow-big-block, shard, shard-size, events)`},
		{"add bad chunker", "POST", "/add?chunker=size-0", "", 400, ""},
		{"add bad cid version", "POST", "/add?cid-version=2", "", 400, "unknown CID version 2 (use 0 or 1)"},
		{"add bad bool", "POST", "/add?trickle=yes", "", 400, `query parameter trickle must be true or false, not "yes"`},
		{"add bad int", "POST", "/add?rmin=two", "", 400, `query parameter rmin must be an integer, not "two"`},
		{"add bad replication", "POST", "/add?rmin=4&rmax=3", "", 400, "replication minimum 4 is above the maximum 3"},
		{"add not multipart", "POST", "/add", "hello", 415, "request refused: POST /add needs Content-Type: application/octet-stream (the file itself) or multipart/form-data; the request has none"},
		{"add empty without type", "POST", "/add", "", 415, "request refused: POST /add needs Content-Type: application/octet-stream (the file itself) or multipart/form-data; the request has none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ct []string
			if tt.method == "POST" && tt.path == "/pins" {
				ct = []string{"Content-Type", "application/json"}
			}
			code, hdr, body := call(t, s, tt.method, tt.path, tt.body, ct...)
			if code != tt.code {
				t.Fatalf("status %d, want %d; body %s", code, tt.code, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q, want application/json", ct)
			}
			if tt.msg == "" {
				var e api.Error
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != tt.code || e.Message == "" {
					t.Fatalf("body %q is not an error of code %d", body, tt.code)
				}
				return
			}
			if want := errBody(tt.code, tt.msg); body != want {
				t.Fatalf("body\n%s want\n%s", body, want)
			}
		})
	}
	t.Run("Allow header", func(t *testing.T) {
		_, hdr, _ := call(t, s, "PATCH", "/status/"+cidV0, "")
		if got := hdr.Get("Allow"); got != "GET, HEAD" {
			t.Fatalf("Allow %q", got)
		}
	})
}

// TestBackendErrors: the sentinel a backend wraps picks the status, and
// the message is the error's text without the sentinel's.
func TestBackendErrors(t *testing.T) {
	tests := []struct {
		err  error
		code int
		msg  string
	}{
		{fmt.Errorf("%w: peer list unreadable", api.ErrBadRequest), 400, "peer list unreadable"},
		{fmt.Errorf("no peer named bob: %w", api.ErrNotFound), 404, "no peer named bob"},
		{api.ErrNotFound, 404, "not found"},
		{fmt.Errorf("%w: two leaders", api.ErrConflict), 409, "two leaders"},
		{fmt.Errorf("%w: the cluster has no leader", api.ErrUnavailable), 503, "the cluster has no leader"},
		{errors.New("the disk caught fire"), 500, "the disk caught fire"},
	}
	f := newFake()
	s := startServer(t, api.ServerConfig{}, f)
	for _, tt := range tests {
		f.peersErr = tt.err
		code, _, body := call(t, s, "GET", "/peers", "")
		if code != tt.code || body != errBody(tt.code, tt.msg) {
			t.Errorf("%v: status %d body %s; want %d %s", tt.err, code, body, tt.code, errBody(tt.code, tt.msg))
		}
	}
}

func TestNewServerRefusesOpenRemote(t *testing.T) {
	tests := []struct {
		cfg api.ServerConfig
		ok  bool
	}{
		{api.ServerConfig{Listen: "0.0.0.0:9094"}, false},
		{api.ServerConfig{Listen: ":9094"}, false},
		{api.ServerConfig{Listen: "192.0.2.1:9094"}, false},
		{api.ServerConfig{Listen: "[::]:9094"}, false},
		{api.ServerConfig{Listen: "0.0.0.0:9094", AllowUnauthenticatedRemote: true}, true},
		{api.ServerConfig{Listen: "0.0.0.0:9094", BasicAuth: map[string]string{"a": "b"}}, true},
		{api.ServerConfig{Listen: "0.0.0.0:9094", BearerTokens: []string{"t"}}, true},
		{api.ServerConfig{Listen: "127.0.0.1:9094"}, true},
		{api.ServerConfig{Listen: "[::1]:9094"}, true},
		{api.ServerConfig{Listen: "localhost:9094"}, true},
		{api.ServerConfig{Listen: "127.0.0.1"}, false},
		{api.ServerConfig{Listen: "127.0.0.1:9094", MaxBodyBytes: -1}, false},
		{api.ServerConfig{Listen: "0.0.0.0:9094", BearerTokens: []string{""}}, false},
		{api.ServerConfig{Listen: "0.0.0.0:9094", BasicAuth: map[string]string{"a:b": "c"}}, false},
	}
	for _, tt := range tests {
		_, err := api.NewServer(tt.cfg, newFake(), "v")
		if (err == nil) != tt.ok {
			t.Errorf("%+v: err %v, want ok=%v", tt.cfg, err, tt.ok)
		}
	}
	_, err := api.NewServer(api.ServerConfig{Listen: "0.0.0.0:9094"}, newFake(), "v")
	want := "API listen address 0.0.0.0:9094 is not a loopback address and no auth is configured; configure basic auth or bearer tokens, or allow unauthenticated remote access"
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %s", err, want)
	}
}

func TestAuth(t *testing.T) {
	s := startServer(t, api.ServerConfig{
		BasicAuth:    map[string]string{"alice": "s3cret"},
		BearerTokens: []string{"tok-1", "tok-2"},
	}, newFake())
	basic := func(u, p string) string {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetBasicAuth(u, p)
		return r.Header.Get("Authorization")
	}
	needs := "this API needs credentials: basic auth or a bearer token"
	wrong := "the API credentials are wrong"
	tests := []struct {
		name, path, auth string
		code             int
		msg              string
	}{
		{"none", "/pins", "", 401, needs},
		{"none on id", "/id", "", 401, needs},
		{"wrong password", "/pins", basic("alice", "guess"), 401, wrong},
		{"unknown user", "/pins", basic("mallory", "s3cret"), 401, wrong},
		{"empty password", "/pins", basic("alice", ""), 401, wrong},
		{"wrong token", "/pins", "Bearer tok-3", 401, wrong},
		{"token as password", "/pins", basic("alice", "tok-1"), 401, wrong},
		{"other scheme", "/pins", "Digest x", 401, wrong},
		{"basic", "/pins", basic("alice", "s3cret"), 200, ""},
		{"bearer", "/pins", "Bearer tok-2", 200, ""},
		{"bearer lower case", "/pins", "bearer tok-1", 200, ""},
		{"health is open", "/health", "", 200, ""},
		{"none on peers' health", "/health/peers", "", 401, needs},
		{"none on lost parts", "/health/lost", "", 401, needs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.auth != "" {
				hdr = []string{"Authorization", tt.auth}
			}
			code, h, body := call(t, s, "GET", tt.path, "", hdr...)
			if code != tt.code {
				t.Fatalf("status %d, want %d: %s", code, tt.code, body)
			}
			if tt.code != 401 {
				return
			}
			if body != errBody(401, tt.msg) {
				t.Fatalf("body %s", body)
			}
			if got := h.Values("WWW-Authenticate"); !slices.Equal(got, []string{`Basic realm="shoal", charset="UTF-8"`, `Bearer realm="shoal"`}) {
				t.Fatalf("WWW-Authenticate %q", got)
			}
		})
	}
}

func TestHealthAndVersion(t *testing.T) {
	s := startServer(t, api.ServerConfig{}, newFake())
	if code, _, body := call(t, s, "GET", "/health", ""); code != 200 || body != `{"status":"ok"}`+"\n" {
		t.Fatalf("health: %d %s", code, body)
	}
	if code, _, body := call(t, s, "GET", "/version", ""); code != 200 || body != `{"version":"v1.2.3"}`+"\n" {
		t.Fatalf("version: %d %s", code, body)
	}
}

// TestStatusStream: /status is NDJSON, one PinStatus a line.
func TestStatusStream(t *testing.T) {
	f := newFake()
	s := startServer(t, api.ServerConfig{}, f)
	for _, c := range []string{cidV0, cidV1, cidV1B} {
		if _, err := f.Pin(t.Context(), api.PinRequest{CID: c, Name: "n-" + c[:6], RMin: 1, RMax: 2}); err != nil {
			t.Fatal(err)
		}
	}
	code, hdr, body := call(t, s, "GET", "/status?local=true", "")
	if code != 200 || hdr.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, Content-Type %q", code, hdr.Get("Content-Type"))
	}
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	want := []string{cidV0, cidV1, cidV1B}
	slices.Sort(want)
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), body)
	}
	for i, l := range lines {
		var st api.PinStatus
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&st); err != nil {
			t.Fatalf("line %d %q: %v", i, l, err)
		}
		if st.CID != want[i] || st.Peers[peerB].Status != api.StatusPinError || st.Peers[peerB].Error != "disk full" {
			t.Fatalf("line %d: %+v", i, st)
		}
	}
	if !slices.Equal(f.local, []bool{true}) {
		t.Fatalf("local flags %v, want [true]", f.local)
	}
	// An empty pinset is an empty stream.
	code, _, body = call(t, startServer(t, api.ServerConfig{}, newFake()), "GET", "/status", "")
	if code != 200 || body != "" {
		t.Fatalf("empty: %d %q", code, body)
	}
}

// seeded is n bytes of ChaCha8 keyed by seed.
func seeded(seed string, n int) []byte {
	r := rand.NewChaCha8(sha256.Sum256([]byte(seed)))
	b := make([]byte, n)
	r.Read(b)
	return b
}

// TestAddMultipart: a few MiB posted as multipart by a plain HTTP client
// reach the backend byte-exact, with the query's params and the part's
// filename.
func TestAddMultipart(t *testing.T) {
	f := newFake()
	s := startServer(t, api.ServerConfig{MaxBodyBytes: 1024}, f)
	data := seeded("shoal-api-add", 3<<20+12345)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	part, err := mw.CreateFormFile("file", "dir/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	part.Write(data)
	mw.Close()
	url := "http://" + s.Addr() + "/add?cid-version=1&raw-leaves=false&trickle=true&hash=blake3&rmin=2&rmax=3&chunker=size-1024"
	resp, err := http.Post(url, mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res api.AddResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	if f.addN != int64(len(data)) || f.addSum != sha256.Sum256(data) {
		t.Fatalf("backend got %d bytes (sha256 %x), want %d (%x)", f.addN, f.addSum, len(data), sha256.Sum256(data))
	}
	p := f.addParams
	if p.CIDVersion == nil || *p.CIDVersion != 1 || p.RawLeaves == nil || *p.RawLeaves || !p.Trickle ||
		p.Hash != "blake3" || p.RMin != 2 || p.RMax != 3 || p.Chunker != "size-1024" || p.Name != "big.bin" {
		t.Fatalf("params %+v", p)
	}
	if res.Size != uint64(len(data)) || res.Name != "big.bin" {
		t.Fatalf("result %+v", res)
	}
}

// TestAddRaw: a body of type application/octet-stream is the file itself,
// named by the query.
func TestAddRaw(t *testing.T) {
	f := newFake()
	s := startServer(t, api.ServerConfig{MaxBodyBytes: 1024}, f)
	data := seeded("shoal-api-raw", 3<<20+54321)
	resp, err := http.Post("http://"+s.Addr()+"/add?name=raw.bin&chunker=size-4096", "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res api.AddResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	if f.addN != int64(len(data)) || f.addSum != sha256.Sum256(data) {
		t.Fatalf("backend got %d bytes (sha256 %x), want %d (%x)", f.addN, f.addSum, len(data), sha256.Sum256(data))
	}
	if p := f.addParams; p.Name != "raw.bin" || p.Chunker != "size-4096" || res.Name != "raw.bin" {
		t.Fatalf("params %+v, result %+v", p, res)
	}
}

// TestAddStreams: the upload reaches the backend while the client is still
// sending, so neither side holds the whole body. The source blocks after
// 2 MiB until the backend has read a MiB: a client or server that buffered
// the body would never get there.
func TestAddStreams(t *testing.T) {
	f := newFake()
	f.addProgress = make(chan int64, 16)
	s := startServer(t, api.ServerConfig{}, f)
	c, err := client.New(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	data := seeded("shoal-api-stream", 4<<20)
	src := &gatedReader{data: data, gateAt: 2 << 20, gate: f.addProgress}
	res, err := c.Add(t.Context(), src, "s.bin", api.AddParams{})
	if err != nil {
		t.Fatal(err)
	}
	if src.err != nil {
		t.Fatal(src.err)
	}
	if res.Size != uint64(len(data)) || f.addSum != sha256.Sum256(data) {
		t.Fatalf("size %d, digest mismatch=%v", res.Size, f.addSum != sha256.Sum256(data))
	}
}

// gatedReader serves data, pausing at gateAt until gate says the backend
// has received at least a MiB.
type gatedReader struct {
	data   []byte
	off    int
	gateAt int
	gate   chan int64
	err    error
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.off == g.gateAt {
		select {
		case <-g.gate:
		case <-time.After(10 * time.Second):
			g.err = errors.New("the backend received nothing while the client was sending: the upload is buffered")
			return 0, g.err
		}
		g.gateAt = -1
	}
	if g.off >= len(g.data) {
		return 0, io.EOF
	}
	end := len(g.data)
	if g.gateAt > g.off && g.gateAt < end {
		end = g.gateAt
	}
	n := copy(p, g.data[g.off:end])
	g.off += n
	return n, nil
}

// TestClient runs every client method against the server over loopback.
func TestClient(t *testing.T) {
	f := newFake()
	s := startServer(t, api.ServerConfig{BearerTokens: []string{"tok"}}, f)
	ctx := t.Context()
	c, err := client.New("http://"+s.Addr()+"/", client.WithBearerToken("tok"))
	if err != nil {
		t.Fatal(err)
	}

	id, err := c.ID(ctx)
	if err != nil || id.ID != peerA || id.Version != "v1.2.3" || len(id.Addresses) != 1 {
		t.Fatalf("ID %+v, %v", id, err)
	}
	if v, err := c.Version(ctx); err != nil || v != "v1.2.3" {
		t.Fatalf("Version %q, %v", v, err)
	}
	if err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	peers, err := c.Peers(ctx)
	if err != nil || len(peers) != 2 || peers[0].Role != "leader" || peers[1].Error != "dial backoff" || peers[0].Free != 60 {
		t.Fatalf("Peers %+v, %v", peers, err)
	}
	if err := c.RemovePeer(ctx, peerB); err != nil || !slices.Equal(f.removed, []string{peerB}) {
		t.Fatalf("RemovePeer: %v, removed %v", err, f.removed)
	}
	pin, err := c.Pin(ctx, api.PinRequest{CID: cidV0, Name: "hello", RMin: 1, RMax: 2, Wait: true, Timeout: time.Minute})
	if err != nil || pin.CID != cidV0 || pin.Name != "hello" {
		t.Fatalf("Pin %+v, %v", pin, err)
	}
	if got := f.pinReqs[0]; !got.Wait || got.Timeout != time.Minute || got.RMin != 1 || got.RMax != 2 {
		t.Fatalf("backend got %+v", got)
	}
	// A CIDv1 in base58btc reaches the backend in its canonical base32.
	if _, err := c.Pin(ctx, api.PinRequest{CID: "zb2rhj7crUKTQYRGCRATFaQ6YFLTde2YzdqbbhAASkL9uRDXn"}); err != nil {
		t.Fatal(err)
	}
	if got := f.pinReqs[1].CID; got != cidV1B {
		t.Fatalf("backend got CID %s, want %s", got, cidV1B)
	}
	pins, err := c.Pins(ctx)
	if err != nil || len(pins) != 2 {
		t.Fatalf("Pins %+v, %v", pins, err)
	}
	st, err := c.Status(ctx, cidV0, true)
	if err != nil || st.CID != cidV0 || st.Peers[peerA].Status != api.StatusPinned {
		t.Fatalf("Status %+v, %v", st, err)
	}
	sts, err := c.StatusAll(ctx, false)
	if err != nil || len(sts) != 2 {
		t.Fatalf("StatusAll %+v, %v", sts, err)
	}
	if !slices.Equal(f.local, []bool{true, false}) {
		t.Fatalf("local flags %v", f.local)
	}
	if p, err := c.Unpin(ctx, cidV0); err != nil || p.CID != cidV0 {
		t.Fatalf("Unpin %+v, %v", p, err)
	}
	data := seeded("shoal-client-add", 1<<20+1)
	cv := 1
	res, err := c.Add(ctx, bytes.NewReader(data), "f.bin", api.AddParams{CIDVersion: &cv, Wrap: true, InlineLimit: 16, Inline: true})
	if err != nil || res.Size != uint64(len(data)) || f.addSum != sha256.Sum256(data) {
		t.Fatalf("Add %+v, %v", res, err)
	}
	if p := f.addParams; p.Name != "f.bin" || !p.Wrap || !p.Inline || p.InlineLimit != 16 || *p.CIDVersion != 1 || p.RawLeaves != nil {
		t.Fatalf("Add params %+v", p)
	}

	// Errors carry the server's message and match the api sentinels.
	_, err = c.Unpin(ctx, cidV0)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != 404 || err.Error() != cidV0+" is not pinned" || !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("Unpin twice: %#v", err)
	}
	_, err = c.Pin(ctx, api.PinRequest{CID: cidV0, RMin: 3, RMax: 1})
	if err == nil || err.Error() != "replication minimum 3 is above the maximum 1" || !errors.Is(err, api.ErrBadRequest) {
		t.Fatalf("bad pin: %v", err)
	}
	_, err = c.Add(ctx, bytes.NewReader(data), "refuse", api.AddParams{})
	if err == nil || err.Error() != "no peer has room for the file" || !errors.Is(err, api.ErrConflict) {
		t.Fatalf("refused add: %v", err)
	}
	_, err = c.Add(ctx, bytes.NewReader(data), "x", api.AddParams{Chunker: "nope"})
	if !errors.Is(err, api.ErrBadRequest) {
		t.Fatalf("bad chunker: %v", err)
	}
	noAuth, _ := client.New(s.Addr())
	if _, err := noAuth.Pins(ctx); err == nil || err.Error() != "this API needs credentials: basic auth or a bearer token" {
		t.Fatalf("without token: %v", err)
	}
	wrong, _ := client.New(s.Addr(), client.WithBasicAuth("u", "p"))
	if _, err := wrong.Pins(ctx); err == nil || err.Error() != "the API credentials are wrong" {
		t.Fatalf("wrong credentials: %v", err)
	}
}

// TestClientAddReadError: an error reading the source is the error Add
// returns, not the broken request it causes.
func TestClientAddReadError(t *testing.T) {
	s := startServer(t, api.ServerConfig{}, newFake())
	c, _ := client.New(s.Addr())
	boom := errors.New("read /data/big: input/output error")
	src := io.MultiReader(bytes.NewReader(make([]byte, 300<<10)), errReader{boom})
	if _, err := c.Add(t.Context(), src, "big", api.AddParams{}); !errors.Is(err, boom) || err.Error() != boom.Error() {
		t.Fatalf("err %v, want %v", err, boom)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestClientEarlyRefusal: a backend that refuses an add before reading it
// reaches the client as its message, though the client is still sending.
func TestClientEarlyRefusal(t *testing.T) {
	s := startServer(t, api.ServerConfig{}, newFake())
	c, _ := client.New(s.Addr())
	data := make([]byte, 16<<20)
	for _, name := range []string{"refuse", "crash"} {
		_, err := c.Add(t.Context(), bytes.NewReader(data), name, api.AddParams{})
		var ce *client.Error
		if !errors.As(err, &ce) || (ce.Code != 409 && ce.Code != 500) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func TestClientUnreachable(t *testing.T) {
	addr := nettest.RefusedAddr(t)
	c, err := client.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ID(t.Context())
	if want := "cannot reach the shoal API at " + addr + ": is the daemon running?"; err == nil || err.Error() != want {
		t.Fatalf("err %v, want %s", err, want)
	}
	_, err = c.Add(t.Context(), strings.NewReader("x"), "x", api.AddParams{})
	if want := "cannot reach the shoal API at " + addr + ": is the daemon running?"; err == nil || err.Error() != want {
		t.Fatalf("Add: err %v, want %s", err, want)
	}
}

func TestClientAddress(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:9094", "http://127.0.0.1:9094", "https://h:1/prefix/", "[::1]:9094", "localhost:1"} {
		if _, err := client.New(addr); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
	for _, addr := range []string{"", "127.0.0.1", "ftp://h:1", "http://", "http://h:1/?x=1", "/ip4/127.0.0.1/tcp/9094"} {
		if _, err := client.New(addr); err == nil {
			t.Errorf("%s: no error", addr)
		}
	}
	// A path prefix is kept, and odd path input stays one segment.
	var got []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.URL.EscapedPath())
		mu.Unlock()
		w.Write([]byte("{}"))
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL + "/shoal/")
	c.Unpin(t.Context(), "a/../b c")
	if want := []string{"/shoal/pins/a%2F..%2Fb%20c"}; !slices.Equal(got, want) {
		t.Fatalf("paths %q, want %q", got, want)
	}
}

// TestClose: Close waits for a request in flight and, after the grace
// period, cancels it.
func TestClose(t *testing.T) {
	f := newFake()
	f.pinBlock = make(chan struct{})
	f.pinEntered = make(chan struct{})
	s, err := api.NewServer(api.ServerConfig{Listen: "127.0.0.1:0"}, f, "v")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	c, _ := client.New(s.Addr())
	done := make(chan error, 1)
	go func() {
		_, err := c.Pin(context.Background(), api.PinRequest{CID: cidV0, Wait: true})
		done <- err
	}()
	<-f.pinEntered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	saw := f.pinSawCancel
	f.mu.Unlock()
	if !saw {
		t.Fatal("Shutdown returned before the in-flight Pin saw its context cancelled")
	}
	<-done
	if err := s.Start(); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

// TestListenNeedsAuth: only loopback addresses may listen without auth;
// private (RFC 1918, unique-local) and wildcard addresses are networks.
func TestListenNeedsAuth(t *testing.T) {
	for _, tc := range []struct {
		listen string
		ok     bool
	}{
		{"127.0.0.1:9094", true}, {"127.8.9.10:9094", true}, {"[::1]:9094", true}, {"localhost:9094", true},
		{"10.0.0.1:9094", false}, {"172.16.0.1:9094", false}, {"192.168.1.5:9094", false},
		{"[fd00::1]:9094", false}, {"0.0.0.0:9094", false}, {"[::]:9094", false}, {":9094", false},
		{"api.example.com:9094", false},
	} {
		err := api.ServerConfig{Listen: tc.listen}.Validate()
		want := "API listen address " + tc.listen + " is not a loopback address and no auth is configured; configure basic auth or bearer tokens, or allow unauthenticated remote access"
		if tc.ok != (err == nil) || (err != nil && err.Error() != want) {
			t.Errorf("%s without auth: %v; want ok %v", tc.listen, err, tc.ok)
		}
		if err := (api.ServerConfig{Listen: tc.listen, BearerTokens: []string{"t"}}).Validate(); err != nil {
			t.Errorf("%s with a token: %v", tc.listen, err)
		}
	}
}
