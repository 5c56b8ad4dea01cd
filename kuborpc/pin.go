package kuborpc

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/shoal-project/shoal/api"
)

// pinsOutput is Kubo's answer to pin/add and pin/rm.
type pinsOutput struct {
	Pins []string
}

// pinAdd pins each argument in the cluster with the configured
// replication and waits until rmin peers hold it, as Kubo returns once its
// node holds the DAG. shoal fetches only from its own peers: a CID the
// cluster does not hold fails when the wait ends.
func (h *handler) pinAdd(w http.ResponseWriter, r *http.Request, q url.Values) error {
	if len(q["arg"]) == 0 {
		return clientErr("argument \"ipfs-path\" is required")
	}
	if rec, err := boolOpt(q, "recursive", true); err != nil {
		return err
	} else if !rec {
		return clientErr("shoal pins whole DAGs only: recursive=false (a direct pin) is not supported")
	}
	out := pinsOutput{Pins: []string{}}
	for _, a := range q["arg"] {
		c, err := parseCID(a)
		if err != nil {
			return err
		}
		if _, err := h.b.Pin(r.Context(), api.PinRequest{CID: c.String(), Name: q.Get("name"), Wait: true}); err != nil {
			return fmt.Errorf("pin %s: %w", c, err)
		}
		out.Pins = append(out.Pins, c.String())
	}
	writeValue(w, out)
	return nil
}

// pinRm unpins each argument from the whole cluster.
func (h *handler) pinRm(w http.ResponseWriter, r *http.Request, q url.Values) error {
	if len(q["arg"]) == 0 {
		return clientErr("argument \"ipfs-path\" is required")
	}
	out := pinsOutput{Pins: []string{}}
	for _, a := range q["arg"] {
		c, err := parseCID(a)
		if err != nil {
			return err
		}
		if _, err := h.b.Unpin(r.Context(), c.String()); err != nil {
			if api.Status(err) == http.StatusNotFound {
				return fmt.Errorf("%s is not pinned", c)
			}
			return fmt.Errorf("unpin %s: %w", c, err)
		}
		out.Pins = append(out.Pins, c.String())
	}
	writeValue(w, out)
	return nil
}

// pinType is one entry of pin/ls.
type pinType struct {
	Type string
	Name string
}

// pinLsStream is one line of pin/ls?stream=true.
type pinLsStream struct {
	Cid  string
	Type string
	Name string `json:",omitempty"`
}

// pinLs lists the cluster's pins, all "recursive": shoal pins whole DAGs,
// and lists no indirect or direct pins.
func (h *handler) pinLs(w http.ResponseWriter, r *http.Request, q url.Values) error {
	switch t := q.Get("type"); t {
	case "", "all", "recursive", "direct", "indirect":
	default:
		return clientErr("invalid type %q, must be one of {direct, indirect, recursive, all}", t)
	}
	stream, err := boolOpt(q, "stream", false)
	if err != nil {
		return err
	}
	pins, err := h.b.Pins(r.Context())
	if err != nil {
		return err
	}
	names := map[string]string{}
	for _, p := range pins {
		names[p.CID] = p.Name
	}
	var want []string
	for _, a := range q["arg"] {
		c, err := parseCID(a)
		if err != nil {
			return err
		}
		if _, ok := names[c.String()]; !ok {
			return fmt.Errorf("path '%s' is not pinned", a) // as sent: Kubo's RPC client looks for "is not pinned"
		}
		want = append(want, c.String())
	}
	var list []string
	if t := q.Get("type"); t == "" || t == "all" || t == "recursive" {
		for _, p := range pins {
			if len(want) == 0 || slices.Contains(want, p.CID) {
				list = append(list, p.CID)
			}
		}
	}
	if !stream {
		out := struct{ Keys map[string]pinType }{Keys: map[string]pinType{}}
		for _, c := range list {
			out.Keys[c] = pinType{Type: "recursive", Name: names[c]}
		}
		writeValue(w, out)
		return nil
	}
	startStream(w)
	enc := json.NewEncoder(w)
	for _, c := range list {
		if err := enc.Encode(pinLsStream{Cid: c, Type: "recursive", Name: names[c]}); err != nil {
			return nil // the client went away
		}
	}
	return nil
}

// startStream sends the headers of a stream of values (go-ipfs-cmds'
// channel output).
func startStream(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Chunked-Output", "1")
	h.Set("Trailer", "X-Stream-Error")
	w.WriteHeader(http.StatusOK)
}

// pinUpdate pins the second argument, once rmin peers hold it, then
// unpins the first unless unpin=false. Kubo's update copies only the
// difference; shoal's peers fetch what they do not hold.
func (h *handler) pinUpdate(w http.ResponseWriter, r *http.Request, q url.Values) error {
	args := q["arg"]
	if len(args) != 2 {
		return clientErr("pin update takes two arguments, from-path and to-path, got %d", len(args))
	}
	from, err := parseCID(args[0])
	if err != nil {
		return err
	}
	to, err := parseCID(args[1])
	if err != nil {
		return err
	}
	unpin, err := boolOpt(q, "unpin", true)
	if err != nil {
		return err
	}
	pins, err := h.b.Pins(r.Context())
	if err != nil {
		return err
	}
	var old *api.Pin
	for i := range pins {
		if pins[i].CID == from.String() {
			old = &pins[i]
		}
	}
	if old == nil {
		return fmt.Errorf("'from' cid was not recursively pinned already")
	}
	if _, err := h.b.Pin(r.Context(), api.PinRequest{CID: to.String(), Name: old.Name, RMin: old.RMin, RMax: old.RMax, Wait: true}); err != nil {
		return fmt.Errorf("pin %s: %w", to, err)
	}
	if unpin && from != to {
		if _, err := h.b.Unpin(r.Context(), from.String()); err != nil {
			return fmt.Errorf("unpin %s: %w", from, err)
		}
	}
	writeValue(w, pinsOutput{Pins: []string{from.String(), to.String()}})
	return nil
}
