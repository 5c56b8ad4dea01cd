package api

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/shoal-project/shoal/config"
)

// guard keeps web pages out of the API (doc.go, "Browsers"): it refuses a
// Host that does not name this API, against DNS rebinding, and an Origin
// that is not allowed, against cross-site requests. It runs before auth, so
// that a page learns nothing more than that it was refused.
type guard struct {
	anyOrigin bool
	origins   map[string]bool // as config.ParseOrigin spells them
	hosts     map[string]bool // "name" (any port) and "name:port"
	listen    listenKind
	// listenHost is the listen host in lower case, listenIP the same
	// when it is one IP address.
	listenHost string
	listenIP   netip.Addr
	// addr is the server's address (Server.Addr), whose port is this
	// API's when a request does not say on which it arrived.
	addr func() string
	// errf answers a refusal.
	errf ErrorWriter
}

// listenKind is what the listen address reaches, and so which names and
// addresses a Host header may give for it.
type listenKind int

const (
	listenName     listenKind = iota // a DNS name: that name
	listenOneIP                      // one IP address: that address
	listenLoopback                   // localhost or a loopback IP: every loopback IP, and localhost
	listenAll                        // 0.0.0.0, :: or no host: every IP address, and localhost
)

// newGuard builds the checks of cfg, which Validate has accepted.
func newGuard(cfg ServerConfig, addr func() string) *guard {
	g := &guard{origins: map[string]bool{}, hosts: map[string]bool{}, addr: addr, errf: writeError}
	for _, o := range cfg.AllowedOrigins {
		o, _ = config.ParseOrigin(o)
		g.anyOrigin = g.anyOrigin || o == "*"
		g.origins[o] = true
	}
	for _, h := range cfg.AllowedHosts {
		host, port, _ := config.ParseAllowedHost(h)
		if port != "" {
			host = net.JoinHostPort(host, port)
		}
		g.hosts[host] = true
	}
	host, _, _ := net.SplitHostPort(cfg.Listen)
	g.listenHost = strings.ToLower(strings.TrimSuffix(host, "."))
	ip, err := netip.ParseAddr(host)
	ip = ip.Unmap().WithZone("")
	switch {
	case host == "" || (err == nil && ip.IsUnspecified()):
		g.listen = listenAll
	case isLoopback(g.listenHost):
		g.listen = listenLoopback
	case err == nil:
		g.listen, g.listenIP = listenOneIP, ip
	}
	return g
}

// wrap refuses a request that fails the Host or the Origin check (403),
// answers the CORS preflight of an allowed origin, and marks the answers
// to an allowed origin as readable by it.
func (g *guard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.checkHost(r); err != nil {
			g.errf(w, Status(err), errMessage(err))
			return
		}
		origin, err := g.checkOrigin(r)
		if len(g.origins) > 0 {
			// The answer depends on the Origin: a cache must not give
			// one origin's answer to another.
			w.Header().Add("Vary", "Origin")
		}
		if err != nil {
			g.errf(w, Status(err), errMessage(err))
			return
		}
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		// The origin itself rather than "*", which browsers refuse
		// with credentials.
		h.Set("Access-Control-Allow-Origin", origin)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			// Ten minutes: few preflights, and a change of
			// allowed_origins reaches the browser soon.
			h.Set("Access-Control-Max-Age", "600")
			if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
				// Chromium asks before a public page may reach a
				// private or loopback address; the origin is allowed.
				h.Set("Access-Control-Allow-Private-Network", "true")
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", strings.Join([]string{HeaderLength, HeaderConsistency, HeaderApplied, HeaderLastContact}, ", "))
		next.ServeHTTP(w, r)
	})
}

// checkHost accepts a Host header that names this API: a name in
// allowed_hosts, or, on the port the request arrived on, the listen
// address, localhost when loopback reaches the listener, an IP address
// the listener is on, or the address the connection arrived at. An IP
// address or localhost cannot be rebound to another machine by a page's
// DNS; any other name can, so it must be allowed by name.
func (g *guard) checkHost(r *http.Request) error {
	if r.Host == "" {
		// HTTP/1.0 without a Host: not a browser, which always sends one.
		return nil
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(r.Host, "["), "]")
	}
	if port == "" {
		port = "80"
		if r.TLS != nil {
			port = "443"
		}
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if g.hosts[host] || g.hosts[net.JoinHostPort(host, port)] {
		return nil
	}
	local := localAddr(r)
	ownPort := strconv.Itoa(int(local.Port()))
	if !local.IsValid() {
		_, ownPort, _ = net.SplitHostPort(g.addr())
	}
	if port == ownPort && g.names(host, local.Addr()) {
		return nil
	}
	return &statusError{http.StatusForbidden, fmt.Sprintf("request refused: Host %q is not this API's address; add the name to api.allowed_hosts to allow it", r.Host)}
}

// names reports whether host, without its port, names this API without
// being allowed by name; local is the address the request arrived at
// (invalid if unknown).
func (g *guard) names(host string, local netip.Addr) bool {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		switch {
		case host == "localhost":
			return g.listen == listenLoopback || g.listen == listenAll || local.IsLoopback()
		case g.listen == listenName:
			return host == g.listenHost
		}
		return false
	}
	ip = ip.Unmap().WithZone("")
	switch {
	case g.listen == listenAll:
		return true
	case g.listen == listenLoopback && ip.IsLoopback():
		return true
	}
	return ip == g.listenIP || ip == local
}

// localAddr is the address the request's connection arrived at, invalid
// when the handler was not called by an http.Server over TCP.
func localAddr(r *http.Request) netip.AddrPort {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// checkOrigin refuses a request with an Origin header outside
// allowed_origins, and an unsafe one the browser marks as sent by another
// site without an Origin. It returns the allowed Origin, or "" for a
// request without one (the CLI, the Go client, curl).
func (g *guard) checkOrigin(r *http.Request) (string, error) {
	origins := r.Header.Values("Origin")
	switch {
	case len(origins) == 0:
		site := r.Header.Get("Sec-Fetch-Site")
		if (site == "cross-site" || site == "same-site") && !safeMethod(r.Method) && !g.anyOrigin {
			return "", &statusError{http.StatusForbidden, fmt.Sprintf("request refused: the browser sent it from another site (Sec-Fetch-Site: %s) and it names no Origin in api.allowed_origins", site)}
		}
		return "", nil
	case len(origins) > 1:
		return "", &statusError{http.StatusForbidden, fmt.Sprintf("request refused: it has %d Origin headers", len(origins))}
	}
	o := origins[0]
	if g.anyOrigin || g.origins[strings.ToLower(o)] {
		return o, nil
	}
	return "", &statusError{http.StatusForbidden, fmt.Sprintf("request refused: Origin %q is not in api.allowed_origins", o)}
}

// safeMethod: a method a browser sends cross-site without a preflight and
// without an Origin, which must change nothing.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// bodyUse is what a route reads from the request body.
type bodyUse int

const (
	noBody   bodyUse = iota // nothing: a body is ignored
	jsonBody                // one JSON object (decodeJSON)
	fileBody                // an add's file: raw, or a multipart part
)

// checkContentType refuses a body whose type the route does not read
// (415). A request without a body needs no type.
func checkContentType(r *http.Request, use bodyUse) error {
	if use == noBody || r.ContentLength == 0 {
		return nil
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case err != nil && mt == "":
	case use == jsonBody && mt == "application/json":
		return nil
	case use == fileBody && (mt == "application/octet-stream" || mt == "multipart/form-data"):
		return nil
	}
	return contentTypeError(r, use)
}

// contentTypeError is the 415 of a body of the wrong type for use.
func contentTypeError(r *http.Request, use bodyUse) error {
	want := "Content-Type: application/json"
	if use == fileBody {
		want = "Content-Type: application/octet-stream (the file itself) or multipart/form-data"
	}
	got := "; the request has none"
	if ct := r.Header.Get("Content-Type"); ct != "" {
		got = fmt.Sprintf(", not %q", ct)
	}
	return &statusError{http.StatusUnsupportedMediaType, fmt.Sprintf("request refused: %s %s needs %s%s", r.Method, r.URL.Path, want, got)}
}
