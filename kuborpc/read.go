package kuborpc

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/shoal-project/shoal/api"
)

// cat streams a pinned file's bytes, from offset, length of them (-1 or
// absent: to the end), read from whichever peers hold them.
func (h *handler) cat(w http.ResponseWriter, r *http.Request, q url.Values) error {
	fr, ok := h.b.(api.FileReader)
	if !ok {
		return &kuboError{http.StatusNotImplemented, "this peer cannot read files back"}
	}
	arg, err := oneArg(q, "ipfs-path")
	if err != nil {
		return err
	}
	c, err := parseCID(arg)
	if err != nil {
		return err
	}
	offset, err := intOpt(q, "offset", 0, 0)
	if err != nil {
		return err
	}
	length, err := intOpt(q, "length", -1, -1)
	if err != nil {
		return err
	}
	sw := &streamWriter{w: w, length: -1}
	return sw.finish(fr.Cat(r.Context(), c.String(), offset, length, sw))
}

// streamWriter is the api.CatWriter of a byte stream in go-ipfs-cmds'
// shape: the headers go out at the first Write, an error after it in the
// X-Stream-Error trailer.
type streamWriter struct {
	w       http.ResponseWriter
	started bool
	length  int64
}

func (s *streamWriter) SetLength(n int64) { s.length = n }

func (s *streamWriter) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Stream-Output", "1")
	h.Set("Trailer", "X-Stream-Error")
	if s.length >= 0 {
		h.Set("X-Content-Length", strconv.FormatInt(s.length, 10))
	}
	s.w.WriteHeader(http.StatusOK)
}

func (s *streamWriter) Write(p []byte) (int, error) {
	s.start()
	return s.w.Write(p)
}

// finish ends the answer after the backend returned err: as an error
// answer if nothing was sent, else in the trailer.
func (s *streamWriter) finish(err error) error {
	if !s.started {
		if err != nil {
			return err
		}
		s.start()
		return nil
	}
	if err != nil {
		// A trailer value is one line.
		s.w.Header().Set("X-Stream-Error", strings.ReplaceAll(api.Message(err), "\n", " "))
	}
	return nil
}
