package api

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoal-project/shoal/config"
	"github.com/shoal-project/shoal/dag"
)

// DefaultMaxBodyBytes bounds JSON request bodies when ServerConfig gives no
// bound: pin and peer requests are a few hundred bytes, so 1 MiB refuses
// abuse early (the same default as config.Default).
const DefaultMaxBodyBytes = 1 << 20

// shutdownGrace is how long Close lets in-flight requests finish before it
// cancels them: long enough for any pin or status request, while adds and
// pins with --wait, which may run for hours, are cancelled.
const shutdownGrace = 5 * time.Second

// ServerConfig configures a Server; config.API holds the same fields as the
// operator writes them.
type ServerConfig struct {
	// Listen is HOST:PORT, used by Start.
	Listen string
	// BasicAuth maps user names to passwords.
	BasicAuth map[string]string
	// BearerTokens are accepted as "Authorization: Bearer TOKEN".
	BearerTokens []string
	// MaxBodyBytes bounds JSON request bodies; 0 means
	// DefaultMaxBodyBytes. Uploads to /add are not bounded: they stream.
	MaxBodyBytes int64
	// AllowUnauthenticatedRemote permits a non-loopback Listen without
	// auth.
	AllowUnauthenticatedRemote bool
	// AllowedOrigins are the browser origins, SCHEME://HOST[:PORT] ("*":
	// any), whose requests are served; a request with another Origin is
	// refused. Empty: no web page may call the API.
	AllowedOrigins []string
	// AllowedHosts are names, "NAME" (any port) or "NAME:PORT", that the
	// Host header may give besides the API's own address (doc.go).
	AllowedHosts []string
	// BodyIdleTimeout, WriteIdleTimeout and DownloadIdleTimeout bound each
	// read of a request body, each write of an answer and each write of
	// a cat or export (deadline.go); 0: the defaults.
	BodyIdleTimeout     time.Duration
	WriteIdleTimeout    time.Duration
	DownloadIdleTimeout time.Duration
	// TLS, when not nil, makes the server serve HTTPS only (HTTP/1.1,
	// TLS 1.2 at least), with its certificate; LoadTLS reads one from
	// files. NewServer uses a copy. nil: plain HTTP.
	TLS *tls.Config
}

// Validate checks the fields against each other.
func (c ServerConfig) Validate() error {
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("API listen address %q is not HOST:PORT", c.Listen)
	}
	if !c.authEnabled() && !c.AllowUnauthenticatedRemote && !isLoopback(host) {
		return fmt.Errorf("API listen address %s is not a loopback address and no auth is configured; configure basic auth or bearer tokens, or allow unauthenticated remote access", c.Listen)
	}
	if c.MaxBodyBytes < 0 {
		return fmt.Errorf("API max body bytes %d is negative", c.MaxBodyBytes)
	}
	if c.BodyIdleTimeout < 0 || c.WriteIdleTimeout < 0 || c.DownloadIdleTimeout < 0 {
		return errors.New("API idle timeouts must not be negative")
	}
	if c.TLS != nil {
		if err := validateTLS(c.TLS); err != nil {
			return err
		}
	}
	for user := range c.BasicAuth {
		if user == "" || strings.Contains(user, ":") {
			return fmt.Errorf("API basic auth user %q must be non-empty and hold no colon", user)
		}
	}
	for _, t := range c.BearerTokens {
		if t == "" {
			return errors.New("API bearer tokens must not be empty")
		}
	}
	for _, o := range c.AllowedOrigins {
		if _, err := config.ParseOrigin(o); err != nil {
			return fmt.Errorf("API allowed origins: %w", err)
		}
	}
	for _, h := range c.AllowedHosts {
		if _, _, err := config.ParseAllowedHost(h); err != nil {
			return fmt.Errorf("API allowed hosts: %w", err)
		}
	}
	return nil
}

func (c ServerConfig) authEnabled() bool { return len(c.BasicAuth) > 0 || len(c.BearerTokens) > 0 }

// isLoopback reports whether host is only reachable from this machine. An
// empty host (":9094") listens on every interface.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server serves a Backend over HTTP. Start (or Serve) starts it; Close
// stops it and waits for every request it was handling.
type Server struct {
	cfg     ServerConfig
	maxBody int64
	b       Backend
	version string
	handler http.Handler
	srv     *http.Server
	// base is the parent of every request's context; cancel cancels the
	// requests still running when the shutdown grace has passed.
	base   context.Context
	cancel context.CancelFunc

	// errf writes the refusals of the checks around the routes (guard,
	// auth, shutdown) in the routes' own error shape.
	errf ErrorWriter

	mu       sync.Mutex
	ln       net.Listener
	closing  bool
	inflight sync.WaitGroup // handlers running; Add under mu while !closing
	serving  sync.WaitGroup // Start's Serve goroutine
}

// NewServer returns a server of b. It refuses a configuration that would
// expose the API to the network without auth. version is what /version
// reports (and ID, when the backend leaves its version empty).
func NewServer(cfg ServerConfig, b Backend, version string) (*Server, error) {
	s := &Server{cfg: cfg, maxBody: cfg.MaxBodyBytes, b: b, version: version}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	return s.init(s.routes(), writeError)
}

// ErrorWriter answers a refused request with code and one sentence.
type ErrorWriter func(w http.ResponseWriter, code int, msg string)

// NewHandlerServer returns a server of h behind the checks of the API's
// own routes (Host and Origin guard, auth, TLS, shutdown), which answer
// their refusals through errf: another API on the same rules (package
// kuborpc).
func NewHandlerServer(cfg ServerConfig, h http.Handler, errf ErrorWriter) (*Server, error) {
	return (&Server{cfg: cfg}).init(h, errf)
}

func (s *Server) init(routes http.Handler, errf ErrorWriter) (*Server, error) {
	if err := s.cfg.Validate(); err != nil {
		return nil, err
	}
	cfg := s.cfg
	s.errf = errf
	s.base, s.cancel = context.WithCancel(context.Background())
	g := newGuard(cfg, s.Addr)
	g.errf = errf
	s.handler = s.track(g.wrap(s.authenticate(routes)))
	s.srv = &http.Server{
		Handler: s.handler,
		// Bounds a client that opens a connection and sends nothing (or
		// a header a byte at a time), and a TLS handshake too. Bodies
		// and answers have idle deadlines instead of ReadTimeout and
		// WriteTimeout, which would cut long adds and cats (deadline.go).
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return s.base },
		TLSConfig:         serverTLS(cfg.TLS),
		Protocols:         http1Only(),
	}
	return s, nil
}

// Handler is the server's whole HTTP handler (checks and auth included), for
// httptest and for mounting the API elsewhere.
func (s *Server) Handler() http.Handler { return s.handler }

// Start listens on the configured address and serves in the background
// until Close.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on API address %s: %w", s.cfg.Listen, err)
	}
	if err := s.setListener(ln); err != nil {
		ln.Close()
		return err
	}
	s.serving.Go(func() { _ = s.serve(ln) })
	return nil
}

// Serve serves on ln until Close, when it returns nil. With
// ServerConfig.TLS ln is a plain listener: Serve does the TLS.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.setListener(ln); err != nil {
		return err
	}
	if err := s.serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Server) setListener(ln net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return errors.New("the API server is closed")
	case s.ln != nil:
		return errors.New("the API server is already serving")
	}
	s.ln = ln
	return nil
}

// Addr is the address the server listens on (with the actual port when the
// configuration asked for port 0), or the configured one before it starts.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.cfg.Listen
}

// Close stops accepting requests, lets those in flight finish for a few
// seconds, then cancels the contexts of any still running and waits for
// them to return.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	return s.Shutdown(ctx)
}

// Shutdown is Close with the grace period ending when ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.cancel()
		_ = s.srv.Close()
	}
	s.inflight.Wait()
	s.serving.Wait()
	s.cancel()
	return nil
}

// track counts running handlers so that Shutdown can wait for them, and
// refuses requests that arrive while it does.
func (s *Server) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			s.errf(w, http.StatusServiceUnavailable, "the API server is shutting down")
			return
		}
		s.inflight.Add(1)
		s.mu.Unlock()
		defer s.inflight.Done()
		next.ServeHTTP(w, r)
	})
}

// authenticate requires valid credentials when any are configured. /health
// stays open for load balancers and supervisors: it says nothing but "up".
func (s *Server) authenticate(next http.Handler) http.Handler {
	if !s.cfg.authEnabled() {
		return next
	}
	// Secrets are compared as SHA-256 digests so that the comparison takes
	// the same time whatever their lengths.
	users := make(map[string][32]byte, len(s.cfg.BasicAuth))
	for u, p := range s.cfg.BasicAuth {
		users[u] = sha256.Sum256([]byte(p))
	}
	tokens := make([][32]byte, len(s.cfg.BearerTokens))
	for i, t := range s.cfg.BearerTokens {
		tokens[i] = sha256.Sum256([]byte(t))
	}
	var challenges []string
	if len(users) > 0 {
		challenges = append(challenges, `Basic realm="shoal", charset="UTF-8"`)
	}
	if len(tokens) > 0 {
		challenges = append(challenges, `Bearer realm="shoal"`)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			next.ServeHTTP(w, r)
			return
		}
		ok := false
		given := r.Header.Get("Authorization")
		if user, pass, isBasic := r.BasicAuth(); isBasic {
			want, known := users[user]
			got := sha256.Sum256([]byte(pass))
			ok = subtle.ConstantTimeCompare(got[:], want[:]) == 1 && known
		} else if scheme, tok, found := strings.Cut(given, " "); found && strings.EqualFold(scheme, "Bearer") {
			got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
			for _, want := range tokens {
				// No early exit: every token is compared.
				if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
					ok = true
				}
			}
		}
		if ok {
			next.ServeHTTP(w, r)
			return
		}
		for _, c := range challenges {
			w.Header().Add("WWW-Authenticate", c)
		}
		msg := "this API needs credentials: basic auth or a bearer token"
		if given != "" {
			msg = "the API credentials are wrong"
		}
		s.errf(w, http.StatusUnauthorized, msg)
	})
}

// handler serves one endpoint given its checked query. It writes a
// successful answer itself and returns the error of a failed one.
type handler func(w http.ResponseWriter, r *http.Request, q url.Values) error

// routes maps each endpoint of doc.go to its handler and the query
// parameters it takes. A known path asked with another method answers 405
// and an unknown path 404, both in JSON.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	routes := []struct {
		pattern string
		query   []string
		state   stateUse
		body    bodyUse
		h       handler
	}{
		{"GET /id", nil, noState, noBody, s.getID},
		{"GET /version", nil, noState, noBody, s.getVersion},
		{"GET /health", nil, noState, noBody, s.getHealth},
		{"GET /health/peers", nil, readsState, noBody, s.getPeerHealth},
		{"GET /health/lost", nil, readsState, noBody, s.getLost},
		{"GET /peers", nil, readsState, noBody, s.getPeers},
		{"DELETE /peers/{id}", nil, changesState, noBody, s.deletePeer},
		{"GET /pins", nil, readsState, noBody, s.getPins},
		{"POST /pins", nil, changesState, jsonBody, s.postPin},
		{"DELETE /pins/{cid}", nil, changesState, noBody, s.deletePin},
		{"GET /status", []string{"local", "filter"}, readsState, noBody, s.getStatusAll},
		{"GET /status/{cid}", []string{"local"}, readsState, noBody, s.getStatus},
		{"POST /add", addQueryParams, changesState, fileBody, s.postAdd},
		{"GET /cat/{cid}", []string{"offset", "length"}, readsState, noBody, s.getCat},
		{"GET /export/{cid}", nil, readsState, noBody, s.getExport},
		{"POST /verify", []string{"cid", "local"}, changesState, noBody, s.postVerify},
		{"POST /recover", []string{"cid", "local"}, changesState, noBody, s.postRecover},
		{"POST /sync", []string{"local"}, changesState, noBody, s.postSync},
		{"POST /peers/{id}/drain", nil, changesState, noBody, s.postDrain},
		{"POST /rebalance", []string{"dry-run", "tolerance"}, readsState, noBody, s.postRebalance},
	}
	allowed := map[string][]string{}
	var paths []string
	for _, rt := range routes {
		query := rt.query
		if rt.state == readsState {
			query = append(slices.Clip(query), "consistency")
		}
		idle := cmp.Or(s.cfg.WriteIdleTimeout, DefaultWriteIdleTimeout)
		if rt.pattern == "GET /cat/{cid}" || rt.pattern == "GET /export/{cid}" {
			idle = cmp.Or(s.cfg.DownloadIdleTimeout, DefaultDownloadIdleTimeout)
		}
		bodyIdle := cmp.Or(s.cfg.BodyIdleTimeout, DefaultBodyIdleTimeout)
		mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			w, r, done := withDeadlines(w, r, idle, bodyIdle, rt.body != noBody)
			defer done()
			q, err := queryParams(r, query...)
			if err == nil {
				err = checkContentType(r, rt.body)
			}
			if err == nil && rt.state != noState {
				err = s.barrier(w, r, q, rt.state)
			}
			if err == nil {
				err = rt.h(w, r, q)
			}
			if err != nil {
				writeErr(w, err)
			}
		})
		method, path, _ := strings.Cut(rt.pattern, " ")
		if allowed[path] == nil {
			paths = append(paths, path)
		}
		allowed[path] = append(allowed[path], method)
		if method == http.MethodGet {
			allowed[path] = append(allowed[path], http.MethodHead)
		}
	}
	for _, path := range paths {
		allow := strings.Join(allowed[path], ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s is not supported; use %s", r.Method, path, allow))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API endpoint at %s", r.URL.Path))
	})
	return mux
}

// stateUse is what a route does with the pinset, and so whether it waits
// for a ReadBarrier first.
type stateUse int

const (
	noState      stateUse = iota // /id, /version, /health: no barrier
	readsState                   // a read: consistent unless ?consistency=stale
	changesState                 // a write: always consistent, so its checks see every acknowledged write
)

// barrier makes the request's view of the pinset consistent (unless it
// asked for a stale read) and says in headers what that view reflects.
func (s *Server) barrier(w http.ResponseWriter, r *http.Request, q url.Values, use stateUse) error {
	mode := q.Get("consistency")
	switch mode {
	case "":
		mode = ConsistencyConsistent
	case ConsistencyConsistent, ConsistencyStale:
	default:
		return badRequest("query parameter consistency must be %s or %s, not %q", ConsistencyConsistent, ConsistencyStale, mode)
	}
	rb, ok := s.b.(ReadBarrier)
	if !ok {
		return nil
	}
	stale := mode == ConsistencyStale && use == readsState
	info, err := rb.ReadBarrier(r.Context(), stale)
	if err != nil {
		if use == readsState {
			return fmt.Errorf("%w; retry, or read this peer's own, possibly stale, state with --consistency stale (API: ?consistency=stale)", err)
		}
		return err
	}
	info.Consistency = ConsistencyConsistent
	if stale {
		info.Consistency = ConsistencyStale
	}
	info.SetHeaders(w.Header())
	return nil
}

func (s *Server) getID(w http.ResponseWriter, r *http.Request, _ url.Values) error {
	id := s.b.ID(r.Context())
	if id.Version == "" {
		id.Version = s.version
	}
	writeJSON(w, http.StatusOK, id)
	return nil
}

func (s *Server) getVersion(w http.ResponseWriter, _ *http.Request, _ url.Values) error {
	writeJSON(w, http.StatusOK, map[string]string{"version": s.version})
	return nil
}

func (s *Server) getHealth(w http.ResponseWriter, _ *http.Request, _ url.Values) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// getLost answers the parts with no copy left (LostReporter).
func (s *Server) getLost(w http.ResponseWriter, r *http.Request, _ url.Values) error {
	lr, ok := s.b.(LostReporter)
	if !ok {
		return &statusError{http.StatusNotImplemented, "this peer does not monitor its members"}
	}
	lost, err := lr.Lost(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(lost))
	return nil
}

// getPeerHealth answers every member's last heartbeat (HealthReporter).
func (s *Server) getPeerHealth(w http.ResponseWriter, r *http.Request, _ url.Values) error {
	hr, ok := s.b.(HealthReporter)
	if !ok {
		return &statusError{http.StatusNotImplemented, "this peer does not monitor its members"}
	}
	h, err := hr.Health(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(h))
	return nil
}

func (s *Server) getPeers(w http.ResponseWriter, r *http.Request, _ url.Values) error {
	peers, err := s.b.Peers(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(peers))
	return nil
}

func (s *Server) deletePeer(w http.ResponseWriter, r *http.Request, _ url.Values) error {
	id, err := peer.Decode(r.PathValue("id"))
	if err != nil {
		return badRequest("%q is not a peer ID", r.PathValue("id"))
	}
	if err := s.b.RemovePeer(r.Context(), id.String()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) getPins(w http.ResponseWriter, r *http.Request, _ url.Values) error {
	pins, err := s.b.Pins(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(pins))
	return nil
}

func (s *Server) postPin(w http.ResponseWriter, r *http.Request, _ url.Values) error {
	var req PinRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.CID == "" {
		return badRequest("the pin request has no cid")
	}
	c, err := parseCID(req.CID)
	if err != nil {
		return err
	}
	req.CID = c
	if err := checkReplication(req.RMin, req.RMax); err != nil {
		return err
	}
	if req.Timeout < 0 {
		return badRequest("timeout %s is negative", req.Timeout)
	}
	pin, err := s.b.Pin(r.Context(), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pin)
	return nil
}

func (s *Server) deletePin(w http.ResponseWriter, r *http.Request, _ url.Values) error {
	c, err := parseCID(r.PathValue("cid"))
	if err != nil {
		return err
	}
	pin, err := s.b.Unpin(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pin)
	return nil
}

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request, q url.Values) error {
	local, err := boolParam(q, "local")
	if err != nil {
		return err
	}
	c, err := parseCID(r.PathValue("cid"))
	if err != nil {
		return err
	}
	st, err := s.b.Status(r.Context(), c, local)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// getStatusAll streams NDJSON, one PinStatus a line, each line flushed so
// that a client prints a large pinset as it arrives.
func (s *Server) getStatusAll(w http.ResponseWriter, r *http.Request, q url.Values) error {
	local, err := boolParam(q, "local")
	if err != nil {
		return err
	}
	filter, err := ParseStatusFilter(q.Get("filter"))
	if err != nil {
		return badRequest("query parameter filter: %v", err)
	}
	sts, err := s.b.StatusAll(r.Context(), local)
	if err != nil {
		return err
	}
	sts = slices.DeleteFunc(sts, func(st PinStatus) bool { return !filter.Match(st) })
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	for _, st := range sts {
		if enc.Encode(st) != nil || rc.Flush() != nil {
			break // the client went away
		}
	}
	return nil
}

// addQueryParams are the query parameters of POST /add, spelled as the
// CLI's flags.
var addQueryParams = []string{
	"chunker", "trickle", "cid-version", "raw-leaves", "hash", "inline", "inline-limit",
	"wrap-with-directory", "name", "rmin", "rmax", "allow-big-block", "shard", "shard-size", "events",
}

// postAdd streams the file into Backend.Add: the body is never held in
// memory or on disk here. The file is the whole body when its type is
// application/octet-stream (the CLI's way: nothing to parse, large reads),
// or the first part of a multipart/form-data body (curl -F), whose
// filename becomes the add's name unless the query gives one. Any other
// type is refused (415).
func (s *Server) postAdd(w http.ResponseWriter, r *http.Request, q url.Values) error {
	p, err := parseAddParams(q)
	if err != nil {
		return err
	}
	body := &upload{r: r.Body, length: r.ContentLength}
	switch mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt {
	case "application/octet-stream":
	case "multipart/form-data":
		mr, err := r.MultipartReader()
		if err != nil {
			return badRequest("the multipart body is malformed: %v", err)
		}
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return badRequest("the multipart body holds no file")
		}
		if err != nil {
			return badRequest("the multipart body is malformed: %v", err)
		}
		defer part.Close()
		if p.Name == "" {
			p.Name = part.FileName()
		}
		body.r, body.multipart = part, true
	default:
		// The route refused a body of another type; this is an empty
		// one without a type.
		return contentTypeError(r, fileBody)
	}
	events, err := boolParam(q, "events")
	if err != nil {
		return err
	}
	if events {
		return s.addEvents(w, r, body, p)
	}
	res, err := s.b.Add(r.Context(), body, p)
	if err != nil {
		return body.cause(err)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// addEvents answers POST /add?events=true with NDJSON AddEvents, each line
// flushed as it is written, while the upload still streams in: the first
// event sends the headers. A failure before it is answered with its
// status like any other; after it, with an error event.
func (s *Server) addEvents(w http.ResponseWriter, r *http.Request, body *upload, p AddParams) error {
	rc := http.NewResponseController(w)
	// Without this, an HTTP/1 server would read the rest of the upload
	// before it sends the first event's headers.
	if err := rc.EnableFullDuplex(); err != nil {
		return fmt.Errorf("stream add events: %w", err)
	}
	// A full-duplex handler that returns before the upload ends must close
	// the body itself, or the server's read of the next request races the
	// body's reader and panics (golang/go#68560).
	defer r.Body.Close()
	started := false
	enc := json.NewEncoder(w)
	send := func(ev AddEvent) error {
		if !started {
			started = true
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusOK)
		}
		if err := enc.Encode(ev); err != nil {
			return fmt.Errorf("send add event: %w", err)
		}
		if err := rc.Flush(); err != nil {
			return fmt.Errorf("send add event: %w", err)
		}
		return nil
	}
	var res AddResult
	var err error
	if as, ok := s.b.(AddStreamer); ok {
		res, err = as.AddEvents(r.Context(), body, p, func(sh ShardStatus) error {
			return send(AddEvent{Type: AddEventShard, Shard: &sh})
		})
	} else {
		res, err = s.b.Add(r.Context(), body, p)
	}
	err = body.cause(err)
	switch {
	case err != nil && !started:
		return err
	case err != nil:
		_ = send(AddEvent{Type: AddEventError, Error: &Error{Code: Status(err), Message: errMessage(err)}})
	default:
		_ = send(AddEvent{Type: AddEventRoot, Result: &res})
	}
	return nil
}

// getCat streams the bytes of a pinned file (FileReader). Errors found
// before the first byte are answered with their status: 400 for a
// malformed or negative offset or length and for an offset beyond the end,
// 404 for a root that is not pinned. After the first byte they end the
// chunked body with the TrailerError trailer.
func (s *Server) getCat(w http.ResponseWriter, r *http.Request, q url.Values) error {
	fr, ok := s.b.(FileReader)
	if !ok {
		return &statusError{http.StatusNotImplemented, "this peer cannot read files back"}
	}
	c, err := parseCID(r.PathValue("cid"))
	if err != nil {
		return err
	}
	offset, err := int64Param(q, "offset", 0, 0)
	if err != nil {
		return err
	}
	length, err := int64Param(q, "length", -1, -1)
	if err != nil {
		return err
	}
	cw := &catWriter{w: w, length: -1, head: r.Method == http.MethodHead, contentType: "application/octet-stream"}
	return cw.finish(fr.Cat(r.Context(), c, offset, length, cw))
}

// getExport streams the whole DAG of a pinned root as a CAR file
// (Exporter), with getCat's error handling: a status before the first
// byte, the TrailerError trailer after it.
func (s *Server) getExport(w http.ResponseWriter, r *http.Request, _ url.Values) error {
	ex, ok := s.b.(Exporter)
	if !ok {
		return &statusError{http.StatusNotImplemented, "this peer cannot export DAGs"}
	}
	c, err := parseCID(r.PathValue("cid"))
	if err != nil {
		return err
	}
	cw := &catWriter{w: w, length: -1, head: r.Method == http.MethodHead, contentType: ContentTypeCAR}
	return cw.finish(ex.Export(r.Context(), c, cw))
}

// finish ends a stream that the backend's call returned err: the error
// itself when nothing was sent yet, else the TrailerError trailer.
func (c *catWriter) finish(err error) error {
	if errors.Is(err, errHeadDone) {
		err = nil
	}
	if !c.started {
		if err != nil {
			return err
		}
		c.start()
		return nil
	}
	if err == nil && !c.head && c.length >= 0 && c.n != c.length {
		err = fmt.Errorf("the backend wrote %d of the %d bytes it announced", c.n, c.length)
	}
	if err != nil {
		// As writeErr words it, on one line: a trailer value cannot hold
		// a line break.
		c.w.Header().Set(TrailerError, strings.Join(strings.Fields(errMessage(err)), " "))
	}
	return nil
}

// Message is the sentence the API answers err with: its message without
// the sentinel's text that the status already says.
func Message(err error) string { return errMessage(err) }

// errMessage is err's message without the sentinel's own text where it
// leads or ends it ("bad request: X", "X: not found"): the status says it.
func errMessage(err error) string {
	msg := err.Error()
	for _, s := range []error{ErrBadRequest, ErrNotFound, ErrConflict, ErrUnavailable} {
		msg = strings.TrimPrefix(msg, s.Error()+": ")
		msg = strings.TrimSuffix(msg, ": "+s.Error())
	}
	return msg
}

// int64Param reads an optional integer parameter, refusing values below
// least.
func int64Param(q url.Values, name string, def, least int64) (int64, error) {
	if !q.Has(name) {
		return def, nil
	}
	n, err := strconv.ParseInt(q.Get(name), 10, 64)
	if err != nil || n < least {
		return 0, badRequest("query parameter %s must be an integer of at least %d, not %q", name, least, q.Get(name))
	}
	return n, nil
}

// errHeadDone stops a Cat answering HEAD at its first Write: the headers
// are all that is sent.
var errHeadDone = errors.New("HEAD request: headers sent")

// catWriter is the CatWriter of one GET /cat or /export: it sends the
// headers at the first Write (or when the backend returns without
// writing), counting the bytes.
type catWriter struct {
	w           http.ResponseWriter
	contentType string
	head        bool
	started     bool
	length      int64 // announced by SetLength; -1: not announced
	n           int64
}

func (c *catWriter) SetLength(n int64) {
	if !c.started {
		c.length = n
	}
}

func (c *catWriter) start() {
	c.started = true
	h := c.w.Header()
	h.Set("Content-Type", c.contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Trailer", TrailerError)
	if c.length >= 0 {
		h.Set(HeaderLength, strconv.FormatInt(c.length, 10))
	}
	c.w.WriteHeader(http.StatusOK)
}

func (c *catWriter) Write(p []byte) (int, error) {
	if !c.started {
		c.start()
	}
	if c.head {
		return 0, errHeadDone
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// DAGOptions are the DAG flags of an add as package dag takes them.
func (p AddParams) DAGOptions() dag.Options {
	o := dag.Options{
		Chunker:       p.Chunker,
		AllowBigBlock: p.AllowBigBlock,
		Trickle:       p.Trickle,
		Hash:          p.Hash,
		Inline:        p.Inline,
		InlineLimit:   p.InlineLimit,
	}
	if p.CIDVersion != nil {
		o.CIDVersion, o.CIDVersionSet = *p.CIDVersion, true
	}
	if p.RawLeaves != nil {
		o.RawLeaves, o.RawLeavesSet = *p.RawLeaves, true
	}
	return o
}

// parseAddParams reads and validates the query of POST /add, so that a bad
// flag is refused before any byte of the upload is read.
func parseAddParams(q url.Values) (AddParams, error) {
	var p AddParams
	var err error
	intParam := func(name string) *int {
		if err != nil || !q.Has(name) {
			return nil
		}
		n, perr := strconv.Atoi(q.Get(name))
		if perr != nil {
			err = badRequest("query parameter %s must be an integer, not %q", name, q.Get(name))
			return nil
		}
		return &n
	}
	boolP := func(name string) *bool {
		if err != nil || !q.Has(name) {
			return nil
		}
		b, berr := boolParam(q, name)
		if berr != nil {
			err = berr
			return nil
		}
		return &b
	}
	deref := func(b *bool) bool { return b != nil && *b }
	p.Chunker = q.Get("chunker")
	p.Hash = q.Get("hash")
	p.Name = q.Get("name")
	p.Trickle = deref(boolP("trickle"))
	p.Inline = deref(boolP("inline"))
	p.Wrap = deref(boolP("wrap-with-directory"))
	p.AllowBigBlock = deref(boolP("allow-big-block"))
	p.RawLeaves = boolP("raw-leaves")
	p.CIDVersion = intParam("cid-version")
	if n := intParam("inline-limit"); n != nil {
		p.InlineLimit = *n
	}
	if n := intParam("rmin"); n != nil {
		p.RMin = *n
	}
	if n := intParam("rmax"); n != nil {
		p.RMax = *n
	}
	p.Shard = deref(boolP("shard"))
	if q.Has("shard-size") && err == nil {
		n, perr := strconv.ParseInt(q.Get("shard-size"), 10, 64)
		if perr != nil || n <= 0 {
			return AddParams{}, badRequest("query parameter shard-size must be a positive byte count, not %q", q.Get("shard-size"))
		}
		p.ShardSize = n
	}
	if err != nil {
		return AddParams{}, err
	}
	if p.InlineLimit < 0 {
		return AddParams{}, badRequest("inline-limit %d is negative", p.InlineLimit)
	}
	if err := checkReplication(p.RMin, p.RMax); err != nil {
		return AddParams{}, err
	}
	if _, err := p.DAGOptions().Params(); err != nil {
		return AddParams{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return p, nil
}

// checkReplication validates the replication factors of a request, where 0
// means the configured default.
func checkReplication(rmin, rmax int) error {
	var err error
	switch {
	case rmin == 0 && rmax == 0:
	case rmin == 0:
		// Any valid maximum passes with a minimum of 1.
		err = config.CheckReplication(1, rmax)
	case rmax == 0:
		// Any valid minimum passes with a maximum of -1.
		err = config.CheckReplication(rmin, -1)
	default:
		err = config.CheckReplication(rmin, rmax)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return nil
}

// parseCID validates s and returns it in its canonical string form, so that
// the backend sees one spelling per CID. A CID whose hash shoal does not
// accept (dag.CheckCID) is refused here, before any backend sees it.
func parseCID(s string) (string, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return "", badRequest("%q is not a CID", s)
	}
	if err := dag.CheckCID(c); err != nil {
		return "", badRequest("%v", err)
	}
	return c.String(), nil
}

// queryParams parses the query and refuses parameters outside allowed and
// parameters given twice.
func queryParams(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("the query string is malformed")
	}
	for name, vals := range q {
		known := false
		for _, a := range allowed {
			known = known || a == name
		}
		switch {
		case !known && len(allowed) == 0:
			return nil, badRequest("%s takes no query parameters, got %q", r.URL.Path, name)
		case !known:
			return nil, badRequest("unknown query parameter %q (known: %s)", name, strings.Join(allowed, ", "))
		case len(vals) > 1:
			return nil, badRequest("query parameter %s is given %d times", name, len(vals))
		}
	}
	return q, nil
}

// boolParam reads an optional true/false parameter.
func boolParam(q url.Values, name string) (bool, error) {
	if !q.Has(name) {
		return false, nil
	}
	b, err := strconv.ParseBool(q.Get(name))
	if err != nil {
		return false, badRequest("query parameter %s must be true or false, not %q", name, q.Get(name))
	}
	return b, nil
}

// decodeJSON reads one JSON object of at most maxBody bytes into v,
// refusing unknown fields and trailing data.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, s.maxBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// One object only: anything after it but white space is an error.
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errTrailing
			if terr != nil && !isSyntaxError(terr) {
				err = terr
			}
		}
	}
	if err == nil {
		return nil
	}
	var (
		maxErr    *http.MaxBytesError
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &maxErr):
		return &statusError{http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is larger than %d bytes", maxErr.Limit)}
	case errors.Is(err, errTrailing):
		return badRequest("the request body holds more than one JSON value")
	case errors.As(err, &syntaxErr):
		return badRequest("the request body is malformed JSON at byte %d", syntaxErr.Offset)
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return badRequest("field %q of the request body must be %s, not %s", typeErr.Field, jsonKind(typeErr.Type), typeErr.Value)
	case errors.As(err, &typeErr):
		return badRequest("the request body must be a JSON object, not %s", typeErr.Value)
	case errors.Is(err, io.EOF):
		return badRequest("the request body is empty; expected a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("the request body ends in the middle of its JSON")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest("the request body has an unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	// A read error (the client went away) or a JSON error without a type.
	return badRequest("the request body could not be read: %v", strings.TrimPrefix(err.Error(), "json: "))
}

var errTrailing = errors.New("trailing data")

func isSyntaxError(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se)
}

// jsonKind names what JSON value a Go type takes.
func jsonKind(t reflect.Type) string {
	if t == reflect.TypeFor[time.Duration]() {
		return "an integer (nanoseconds)"
	}
	kind := t.Kind().String()
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"):
		return "an integer"
	case strings.HasPrefix(kind, "float"):
		return "a number"
	case kind == "bool":
		return "true or false"
	case kind == "string":
		return "a string"
	case kind == "slice", kind == "array":
		return "an array"
	}
	return "an object"
}

// statusError is an error answered with its own status and message.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &statusError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// Status is the HTTP status the API answers err with.
func Status(err error) int {
	var se *statusError
	switch {
	case errors.As(err, &se):
		return se.code
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeErr answers err with its status and message. The message drops the
// sentinel's own text where it leads or ends it ("bad request: X",
// "X: not found"): the status says it.
func writeErr(w http.ResponseWriter, err error) {
	writeError(w, Status(err), errMessage(err))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, Error{Code: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(Error{Code: code, Message: fmt.Sprintf("encode the answer: %v", err)})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
