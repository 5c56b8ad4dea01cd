// Package client is the Go client of shoal's REST API (package api): one
// method per Backend method, each one HTTP request. The CLI's commands are
// built on it.
//
// Errors are one sentence a user can read: *Error carries the server's
// message and status (and errors.Is matches it against api's sentinel
// errors); a daemon that is not running gives "cannot reach the shoal API at
// ADDR: is the daemon running?".
//
// An https:// address is verified against the system's roots, or, with
// WithRootCAs, against the given ones only. A certificate that fails gives
// "the shoal API at ADDR presented a certificate this client does not
// trust (x509: ...)", which wraps the x509 error for errors.As; an
// https:// address of a plain-HTTP API, and the reverse, each say which
// one the API serves.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"

	"github.com/shoal-project/shoal/api"
)

// Client talks to one peer's API. It is safe for concurrent use.
type Client struct {
	addr string   // as given, for messages
	base *url.URL // scheme, host and any path prefix
	hc   *http.Client
	auth func(*http.Request)
	// stale asks reads for the peer's own state (api.ConsistencyStale);
	// onRead sees what each answer's state reflects.
	stale  bool
	onRead func(api.ReadInfo)
	roots  *x509.CertPool // WithRootCAs
	ownHC  bool           // WithHTTPClient was given
	bad    error          // an option's error, for New
}

// Option configures a Client.
type Option func(*Client)

// WithBasicAuth sends user and password as HTTP basic auth.
func WithBasicAuth(user, password string) Option {
	return func(c *Client) { c.auth = func(r *http.Request) { r.SetBasicAuth(user, password) } }
}

// WithBearerToken sends "Authorization: Bearer token".
func WithBearerToken(token string) Option {
	return func(c *Client) {
		c.auth = func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
	}
}

// WithHTTPClient makes requests with hc instead of http.DefaultClient.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc, c.ownHC = hc, true }
}

// WithRootCAs verifies the certificate of an https:// API against the
// certificates of pool only, instead of the system's roots: the CA of a
// private PKI, or a self-signed certificate itself. It cannot be combined
// with WithHTTPClient, whose transport decides what it trusts.
func WithRootCAs(pool *x509.CertPool) Option {
	return func(c *Client) { c.roots = pool }
}

// WithConsistency sets the consistency of every read: api.ConsistencyConsistent
// (the server's default) or api.ConsistencyStale. New refuses anything else.
func WithConsistency(mode string) Option {
	return func(c *Client) {
		switch mode {
		case "", api.ConsistencyConsistent:
		case api.ConsistencyStale:
			c.stale = true
		default:
			c.bad = fmt.Errorf("consistency %q: use %s or %s", mode, api.ConsistencyConsistent, api.ConsistencyStale)
		}
	}
}

// WithReadInfo calls fn with what state each answer reflects (the
// api.ReadInfo headers), for the answers that carry them.
func WithReadInfo(fn func(api.ReadInfo)) Option {
	return func(c *Client) { c.onRead = fn }
}

// New returns a client of the API at addr: HOST:PORT (plain HTTP), or a
// URL such as https://host:port/prefix.
func New(addr string, opts ...Option) (*Client, error) {
	base, err := parseAddr(addr)
	if err != nil {
		return nil, err
	}
	c := &Client{addr: addr, base: base, hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	if c.bad != nil {
		return nil, c.bad
	}
	if c.roots != nil {
		if c.ownHC {
			return nil, errors.New("WithRootCAs cannot be combined with WithHTTPClient; set the roots in that client's transport")
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: c.roots, MinVersion: tls.VersionTLS12}
		c.hc = &http.Client{Transport: t}
	}
	return c, nil
}

func parseAddr(addr string) (*url.URL, error) {
	bad := fmt.Errorf("API address %q: use HOST:PORT, http://HOST:PORT or https://HOST:PORT", addr)
	if !strings.Contains(addr, "://") {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, bad
		}
		return &url.URL{Scheme: "http", Host: addr}, nil
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, bad
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Error is an answer of the API other than 2xx. Its Error is the server's
// message; errors.Is matches it with api.ErrBadRequest, api.ErrNotFound,
// api.ErrConflict and api.ErrUnavailable by status.
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap is the api sentinel error of the status, if any.
func (e *Error) Unwrap() error {
	switch e.Code {
	case http.StatusBadRequest:
		return api.ErrBadRequest
	case http.StatusNotFound:
		return api.ErrNotFound
	case http.StatusConflict:
		return api.ErrConflict
	case http.StatusServiceUnavailable:
		return api.ErrUnavailable
	}
	return nil
}

// netError is a failure to talk to the API at all: its message is the
// sentence a user reads, and it wraps the cause for errors.Is.
type netError struct {
	msg string
	err error
}

func (e *netError) Error() string { return e.msg }
func (e *netError) Unwrap() error { return e.err }

// errServesHTTPS: a request in plain HTTP reached an API that serves
// HTTPS.
var errServesHTTPS = errors.New("the API serves HTTPS")

// ID is the peer's identity and addresses.
func (c *Client) ID(ctx context.Context) (api.ID, error) {
	var id api.ID
	err := c.do(ctx, http.MethodGet, c.url(nil, "id"), nil, "", &id)
	return id, err
}

// Version is the daemon's version.
func (c *Client) Version(ctx context.Context) (string, error) {
	var v struct {
		Version string `json:"version"`
	}
	err := c.do(ctx, http.MethodGet, c.url(nil, "version"), nil, "", &v)
	return v.Version, err
}

// Health returns nil when the daemon answers.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, c.url(nil, "health"), nil, "", nil)
}

// Peers lists the cluster's peers, this one included.
func (c *Client) Peers(ctx context.Context) ([]api.Peer, error) {
	var peers []api.Peer
	err := c.do(ctx, http.MethodGet, c.url(nil, "peers"), nil, "", &peers)
	return peers, err
}

// PeerHealth returns every member's last heartbeat and metrics.
func (c *Client) PeerHealth(ctx context.Context) ([]api.PeerHealth, error) {
	var h []api.PeerHealth
	err := c.do(ctx, http.MethodGet, c.url(nil, "health", "peers"), nil, "", &h)
	return h, err
}

// Lost lists the parts whose every holder is gone.
func (c *Client) Lost(ctx context.Context) ([]api.LostPart, error) {
	var l []api.LostPart
	err := c.do(ctx, http.MethodGet, c.url(nil, "health", "lost"), nil, "", &l)
	return l, err
}

// RemovePeer removes the peer id from the cluster.
func (c *Client) RemovePeer(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, c.url(nil, "peers", id), nil, "", nil)
}

// Pin adds or updates a pin. With req.Wait it returns once the pin is
// pinned on req.RMin peers.
func (c *Client) Pin(ctx context.Context, req api.PinRequest) (api.Pin, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return api.Pin{}, err
	}
	var pin api.Pin
	err = c.do(ctx, http.MethodPost, c.url(nil, "pins"), bytes.NewReader(b), "application/json", &pin)
	return pin, err
}

// Unpin removes a pin and returns it.
func (c *Client) Unpin(ctx context.Context, cid string) (api.Pin, error) {
	var pin api.Pin
	err := c.do(ctx, http.MethodDelete, c.url(nil, "pins", cid), nil, "", &pin)
	return pin, err
}

// Pins is the cluster's pinset.
func (c *Client) Pins(ctx context.Context) ([]api.Pin, error) {
	var pins []api.Pin
	err := c.do(ctx, http.MethodGet, c.url(nil, "pins"), nil, "", &pins)
	return pins, err
}

// Status is one pin's state on its peers; local asks for the answering
// peer's own view only.
func (c *Client) Status(ctx context.Context, cid string, local bool) (api.PinStatus, error) {
	var st api.PinStatus
	err := c.do(ctx, http.MethodGet, c.url(localQuery(local), "status", cid), nil, "", &st)
	return st, err
}

// StatusAll is the state of every pin.
func (c *Client) StatusAll(ctx context.Context, local bool) ([]api.PinStatus, error) {
	sts := []api.PinStatus{}
	err := c.StreamStatus(ctx, local, func(st api.PinStatus) error {
		sts = append(sts, st)
		return nil
	})
	return sts, err
}

// StreamStatus calls fn with the state of each pin as the stream delivers
// it, so that a large pinset is never held whole. An error from fn stops
// the stream and is returned.
func (c *Client) StreamStatus(ctx context.Context, local bool, fn func(api.PinStatus) error) error {
	return c.StreamStatusFiltered(ctx, local, nil, fn)
}

// StreamStatusFiltered is StreamStatus of the pins that pass filter (nil:
// every pin), filtered by the peer.
func (c *Client) StreamStatusFiltered(ctx context.Context, local bool, filter api.StatusFilter, fn func(api.PinStatus) error) error {
	q := localQuery(local)
	if len(filter) > 0 {
		if q == nil {
			q = url.Values{}
		}
		q.Set("filter", filter.String())
	}
	resp, err := c.send(ctx, http.MethodGet, c.url(q, "status"), nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	for {
		var st api.PinStatus
		err := dec.Decode(&st)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return c.answerError(ctx, "the status stream broke off", err)
		}
		if err := fn(st); err != nil {
			return err
		}
	}
}

// Add uploads r's bytes as a file named filename (empty: unnamed) and pins
// the resulting DAG. The upload streams through a pipe, so r may be of any
// size. Add returns once r's pending Read has returned.
func (c *Client) Add(ctx context.Context, r io.Reader, filename string, p api.AddParams) (api.AddResult, error) {
	var res api.AddResult
	err := c.upload(ctx, r, filename, addQuery(p), func(body io.Reader) error {
		if err := json.NewDecoder(body).Decode(&res); err != nil {
			return c.answerError(ctx, "its answer is malformed", err)
		}
		return nil
	})
	return res, err
}

// AddEvents is Add that calls shard with each shard of a sharded add as
// soon as its peers confirmed it, while the upload goes on (a plain add
// has none). An error from shard stops the add and is returned.
func (c *Client) AddEvents(ctx context.Context, r io.Reader, filename string, p api.AddParams, shard func(api.ShardStatus) error) (api.AddResult, error) {
	q := addQuery(p)
	q.Set("events", "true")
	var res api.AddResult
	err := c.upload(ctx, r, filename, q, func(body io.Reader) error {
		dec := json.NewDecoder(bufio.NewReader(body))
		for {
			var ev api.AddEvent
			if err := dec.Decode(&ev); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF // no root event: cut short
				}
				return c.answerError(ctx, "the add's event stream broke off", err)
			}
			switch {
			case ev.Type == api.AddEventShard && ev.Shard != nil:
				if err := shard(*ev.Shard); err != nil {
					return err
				}
			case ev.Type == api.AddEventRoot && ev.Result != nil:
				res = *ev.Result
				return nil
			case ev.Type == api.AddEventError && ev.Error != nil:
				msg := ev.Error.Message
				if strings.TrimSpace(msg) == "" {
					msg = fmt.Sprintf("the shoal API at %s failed the add (status %d) without saying why", c.addr, ev.Error.Code)
				}
				return &Error{Code: ev.Error.Code, Message: msg}
			default:
				return c.answerError(ctx, "the add's event stream is malformed", fmt.Errorf("event of type %q", ev.Type))
			}
		}
	})
	return res, err
}

// upload POSTs r as the body of /add (application/octet-stream) with
// query q, the file's name in it unless q names the add, and hands a 2xx
// answer's body to read, which may run while the upload goes on.
func (c *Client) upload(ctx context.Context, r io.Reader, filename string, q url.Values, read func(io.Reader) error) error {
	if q.Get("name") == "" && filename != "" {
		q.Set("name", filename)
	}
	src := &errReader{r: r}
	resp, err := c.send(ctx, http.MethodPost, c.url(q, "add"), src, "application/octet-stream")
	var ne *netError
	if errors.As(err, &ne) && !errors.Is(err, errServesHTTPS) && c.base.Scheme == "http" && src.err == nil {
		// An HTTPS API answers a plain upload and closes the connection
		// while the body is still being sent, so the upload sees only
		// the broken connection; a request without a body gets the
		// answer that says why.
		if herr := c.Health(ctx); errors.Is(herr, errServesHTTPS) {
			err = herr
		}
	}
	if err == nil {
		err = read(resp.Body)
		resp.Body.Close()
	}
	if src.err != nil {
		// Reading r failed, which failed the request: r's error is the
		// one that says what went wrong.
		return src.err
	}
	return err
}

// Export streams the whole DAG of the pinned root cid as a CARv1 file. The
// caller reads the CatReader to its end and closes it; errors before the
// first byte (an unknown root) are returned here.
func (c *Client) Export(ctx context.Context, cid string) (*CatReader, error) {
	resp, err := c.send(ctx, http.MethodGet, c.url(nil, "export", cid), nil, "")
	if err != nil {
		return nil, err
	}
	return &CatReader{c: c, ctx: ctx, cid: cid, resp: resp, want: -1}, nil
}

// Cat streams length bytes (-1: all up to the end) of the pinned file cid
// from offset. The caller reads the CatReader to its end and closes it.
// Errors before the first byte (unknown root, bad range) are returned here.
func (c *Client) Cat(ctx context.Context, cid string, offset, length int64) (*CatReader, error) {
	q := url.Values{}
	if offset != 0 {
		q.Set("offset", strconv.FormatInt(offset, 10))
	}
	if length >= 0 {
		q.Set("length", strconv.FormatInt(length, 10))
	}
	resp, err := c.send(ctx, http.MethodGet, c.url(q, "cat", cid), nil, "")
	if err != nil {
		return nil, err
	}
	want := int64(-1)
	if v := resp.Header.Get(api.HeaderLength); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			want = n
		}
	}
	return &CatReader{c: c, ctx: ctx, cid: cid, resp: resp, want: want}, nil
}

// CatReader is the body of a Cat or an Export. Its Read returns io.EOF only when the
// whole range arrived: a stream that the daemon ended with an error, or
// that broke off (the daemon died), or that is shorter or longer than the
// daemon announced, returns an error that says so in one sentence.
type CatReader struct {
	c    *Client
	ctx  context.Context // the request's, to tell cancellation from failure
	cid  string
	resp *http.Response
	want int64 // bytes announced, -1 if not
	got  int64
	err  error
}

// Length is the number of bytes the daemon announced, or -1.
func (r *CatReader) Length() int64 { return r.want }

func (r *CatReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.resp.Body.Read(p)
	r.got += int64(n)
	// The cause is kept for errors.Is, except io.EOF: an error that
	// matched io.EOF would read as a complete stream.
	fail := func(cause error, format string, args ...any) error {
		msg := fmt.Sprintf("reading %s from the shoal API at %s failed after %d bytes: ", r.cid, r.c.addr, r.got)
		return &netError{msg + fmt.Sprintf(format, args...), cause}
	}
	switch {
	case r.want >= 0 && r.got > r.want:
		err = fail(nil, "the daemon sent more than the %d bytes it announced", r.want)
	case errors.Is(err, io.EOF):
		if msg := r.resp.Trailer.Get(api.TrailerError); msg != "" {
			err = fail(nil, "%s", msg)
		} else if r.want >= 0 && r.got != r.want {
			err = fail(nil, "the stream ended %d bytes short", r.want-r.got)
		}
	case err != nil:
		if ctxErr := r.ctx.Err(); ctxErr != nil {
			err = ctxErr
		} else {
			err = fail(err, "the stream broke off (%v)", err)
		}
	}
	r.err = err
	return n, err
}

// Close ends the request, also before the body was read to its end.
func (r *CatReader) Close() error { return r.resp.Body.Close() }

// errReader remembers the error of the reader it wraps (and hides any
// WriteTo, so that io.Copy reads in chunks).
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		e.err = err
	}
	return n, err
}

// uploadBuf is the size of the reads and writes that carry an upload:
// io.Copy's 32 KiB would cost the sender and the API a system call (and a
// chunk header) every 32 KiB of a file of many GiB.
const uploadBuf = 1 << 20

// WriteTo copies the rest of the upload to w, uploadBuf at a time (the
// HTTP transport copies a request body with io.Copy, which calls it).
func (e *errReader) WriteTo(w io.Writer) (int64, error) {
	return io.CopyBuffer(w, struct{ io.Reader }{e}, make([]byte, uploadBuf))
}

// addQuery spells p as POST /add's query parameters, leaving out those at
// their zero value.
func addQuery(p api.AddParams) url.Values {
	q := url.Values{}
	setStr := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	setBool := func(k string, v bool) {
		if v {
			q.Set(k, "true")
		}
	}
	setInt := func(k string, v int) {
		if v != 0 {
			q.Set(k, strconv.Itoa(v))
		}
	}
	setStr("chunker", p.Chunker)
	setBool("allow-big-block", p.AllowBigBlock)
	setBool("trickle", p.Trickle)
	if p.CIDVersion != nil {
		q.Set("cid-version", strconv.Itoa(*p.CIDVersion))
	}
	if p.RawLeaves != nil {
		q.Set("raw-leaves", strconv.FormatBool(*p.RawLeaves))
	}
	setStr("hash", p.Hash)
	setBool("inline", p.Inline)
	setInt("inline-limit", p.InlineLimit)
	setBool("wrap-with-directory", p.Wrap)
	setStr("name", p.Name)
	setInt("rmin", p.RMin)
	setInt("rmax", p.RMax)
	setBool("shard", p.Shard)
	if p.ShardSize != 0 {
		q.Set("shard-size", strconv.FormatInt(p.ShardSize, 10))
	}
	return q
}

func localQuery(local bool) url.Values {
	if !local {
		return nil
	}
	return url.Values{"local": {"true"}}
}

// url is the address of the endpoint made of segments, each escaped so
// that a CID or peer ID given by a user stays one path segment.
func (c *Client) url(q url.Values, segments ...string) string {
	var b strings.Builder
	b.WriteString(c.base.Scheme + "://" + c.base.Host + c.base.EscapedPath())
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	if len(q) > 0 {
		b.WriteByte('?')
		b.WriteString(q.Encode())
	}
	return b.String()
}

// do sends a request and decodes a 2xx answer's JSON into out (unless out
// is nil).
func (c *Client) do(ctx context.Context, method, u string, body io.Reader, contentType string, out any) error {
	resp, err := c.send(ctx, method, u, body, contentType)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return c.answerError(ctx, "its answer is malformed", err)
	}
	return nil
}

// send makes the request and returns a 2xx response, or the error.
func (c *Client) send(ctx context.Context, method, u string, body io.Reader, contentType string) (*http.Response, error) {
	if c.stale && method == http.MethodGet {
		u = withConsistency(u)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("build request to the shoal API at %s: %w", c.addr, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
		if _, ok := body.(*errReader); ok {
			req.ContentLength = -1 // chunked: any size
			// The server may answer an upload (a refused add) before it
			// has read it all, and then closes the connection: it must
			// not go back to the pool for the next request.
			req.Close = true
		}
	}
	req.Header.Set("Accept", "application/json")
	if c.auth != nil {
		c.auth(req)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if ri, ok := api.ParseReadInfo(resp.Header); ok && c.onRead != nil {
			c.onRead(ri)
		}
		return resp, nil
	}
	defer resp.Body.Close()
	// The API's errors are small; a page from something else may not be.
	var e api.Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e) != nil || strings.TrimSpace(e.Message) == "" {
		if resp.StatusCode == http.StatusBadRequest && c.base.Scheme == "http" && bytes.Contains(b, []byte("HTTP request to an HTTPS server")) {
			// Go's TLS server, to a request in plain HTTP.
			return nil, &netError{fmt.Sprintf("the shoal API at %s serves HTTPS: use https://%s%s", c.addr, c.base.Host, c.base.EscapedPath()), errServesHTTPS}
		}
		e.Message = fmt.Sprintf("the shoal API at %s answered %s", c.addr, resp.Status)
	}
	return nil, &Error{Code: resp.StatusCode, Message: e.Message}
}

// withConsistency adds consistency=stale to the URL u.
func withConsistency(u string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + "consistency=" + api.ConsistencyStale
}

// transportError turns a failed round trip into one sentence, keeping the
// cause for errors.Is.
func (c *Client) transportError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return &netError{fmt.Sprintf("cannot reach the shoal API at %s: is the daemon running?", c.addr), err}
	}
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		return &netError{fmt.Sprintf("the shoal API at %s presented a certificate this client does not trust (%v)", c.addr, cve.Err), err}
	}
	if errors.Is(err, http.ErrSchemeMismatch) {
		return &netError{fmt.Sprintf("the shoal API at %s serves plain HTTP, not HTTPS (its peer has no api.tls_cert_file)", c.addr), err}
	}
	var ue *url.Error
	cause := err
	if errors.As(err, &ue) {
		cause = ue.Err
	}
	return &netError{fmt.Sprintf("cannot reach the shoal API at %s: %v", c.addr, cause), err}
}

// answerError reports an answer that could not be read.
func (c *Client) answerError(ctx context.Context, what string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return &netError{fmt.Sprintf("the shoal API at %s failed: %s (%v)", c.addr, what, err), err}
}
