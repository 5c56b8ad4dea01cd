package kuborpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"sync"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/ingest"
)

// addEvent is one line of Kubo's add answer: a progress count (Bytes, no
// Hash) or an added file (Hash; Size, the DAG's cumulative size, as a
// string, which shoal leaves out: no client needs it).
type addEvent struct {
	Name  string
	Hash  string `json:",omitempty"`
	Bytes int64  `json:",omitempty"`
	Size  string `json:",omitempty"`
}

// progressEvery is how many bytes pass between progress events.
const progressEvery = 1 << 20

// addRequest is the parsed options of one add.
type addRequest struct {
	p        api.AddParams
	onlyHash bool
	progress bool
	silent   bool
	// shardSet: the client chose with shard=; else ShardAbove decides.
	shardSet bool
	stdin    string
}

// add adds each file part of the upload: its own pin, sharded above the
// threshold, with the answer Kubo gives. Directories (add -r) are
// refused for now: the cluster takes files one at a time.
func (h *handler) add(w http.ResponseWriter, r *http.Request, q url.Values) error {
	req, err := parseAdd(q)
	if err != nil {
		return err
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		return clientErr("add takes a multipart/form-data body, not %q", r.Header.Get("Content-Type"))
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return clientErr("the multipart body is malformed: %v", err)
	}
	ev := &eventWriter{w: w}
	if req.progress {
		// Progress goes out while the upload still streams in; without
		// this an HTTP/1 server reads the whole body first.
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			return fmt.Errorf("stream add progress: %w", err)
		}
		defer r.Body.Close() // golang/go#68560, as the REST API's events
	}
	files := 0
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return ev.fail(clientErr("the multipart body is malformed: %v", err))
		}
		name, err := partName(part, req.stdin)
		if err != nil {
			return ev.fail(err)
		}
		switch ct := part.Header.Get("Content-Type"); ct {
		case "application/x-directory":
			return ev.fail(clientErr("%s is a directory: shoal's Kubo RPC takes files one at a time for now (add each file, or use shoal add --only-hash -r)", name))
		case "application/symlink":
			return ev.fail(clientErr("%s is a symbolic link: shoal's Kubo RPC adds regular files only", name))
		}
		files++
		err = h.addFile(r, ev, part, name, req)
		part.Close()
		if err != nil {
			return ev.fail(err)
		}
		// A later failure must not read as if nothing was added (silent
		// sends no event): from here on it goes in the trailer.
		ev.start()
	}
	if files == 0 {
		return ev.fail(clientErr("file argument 'path' is required"))
	}
	ev.start()
	return nil
}

// addFile adds one file part and sends its events.
func (h *handler) addFile(r *http.Request, ev *eventWriter, body io.Reader, name string, req addRequest) error {
	if req.progress {
		body = &progressReader{r: body, ev: ev, name: name}
	}
	p := req.p
	if p.Name == "" {
		p.Name = name
	}
	var root string
	switch {
	case req.onlyHash:
		params, err := p.DAGOptions().Params()
		if err != nil {
			return clientErr("%v", err)
		}
		in, err := ingest.New(ingest.Config{Params: params})
		if err != nil {
			return err
		}
		e, err := in.AddReader(r.Context(), body, name, ingest.AddOptions{Wrap: p.Wrap}, ingest.Discard, nil)
		if err != nil {
			return clientErr("add: %v", err)
		}
		root = e.CID.String()
	default:
		if !req.shardSet {
			var err error
			if body, p.Shard, err = peekSize(body, h.cfg.ShardAbove); err != nil {
				return clientErr("read the upload: %v", err)
			}
		}
		res, err := h.b.Add(r.Context(), body, p)
		if err != nil {
			return err
		}
		root = res.CID
	}
	if name == "" {
		name = root // stdin: Kubo names it by its CID
	}
	if req.silent {
		return nil
	}
	return ev.send(addEvent{Name: name, Hash: root})
}

// peekSize reads up to limit+1 bytes of r to tell whether it holds more
// than limit, and returns a reader of all of r again. limit 0 is
// "always more". The bytes wait in pooled chunks, which go back to the
// pool as they are read: a buffer of limit bytes grown afresh for each
// add cost a third of the add's time in page faults and GC.
func peekSize(r io.Reader, limit int64) (io.Reader, bool, error) {
	if limit <= 0 {
		return r, true, nil
	}
	p := &peeked{rest: r}
	var total int64
	for total <= limit {
		c := chunkPool.Get().(*[]byte)
		n, err := io.ReadFull(r, *c)
		total += int64(n)
		p.chunks = append(p.chunks, chunk{buf: c, n: n})
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			p.rest = nil
			return p, total > limit, nil
		}
		if err != nil {
			p.release()
			return nil, false, err
		}
	}
	return p, true, nil
}

// chunkSize is the unit of peekSize's buffer.
const chunkSize = 1 << 20

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

type chunk struct {
	buf *[]byte
	n   int
}

// peeked reads the chunks peekSize filled, then the rest of the upload.
type peeked struct {
	chunks []chunk
	off    int // into chunks[0]
	rest   io.Reader
}

func (p *peeked) Read(b []byte) (int, error) {
	for len(p.chunks) > 0 {
		c := p.chunks[0]
		if p.off < c.n {
			n := copy(b, (*c.buf)[p.off:c.n])
			p.off += n
			return n, nil
		}
		chunkPool.Put(c.buf)
		p.chunks, p.off = p.chunks[1:], 0
	}
	if p.rest == nil {
		return 0, io.EOF
	}
	return p.rest.Read(b)
}

// release returns the chunks not read yet.
func (p *peeked) release() {
	for _, c := range p.chunks {
		chunkPool.Put(c.buf)
	}
	p.chunks = nil
}

// partName is the file's name as Kubo's CLI sends it: the filename
// parameter, query-escaped ("dir%2Ffile"); "" for stdin unless
// stdin-name names it. A path with a directory in it is refused.
func partName(part interface{ FileName() string }, stdinName string) (string, error) {
	raw := part.FileName()
	name, err := url.QueryUnescape(raw)
	if err != nil {
		return "", clientErr("the file name %q is not query-escaped as Kubo's clients send it", raw)
	}
	if name == "" {
		name = stdinName
	}
	for i := range len(name) {
		if name[i] == '/' {
			return "", clientErr("%s is inside a directory: shoal's Kubo RPC takes files one at a time for now", name)
		}
	}
	return name, nil
}

// parseAdd reads add's options: Kubo's names for the DAG (the same as
// shoal add's), the cluster's own (shard, shard-size, rmin, rmax), and
// refuses those that ask for what shoal does not do.
func parseAdd(q url.Values) (addRequest, error) {
	var req addRequest
	var err error
	flag := func(name string, def bool) bool {
		if err != nil {
			return def
		}
		var b bool
		b, err = boolOpt(q, name, def)
		return b
	}
	num := func(name string, least int64) int64 {
		if err != nil {
			return 0
		}
		var n int64
		n, err = intOpt(q, name, 0, least)
		return n
	}
	p := &req.p
	p.Chunker = q.Get("chunker")
	p.Hash = q.Get("hash")
	p.Trickle = flag("trickle", false)
	p.Inline = flag("inline", false)
	p.Wrap = flag("wrap-with-directory", false)
	if q.Has("raw-leaves") {
		b := flag("raw-leaves", false)
		p.RawLeaves = &b
	}
	if q.Has("cid-version") {
		n := int(num("cid-version", 0))
		p.CIDVersion = &n
	}
	if p.Inline && q.Has("inline-limit") {
		p.InlineLimit = int(num("inline-limit", 1))
	}
	p.Name = q.Get("pin-name")
	p.RMin = int(num("rmin", -1))
	p.RMax = int(num("rmax", -1))
	if q.Has("shard") {
		req.shardSet = true
		p.Shard = flag("shard", false)
	}
	if q.Has("shard-size") {
		p.ShardSize = num("shard-size", 1)
		if !req.shardSet {
			req.shardSet, p.Shard = true, true
		}
	}
	req.onlyHash = flag("only-hash", false)
	req.progress = flag("progress", false)
	req.silent = flag("silent", false)
	req.stdin = q.Get("stdin-name")
	pin := flag("pin", true)
	refused := []struct {
		on  bool
		why string
	}{
		{!pin && !req.onlyHash, "pin=false: shoal pins what it stores (only-hash computes CIDs without storing)"},
		{flag("nocopy", false), "nocopy: shoal stores the blocks on its peers, it keeps no references to files"},
		{flag("fscache", false), "fscache: shoal keeps no filestore"},
		{q.Get("to-files") != "", "to-files: shoal has no MFS"},
		{flag("preserve-mode", false) || flag("preserve-mtime", false) || q.Has("mode") || q.Has("mtime"),
			"UnixFS mode and mtime: shoal adds file bytes only"},
		{q.Has("max-file-links") && q.Get("max-file-links") != "174", "max-file-links other than 174"},
	}
	if err != nil {
		return addRequest{}, err
	}
	for _, r := range refused {
		if r.on {
			return addRequest{}, clientErr("shoal does not support %s", r.why)
		}
	}
	if _, err := p.DAGOptions().Params(); err != nil {
		return addRequest{}, clientErr("%v", err)
	}
	return req, nil
}

// eventWriter sends add events, one JSON object a line, flushed; the
// headers go with the first. Progress comes from the goroutine that reads
// the upload, so it locks.
type eventWriter struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	started bool
	err     error // of a write: the client went away
}

func (e *eventWriter) start() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.startLocked()
}

func (e *eventWriter) startLocked() {
	if !e.started {
		e.started = true
		startStream(e.w)
	}
}

func (e *eventWriter) send(ev addEvent) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return e.err
	}
	e.startLocked()
	b, _ := json.Marshal(ev)
	if _, err := e.w.Write(append(b, '\n')); err != nil {
		e.err = fmt.Errorf("send add event: %w", err)
		return e.err
	}
	if err := http.NewResponseController(e.w).Flush(); err != nil {
		e.err = fmt.Errorf("send add event: %w", err)
	}
	return e.err
}

// fail ends the answer with err: as the error answer before any event,
// in the X-Stream-Error trailer after one.
func (e *eventWriter) fail(err error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.started {
		return err
	}
	e.w.Header().Set("X-Stream-Error", api.Message(err))
	return nil
}

// progressReader sends a progress event each progressEvery bytes read.
type progressReader struct {
	r          io.Reader
	ev         *eventWriter
	name       string
	n, lastOut int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.n-p.lastOut >= progressEvery || (errors.Is(err, io.EOF) && p.n > p.lastOut) {
		p.lastOut = p.n
		if serr := p.ev.send(addEvent{Name: p.name, Bytes: p.n}); serr != nil {
			return n, serr
		}
	}
	return n, err
}
