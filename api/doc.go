// Package api is shoal's REST API: HTTP/JSON on the peer's API address,
// NDJSON for streams, raw or multipart uploads for add. The daemon implements
// Backend; Server serves it; package api/client is the Go client the CLI
// uses.
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
//	POST   /verify[?cid=C][&local=true]   []VerifyResult: re-hash stored parts
//	POST   /recover[?cid=C][&local=true]  []TrackerReport: retry failed parts now
//	POST   /sync[?local=true]   []TrackerReport: a full tracker pass now
//	POST   /peers/{id}/drain    DrainProgress: one step of moving a peer's parts
//
// Errors are {"code": N, "message": "one sentence"} with the HTTP status N:
// 400 for malformed input, 401 without valid credentials, 404 for an
// unknown pin or peer, 409 for a conflict (e.g. rmin above the peers that
// can hold the pin), 413 for an oversized body, 503 without a leader.
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
