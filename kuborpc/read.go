package kuborpc

import (
	"archive/tar"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/api"
)

// fileArg is the file reader and the one root argument of cat and get.
func (h *handler) fileArg(q url.Values) (api.FileReader, cid.Cid, error) {
	fr, ok := h.b.(api.FileReader)
	if !ok {
		return nil, cid.Undef, &kuboError{http.StatusNotImplemented, "this peer cannot read files back"}
	}
	arg, err := oneArg(q, "ipfs-path")
	if err != nil {
		return nil, cid.Undef, err
	}
	c, err := parseCID(arg)
	return fr, c, err
}

// cat streams a pinned file's bytes, from offset, length of them (-1 or
// absent: to the end), read from whichever peers hold them.
func (h *handler) cat(w http.ResponseWriter, r *http.Request, q url.Values) error {
	fr, c, err := h.fileArg(q)
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
	sw := &streamWriter{w: w, length: -1, contentType: "text/plain"}
	return sw.finish(fr.Cat(r.Context(), c.String(), offset, length, sw))
}

// streamWriter is the api.CatWriter of a byte stream in go-ipfs-cmds'
// shape: the headers go out at the first Write, an error after it in the
// X-Stream-Error trailer.
type streamWriter struct {
	w           http.ResponseWriter
	contentType string
	started     bool
	length      int64
}

func (s *streamWriter) SetLength(n int64) { s.length = n }

func (s *streamWriter) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", s.contentType)
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

// get streams a pinned file as Kubo's get does: a tar of one entry named
// after the argument (PAX, or USTAR with archive=true), which the CLI
// unpacks. X-Content-Length is the file's size, as Kubo sends it.
func (h *handler) get(w http.ResponseWriter, r *http.Request, q url.Values) error {
	fr, c, err := h.fileArg(q)
	if err != nil {
		return err
	}
	if compress, err := boolOpt(q, "compress", false); err != nil {
		return err
	} else if compress {
		return clientErr("shoal does not support get --compress: pipe the tar through gzip")
	}
	archive, err := boolOpt(q, "archive", false)
	if err != nil {
		return err
	}
	format := tar.FormatPAX
	if archive {
		format = tar.FormatUSTAR
	}
	sw := &streamWriter{w: w, length: -1, contentType: "application/x-tar"}
	tw := &tarFile{sw: sw, name: c.String(), format: format}
	err = fr.Cat(r.Context(), c.String(), 0, -1, tw)
	if err == nil {
		err = tw.close()
	}
	return sw.finish(err)
}

// tarFile is the api.CatWriter of get: it writes the tar header when Cat
// announces the length, then the bytes, then the tar's end.
type tarFile struct {
	sw     *streamWriter
	tw     *tar.Writer
	name   string
	format tar.Format
}

func (t *tarFile) SetLength(n int64) {
	t.sw.SetLength(n)
	t.tw = tar.NewWriter(t.sw)
	// Errors surface at the first Write, which tar.Writer returns again.
	_ = t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: t.name, Mode: 0o644, Size: n,
		ModTime: time.Now().Truncate(time.Second), Format: t.format})
}

func (t *tarFile) Write(p []byte) (int, error) {
	if t.tw == nil {
		return 0, errors.New("get: the file's length was not announced")
	}
	return t.tw.Write(p)
}

func (t *tarFile) close() error {
	if t.tw == nil {
		return errors.New("get: the file's length was not announced")
	}
	return t.tw.Close()
}

// dagExport streams a pinned root's whole DAG as a CARv1, as Kubo's
// dag export does.
func (h *handler) dagExport(w http.ResponseWriter, r *http.Request, q url.Values) error {
	ex, ok := h.b.(api.Exporter)
	if !ok {
		return &kuboError{http.StatusNotImplemented, "this peer cannot export DAGs"}
	}
	arg, err := oneArg(q, "root")
	if err != nil {
		return err
	}
	c, err := parseCID(arg)
	if err != nil {
		return err
	}
	sw := &streamWriter{w: w, length: -1, contentType: "application/vnd.ipld.car"}
	return sw.finish(ex.Export(r.Context(), c.String(), sw))
}
