package api

import (
	"net/http"
	"net/url"

	"github.com/libp2p/go-libp2p/core/peer"
)

// optionalCID reads the optional cid query parameter.
func optionalCID(q url.Values) (string, error) {
	if !q.Has("cid") {
		return "", nil
	}
	return parseCID(q.Get("cid"))
}

// scope reads the optional cid and the local flag of an action on one pin
// or on all of them.
func scope(q url.Values) (c string, local bool, err error) {
	if local, err = boolParam(q, "local"); err != nil {
		return "", false, err
	}
	c, err = optionalCID(q)
	return c, local, err
}

// postVerify re-hashes stored parts (Verifier).
func (s *Server) postVerify(w http.ResponseWriter, r *http.Request, q url.Values) error {
	v, ok := s.b.(Verifier)
	if !ok {
		return &statusError{http.StatusNotImplemented, "this peer cannot verify its store"}
	}
	c, local, err := scope(q)
	if err != nil {
		return err
	}
	res, err := v.Verify(r.Context(), c, local)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(res))
	return nil
}

// postRecover retries failed parts at once (TrackerControl).
func (s *Server) postRecover(w http.ResponseWriter, r *http.Request, q url.Values) error {
	tc, ok := s.b.(TrackerControl)
	if !ok {
		return &statusError{http.StatusNotImplemented, "this peer has no tracker to drive"}
	}
	c, local, err := scope(q)
	if err != nil {
		return err
	}
	res, err := tc.Recover(r.Context(), c, local)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(res))
	return nil
}

// postSync makes the trackers do a full pass now (TrackerControl).
func (s *Server) postSync(w http.ResponseWriter, r *http.Request, q url.Values) error {
	tc, ok := s.b.(TrackerControl)
	if !ok {
		return &statusError{http.StatusNotImplemented, "this peer has no tracker to drive"}
	}
	local, err := boolParam(q, "local")
	if err != nil {
		return err
	}
	res, err := tc.Sync(r.Context(), local)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(res))
	return nil
}

// postDrain takes one step of emptying a peer (Drainer).
func (s *Server) postDrain(w http.ResponseWriter, r *http.Request, _ url.Values) error {
	d, ok := s.b.(Drainer)
	if !ok {
		return &statusError{http.StatusNotImplemented, "this peer cannot drain others"}
	}
	id, err := peer.Decode(r.PathValue("id"))
	if err != nil {
		return badRequest("%q is not a peer ID", r.PathValue("id"))
	}
	pr, err := d.Drain(r.Context(), id.String())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pr)
	return nil
}
