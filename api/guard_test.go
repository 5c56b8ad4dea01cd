package api_test

import (
	"bytes"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
)

// port is the port s listens on.
func port(t *testing.T, s *api.Server) string {
	t.Helper()
	_, p, err := net.SplitHostPort(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// browserAdd is a multipart upload as a page's form or fetch sends it.
func browserAdd(t *testing.T) (body, contentType string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	part, err := mw.CreateFormFile("file", "payload.bin")
	if err != nil {
		t.Fatal(err)
	}
	part.Write([]byte("planted by a web page"))
	mw.Close()
	return b.String(), mw.FormDataContentType()
}

// TestGuardRefusesBrowserAttacks replays the requests of issue 14: a web
// page open in a local browser driving the default API (CSRF), or reading
// it under a DNS name of its own (DNS rebinding). Each is refused with one
// sentence, and none reaches the backend.
func TestGuardRefusesBrowserAttacks(t *testing.T) {
	f := newFake()
	s := startServer(t, api.ServerConfig{}, f)
	pin := `{"cid":"` + cidV0 + `"}`
	mpBody, mpType := browserAdd(t)
	hostMsg := func(h string) string {
		return `request refused: Host "` + h + `" is not this API's address; add the name to api.allowed_hosts to allow it`
	}
	originMsg := `request refused: Origin "http://evil.example" is not in api.allowed_origins`
	tests := []struct {
		name, method, path, body string
		hdr                      []string
		code                     int
		msg                      string
	}{
		// The three reproduced attacks.
		{"rebinding pin", "POST", "/pins", pin, []string{"Content-Type", "text/plain", "Origin", "http://evil.example", "Host", "evil.example:19094"}, 403, hostMsg("evil.example:19094")},
		{"multipart add from a foreign origin", "POST", "/add", mpBody, []string{"Content-Type", mpType, "Origin", "http://evil.example"}, 403, originMsg},
		{"rebinding read", "GET", "/pins", "", []string{"Host", "attacker.example"}, 403, hostMsg("attacker.example")},
		// Their variants.
		{"cross-site pin", "POST", "/pins", pin, []string{"Content-Type", "text/plain", "Origin", "http://evil.example"}, 403, originMsg},
		{"cross-site JSON pin", "POST", "/pins", pin, []string{"Content-Type", "application/json", "Origin", "http://evil.example"}, 403, originMsg},
		{"cross-site read", "GET", "/pins", "", []string{"Origin", "http://evil.example"}, 403, originMsg},
		{"cross-site drain", "POST", "/peers/" + peerB + "/drain", "", []string{"Origin", "http://evil.example"}, 403, originMsg},
		{"opaque origin", "POST", "/sync", "", []string{"Origin", "null"}, 403, `request refused: Origin "null" is not in api.allowed_origins`},
		{"preflight", "OPTIONS", "/pins", "", []string{"Origin", "http://evil.example", "Access-Control-Request-Method", "POST"}, 403, originMsg},
		{"cross-site without Origin", "POST", "/rebalance", "", []string{"Sec-Fetch-Site", "cross-site"}, 403, "request refused: the browser sent it from another site (Sec-Fetch-Site: cross-site) and it names no Origin in api.allowed_origins"},
		{"same-site without Origin", "POST", "/sync", "", []string{"Sec-Fetch-Site", "same-site"}, 403, "request refused: the browser sent it from another site (Sec-Fetch-Site: same-site) and it names no Origin in api.allowed_origins"},
		{"rebinding on the API's port", "GET", "/cat/" + cidV0, "", []string{"Host", "evil.example:" + port(t, s)}, 403, hostMsg("evil.example:" + port(t, s))},
		{"rebinding export", "GET", "/export/" + cidV0, "", []string{"Host", "localhost.evil.example:" + port(t, s)}, 403, hostMsg("localhost.evil.example:" + port(t, s))},
		{"loopback on another port", "GET", "/pins", "", []string{"Host", "127.0.0.1:1"}, 403, hostMsg("127.0.0.1:1")},
		{"localhost without port", "GET", "/pins", "", []string{"Host", "localhost"}, 403, hostMsg("localhost")},
		{"a non-loopback IP", "GET", "/pins", "", []string{"Host", "192.0.2.1:" + port(t, s)}, 403, hostMsg("192.0.2.1:" + port(t, s))},
		// Content types, without a browser.
		{"text/plain pin", "POST", "/pins", pin, []string{"Content-Type", "text/plain"}, 415, `request refused: POST /pins needs Content-Type: application/json, not "text/plain"`},
		{"form pin", "POST", "/pins", pin, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, `request refused: POST /pins needs Content-Type: application/json, not "application/x-www-form-urlencoded"`},
		{"untyped pin", "POST", "/pins", pin, nil, 415, "request refused: POST /pins needs Content-Type: application/json; the request has none"},
		{"text/plain add", "POST", "/add", "hello", []string{"Content-Type", "text/plain"}, 415, `request refused: POST /add needs Content-Type: application/octet-stream (the file itself) or multipart/form-data, not "text/plain"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, hdr, body := call(t, s, tt.method, tt.path, tt.body, tt.hdr...)
			if code != tt.code || body != errBody(tt.code, tt.msg) {
				t.Fatalf("status %d body %s; want %d %s", code, body, tt.code, errBody(tt.code, tt.msg))
			}
			if got := hdr.Get("Access-Control-Allow-Origin"); got != "" {
				t.Fatalf("Access-Control-Allow-Origin %q on a refusal", got)
			}
		})
	}
	if len(f.pinReqs) != 0 || f.addN != 0 || len(f.pins) != 0 {
		t.Fatalf("a refused request reached the backend: pins %v, add of %d bytes", f.pinReqs, f.addN)
	}
}

// TestGuardAcceptsOwnAddress: the CLI, the Go client and curl send no
// Origin and name the API by its address or a loopback alias of it; JSON
// may carry parameters.
func TestGuardAcceptsOwnAddress(t *testing.T) {
	f := newFake()
	s := startServer(t, api.ServerConfig{}, f)
	p := port(t, s)
	for _, host := range []string{"127.0.0.1:" + p, "localhost:" + p, "LocalHost.:" + p, "[::1]:" + p, "127.0.0.2:" + p, "[::ffff:127.0.0.1]:" + p} {
		t.Run(host, func(t *testing.T) {
			if code, _, body := call(t, s, "GET", "/pins", "", "Host", host); code != 200 {
				t.Fatalf("status %d: %s", code, body)
			}
		})
	}
	pin := `{"cid":"` + cidV0 + `"}`
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON"} {
		if code, _, body := call(t, s, "POST", "/pins", pin, "Content-Type", ct); code != 200 {
			t.Fatalf("%s: status %d: %s", ct, code, body)
		}
	}
	// A browser's own navigation and a same-origin request are not
	// cross-site; an empty POST needs no type.
	if code, _, body := call(t, s, "POST", "/sync", "", "Sec-Fetch-Site", "same-origin"); code != 501 {
		t.Fatalf("same-origin sync: status %d: %s", code, body)
	}
	if code, _, body := call(t, s, "GET", "/pins", "", "Sec-Fetch-Site", "cross-site"); code != 200 {
		t.Fatalf("cross-site navigation: status %d: %s", code, body)
	}
}

// TestGuardClient: the Go client passes the checks whichever loopback
// name it is given, and a refusal reaches its caller as the sentence.
func TestGuardClient(t *testing.T) {
	f := newFake()
	s := startServer(t, api.ServerConfig{AllowedHosts: []string{"shoal.example.com"}}, f)
	for _, addr := range []string{s.Addr(), "localhost:" + port(t, s), "http://localhost:" + port(t, s) + "/"} {
		c, err := client.New(addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Pin(t.Context(), api.PinRequest{CID: cidV0, Name: addr}); err != nil {
			t.Fatalf("%s: Pin: %v", addr, err)
		}
		if _, err := c.Add(t.Context(), strings.NewReader("hello"), "h.txt", api.AddParams{}); err != nil {
			t.Fatalf("%s: Add: %v", addr, err)
		}
		if pins, err := c.Pins(t.Context()); err != nil || len(pins) != 1 {
			t.Fatalf("%s: Pins %v, %v", addr, pins, err)
		}
		if _, err := c.Unpin(t.Context(), cidV0); err != nil {
			t.Fatalf("%s: Unpin: %v", addr, err)
		}
	}
	// Through a name the API does not know (a proxy, a rebinding), the
	// client says why in one sentence.
	hc := &http.Client{Transport: hostRewriter{"evil.example:" + port(t, s)}}
	c, _ := client.New(s.Addr(), client.WithHTTPClient(hc))
	_, err := c.Pins(t.Context())
	if want := `request refused: Host "evil.example:` + port(t, s) + `" is not this API's address; add the name to api.allowed_hosts to allow it`; err == nil || err.Error() != want {
		t.Fatalf("err %v, want %s", err, want)
	}
	hc.Transport = hostRewriter{"shoal.example.com"}
	if _, err := c.Pins(t.Context()); err != nil {
		t.Fatalf("allowed host: %v", err)
	}
}

// hostRewriter sends every request with the Host header host.
type hostRewriter struct{ host string }

func (h hostRewriter) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Host = h.host
	return http.DefaultTransport.RoundTrip(r)
}

// TestGuardAllowLists: allowed origins are served, with CORS headers and
// an answered preflight; allowed hosts pass on any port unless they name
// one.
func TestGuardAllowLists(t *testing.T) {
	f := newFake()
	s := startServer(t, api.ServerConfig{
		AllowedOrigins: []string{"https://UI.example.com:443", "http://localhost:3000"},
		AllowedHosts:   []string{"shoal.example.com", "Other.Example:8443", "[2001:db8::5]:9094"},
	}, f)
	const ui = "https://ui.example.com"

	code, hdr, body := call(t, s, "OPTIONS", "/pins", "", "Origin", ui,
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type,authorization",
		"Access-Control-Request-Private-Network", "true")
	if code != 204 || body != "" {
		t.Fatalf("preflight: status %d: %s", code, body)
	}
	for k, want := range map[string]string{
		"Access-Control-Allow-Origin":          ui,
		"Access-Control-Allow-Methods":         "GET, HEAD, POST, DELETE",
		"Access-Control-Allow-Headers":         "Authorization, Content-Type",
		"Access-Control-Allow-Private-Network": "true",
		"Access-Control-Max-Age":               "600",
		"Vary":                                 "Origin",
	} {
		if got := hdr.Get(k); got != want {
			t.Errorf("preflight %s %q, want %q", k, got, want)
		}
	}

	pin := `{"cid":"` + cidV0 + `"}`
	code, hdr, body = call(t, s, "POST", "/pins", pin, "Origin", ui, "Content-Type", "application/json")
	if code != 200 || hdr.Get("Access-Control-Allow-Origin") != ui || !slices.Contains(hdr.Values("Vary"), "Origin") ||
		hdr.Get("Access-Control-Expose-Headers") != "Shoal-Length, Shoal-Consistency, Shoal-Applied-Index, Shoal-Last-Contact" {
		t.Fatalf("allowed origin: status %d, headers %v: %s", code, hdr, body)
	}
	if len(f.pinReqs) != 1 {
		t.Fatalf("backend got %d pins", len(f.pinReqs))
	}
	// The allowed origin still sends the right type.
	if code, _, _ := call(t, s, "POST", "/pins", pin, "Origin", ui, "Content-Type", "text/plain"); code != 415 {
		t.Fatalf("allowed origin, text/plain: status %d", code)
	}
	if code, _, body := call(t, s, "GET", "/pins", "", "Origin", "http://localhost:3000"); code != 200 {
		t.Fatalf("second origin: status %d: %s", code, body)
	}
	// Exact match: another scheme or port or a subdomain is another origin.
	for _, o := range []string{"http://ui.example.com", "https://ui.example.com:8443", "https://x.ui.example.com", "http://localhost:3001", "http://localhost"} {
		code, hdr, body := call(t, s, "GET", "/pins", "", "Origin", o)
		if want := errBody(403, `request refused: Origin "`+o+`" is not in api.allowed_origins`); code != 403 || body != want {
			t.Errorf("%s: status %d: %s", o, code, body)
		}
		if !slices.Contains(hdr.Values("Vary"), "Origin") {
			t.Errorf("%s: refusal without Vary: Origin", o)
		}
	}

	p := port(t, s)
	for host, ok := range map[string]bool{
		"shoal.example.com":           true,
		"shoal.example.com:" + p:      true,
		"Shoal.Example.COM.:1":        true,
		"other.example:8443":          true,
		"[2001:db8::5]:9094":          true,
		"127.0.0.1:" + p:              true,
		"other.example:" + p:          false,
		"other.example":               false,
		"[2001:db8::5]:" + p:          false,
		"x.shoal.example.com:" + p:    false,
		"shoal.example.com.evil:" + p: false,
	} {
		code, _, body := call(t, s, "GET", "/pins", "", "Host", host)
		if (code == 200) != ok {
			t.Errorf("Host %s: status %d: %s", host, code, body)
		}
	}
}

// TestGuardAnyOrigin: "*" serves every origin, and cross-site requests
// without one.
func TestGuardAnyOrigin(t *testing.T) {
	s := startServer(t, api.ServerConfig{AllowedOrigins: []string{"*"}}, newFake())
	for _, o := range []string{"http://evil.example", "null"} {
		code, hdr, body := call(t, s, "GET", "/pins", "", "Origin", o)
		if code != 200 || hdr.Get("Access-Control-Allow-Origin") != o {
			t.Fatalf("%s: status %d, Access-Control-Allow-Origin %q: %s", o, code, hdr.Get("Access-Control-Allow-Origin"), body)
		}
	}
	if code, _, body := call(t, s, "POST", "/sync", "", "Sec-Fetch-Site", "cross-site"); code != 501 {
		t.Fatalf("cross-site sync: status %d: %s", code, body)
	}
	// The Host check still holds.
	if code, _, _ := call(t, s, "GET", "/pins", "", "Host", "evil.example"); code != 403 {
		t.Fatalf("rebinding with any origin allowed: status %d", code)
	}
}

// TestGuardListenAll: on an unspecified address the API is reached by any
// of the machine's IP addresses, which no page can rebind, but a DNS name
// must be allowed.
func TestGuardListenAll(t *testing.T) {
	s := startServer(t, api.ServerConfig{Listen: "0.0.0.0:0", BearerTokens: []string{"tok"}}, newFake())
	p := port(t, s)
	for host, ok := range map[string]bool{
		"192.0.2.7:" + p:     true,
		"[2001:db8::1]:" + p: true,
		"127.0.0.1:" + p:     true,
		"localhost:" + p:     true,
		"192.0.2.7:1":        false,
		"evil.example:" + p:  false,
		"myhost:" + p:        false,
	} {
		code, _, body := call(t, s, "GET", "/pins", "", "Host", host, "Authorization", "Bearer tok")
		if (code == 200) != ok {
			t.Errorf("Host %s: status %d: %s", host, code, body)
		}
	}
}

// TestGuardMounted: a Handler served by another server checks the port
// the request arrived on, and accepts the listen IP and the address the
// connection arrived at.
func TestGuardMounted(t *testing.T) {
	s, err := api.NewServer(api.ServerConfig{Listen: "192.0.2.1:9094", BearerTokens: []string{"tok"}}, newFake(), "v")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	for host, ok := range map[string]bool{
		"192.0.2.1:" + p:   true,
		"127.0.0.1:" + p:   true, // where the connection arrived
		"192.0.2.1:9094":   false,
		"127.0.0.2:" + p:   false,
		"localhost:" + p:   true,
		"192.0.2.99:" + p:  false,
		"example.com:" + p: false,
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/pins", nil)
		req.Host = host
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if (resp.StatusCode == 200) != ok {
			t.Errorf("Host %s: status %d", host, resp.StatusCode)
		}
	}
}

func TestGuardConfig(t *testing.T) {
	tests := []struct {
		cfg  api.ServerConfig
		want string
	}{
		{api.ServerConfig{AllowedOrigins: []string{"https://ui.example.com/"}}, `API allowed origins: origin "https://ui.example.com/": use SCHEME://HOST[:PORT] as a browser sends it (no path, no trailing slash), or * for any`},
		{api.ServerConfig{AllowedOrigins: []string{"ui.example.com"}}, `API allowed origins: origin "ui.example.com": use SCHEME://HOST[:PORT] as a browser sends it (no path, no trailing slash), or * for any`},
		{api.ServerConfig{AllowedOrigins: []string{"https://*.example.com"}}, `API allowed origins: origin "https://*.example.com": use SCHEME://HOST[:PORT] as a browser sends it (no path, no trailing slash), or * for any`},
		{api.ServerConfig{AllowedHosts: []string{"http://shoal.example.com"}}, `API allowed hosts: host "http://shoal.example.com": use NAME or NAME:PORT as a client sends it in the Host header, without scheme or path`},
		{api.ServerConfig{AllowedHosts: []string{"shoal.example.com:http"}}, `API allowed hosts: host "shoal.example.com:http": use NAME or NAME:PORT as a client sends it in the Host header, without scheme or path`},
		{api.ServerConfig{AllowedHosts: []string{""}}, `API allowed hosts: host "": use NAME or NAME:PORT as a client sends it in the Host header, without scheme or path`},
		{api.ServerConfig{AllowedOrigins: []string{"*", "http://localhost:3000", "chrome-extension://abcdef"}, AllowedHosts: []string{"a.example", "a.example:1", "[::1]:2", "::1", "192.0.2.1"}}, ""},
	}
	for _, tt := range tests {
		tt.cfg.Listen = "127.0.0.1:9094"
		_, err := api.NewServer(tt.cfg, newFake(), "v")
		if got := ""; err != nil {
			got = err.Error()
			if got != tt.want {
				t.Errorf("%+v: error %q, want %q", tt.cfg, got, tt.want)
			}
		} else if tt.want != "" {
			t.Errorf("%+v: no error, want %q", tt.cfg, tt.want)
		}
	}
}
