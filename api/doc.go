// Package api is shoal's REST API: HTTP/JSON (or HTTPS, see TLS below) on
// the peer's API address, NDJSON for streams, raw or multipart uploads for
// add. The daemon implements Backend; Server serves it; package api/client
// is the Go client the CLI uses.
//
// Endpoints:
//
//	GET    /id                  ID
//	GET    /version             {"version": "..."}
//	GET    /peers               []Peer
//	DELETE /peers/{id}          remove a peer
//	GET    /pins                []Pin
//	POST   /pins                PinRequest -> Pin (add or update)
//	DELETE /pins/{cid}          Pin (the removed pin)
//	GET    /status[?local=true][&filter=S,S]  []PinStatus (NDJSON); filter keeps
//	                            pins with a peer in one of the states
//	                            (StatusFilter)
//	GET    /status/{cid}        PinStatus
//	POST   /add?PARAMS          file -> AddResult; the file is the body
//	                            (application/octet-stream, named by name=)
//	                            or its first multipart/form-data part
//	POST   /add?PARAMS&events=true  file -> AddEvent per shard, then
//	                            the root (NDJSON, streamed during the upload)
//	GET    /cat/{cid}           the file's bytes (offset, length)
//	GET    /export/{cid}        the whole DAG as a CARv1 file, streamed
//	GET    /health              {"status": "ok"}
//	GET    /health/peers        []PeerHealth
//	GET    /health/lost         []LostPart: parts whose every holder is gone
//	POST   /verify[?cid=C][&local=true]   []VerifyResult: re-hash stored parts
//	POST   /recover[?cid=C][&local=true]  []TrackerReport: retry failed parts now
//	POST   /sync[?local=true]   []TrackerReport: a full tracker pass now
//	POST   /peers/{id}/drain    DrainProgress: one step of moving a peer's parts
//
// Errors are {"code": N, "message": "one sentence"} with the HTTP status N:
// 400 for malformed input, 401 without valid credentials, 403 for a request
// refused as below, 404 for an unknown pin or peer, 409 for a conflict
// (e.g. rmin above the peers that can hold the pin), 413 for an oversized
// body, 415 for a body of the wrong type, 503 without a leader.
//
// # Consistency
//
// Every endpoint that reads the pinset (GET /pins, /status, /status/{cid},
// /cat, /export, /peers, /health/peers, /health/lost,
// POST /rebalance?dry-run=true) is
// linearizable by default: before it reads, the peer confirms with the
// leader that its state reflects every write acknowledged before the
// request arrived, by any peer (ReadBarrier; ARCHITECTURE.md says how and
// what it costs). Writes wait the same way before their checks. When no
// leader confirms within consensus.read_timeout (5 s), the request fails
// with 503 and a sentence that suggests the stale mode. With
// ?consistency=stale (consistency=consistent is the default) a read
// answers from the peer's own state at once, asking nobody; POST
// /rebalance takes it only with dry-run. The answer of every such
// request says what state it reflects:
//
//	Shoal-Consistency    consistent | stale
//	Shoal-Applied-Index  the Raft index of the last op the peer's state applied
//	Shoal-Last-Contact   how long ago the peer last heard from the leader
//	                     ("120ms"), "leader" on the leader, "never"
//
// The local parameter is unrelated: it narrows status, verify, recover and
// sync to the answering peer's own store.
//
// # Browsers
//
// The default API listens on loopback without auth, so any web page open
// in a browser on the same machine could send it requests (CSRF), or read
// it under a DNS name of its own that it points at 127.0.0.1 (DNS
// rebinding). Every request passes three checks first, before auth; the
// CLI, the Go client and curl pass them unchanged.
//
//   - Host (403). A name the page's owner controls can be rebound, an IP
//     address or localhost cannot. So the Host header must be a name in
//     ServerConfig.AllowedHosts (api.allowed_hosts: "NAME" for any port,
//     "NAME:PORT"), or, with the port the request arrived on: the listen
//     host itself; any loopback IP and localhost when listening on
//     loopback; any IP address and localhost when listening on 0.0.0.0 or
//     ::; the listen IP when listening on one; the IP the connection
//     arrived at. A request without a Host (HTTP/1.0) passes: browsers
//     always send one. Behind a proxy that passes its own name on, or
//     under a DNS name, add the name to the list.
//   - Origin (403). A request with an Origin header is served only if
//     the origin is in ServerConfig.AllowedOrigins (api.allowed_origins:
//     SCHEME://HOST[:PORT], compared exactly; "*" for any), empty by
//     default, as Kubo's RPC API does. A POST or DELETE that the browser
//     marks Sec-Fetch-Site: cross-site or same-site without an Origin is
//     refused too. This is what protects POST /add: a multipart form is a
//     type any page may send. For an allowed origin the answer carries
//     Access-Control-Allow-Origin (the origin itself) and exposes the
//     Shoal-* headers, and a preflight (OPTIONS with
//     Access-Control-Request-Method) is answered 204, allowing GET, HEAD,
//     POST, DELETE and the Authorization and Content-Type headers.
//   - Content-Type (415). A JSON body (POST /pins) must be
//     application/json (parameters allowed), so that a form or text/plain
//     post, which a page sends without a preflight, is refused even
//     without an Origin; an add's body is application/octet-stream or
//     multipart/form-data. A request without a body needs no type.
//
// # TLS
//
// With ServerConfig.TLS (api.tls_cert_file and api.tls_key_file, read by
// LoadTLS) the server speaks HTTPS only, HTTP/1.1 over TLS 1.2 or 1.3, on
// the listener Start opens or the one given to Serve; URL says which. The
// checks above are the same: an https:// origin is allowed as written,
// and a Host without a port means 443. A request in plain HTTP gets Go's
// 400 "Client sent an HTTP request to an HTTPS server", which the Go
// client turns into "the shoal API at ADDR serves HTTPS: use https://ADDR".
// docs/api.md shows how to make a certificate and how clients trust it.
package api

import "errors"

// Sentinel errors a Backend wraps so that the server answers with the
// right status.
var (
	ErrBadRequest  = errors.New("bad request") // 400
	ErrNotFound    = errors.New("not found")   // 404
	ErrConflict    = errors.New("conflict")    // 409
	ErrUnavailable = errors.New("unavailable") // 503
)
