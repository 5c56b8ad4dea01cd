package api

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// Deadlines of the API server.
//
// http.Server's ReadTimeout and WriteTimeout bound a whole request and a
// whole response: a ReadTimeout would cut an upload of gigabytes (POST
// /add streams its body into the pipeline for as long as the file takes)
// and a WriteTimeout a long cat or export. Instead every read of a request
// body and every write of a response must make progress within an idle
// timeout, renewed before each read and each write through
// http.ResponseController, so a client that stops sending or stops
// reading holds its connection and handler for a bounded time, however
// long an honest transfer takes. ReadHeaderTimeout and IdleTimeout bound
// the rest (NewServer).
const (
	// DefaultBodyIdleTimeout bounds each read of a request body when
	// ServerConfig.BodyIdleTimeout is 0. Generous: `shoal add -` reads a
	// pipe, whose writer may pause (a dump being computed).
	DefaultBodyIdleTimeout = 2 * time.Minute
	// DefaultWriteIdleTimeout bounds each write of an answer when
	// ServerConfig.WriteIdleTimeout is 0: JSON answers, NDJSON status and
	// add events, whose clients read as they come.
	DefaultWriteIdleTimeout = time.Minute
	// DefaultDownloadIdleTimeout bounds each write of GET /cat and GET
	// /export when ServerConfig.DownloadIdleTimeout is 0. Long: `shoal cat
	// | less` stops reading while its user reads a page.
	DefaultDownloadIdleTimeout = 30 * time.Minute
)

// WithDeadlines is withDeadlines for the handlers of a NewHandlerServer.
func WithDeadlines(w http.ResponseWriter, r *http.Request, d, bodyIdle time.Duration, body bool) (http.ResponseWriter, *http.Request, func()) {
	return withDeadlines(w, r, d, bodyIdle, body)
}

// withDeadlines renews the write deadline of w before each write and
// flush (after d of no progress a write fails), and the read deadline of
// r's body before each read, when body is true (after bodyIdle of no
// bytes a read fails). It returns w and a shallow copy of r to serve.
// done, deferred by the handler, gives what the server does after it
// (flush the answer, discard what is left of the body) deadlines of its
// own.
func withDeadlines(w http.ResponseWriter, r *http.Request, d, bodyIdle time.Duration, body bool) (_ http.ResponseWriter, _ *http.Request, done func()) {
	rc := http.NewResponseController(w)
	iw := &idleResponse{ResponseWriter: w, rc: rc, d: d}
	if !body {
		return iw, r, iw.renew
	}
	// A copy: the server keeps the request it made, whose body's type
	// tells it how to discard the rest after the handler.
	r = r.WithContext(r.Context())
	ib := &idleBody{ReadCloser: r.Body, rc: rc, d: bodyIdle}
	r.Body = ib
	return iw, r, func() {
		iw.renew()
		if !ib.eof {
			_ = rc.SetReadDeadline(time.Now().Add(bodyIdle))
		}
	}
}

// idleResponse is a ResponseWriter whose every write and flush must make
// progress within d. It unwraps for http.ResponseController.
type idleResponse struct {
	http.ResponseWriter
	rc *http.ResponseController // of the wrapped writer
	d  time.Duration
}

func (w *idleResponse) renew() {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.d)) // not supported: httptest
}

func (w *idleResponse) Write(p []byte) (int, error) {
	w.renew()
	return w.ResponseWriter.Write(p)
}

// FlushError is what http.ResponseController.Flush calls.
func (w *idleResponse) FlushError() error {
	w.renew()
	return w.rc.Flush()
}

func (w *idleResponse) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// idleBody is a request body whose every read must get bytes within d.
type idleBody struct {
	io.ReadCloser
	rc  *http.ResponseController
	d   time.Duration
	eof bool
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	_ = b.rc.SetReadDeadline(time.Now().Add(b.d))
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		// The body is over: the server's own read of the connection,
		// which watches for the client going away while the handler
		// still runs, must not time out and cancel the request.
		b.eof = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
