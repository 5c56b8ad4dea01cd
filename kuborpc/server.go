package kuborpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/dag"
)

// Config is the endpoint's configuration.
type Config struct {
	// Server is the REST API's configuration (auth, TLS, origins, hosts)
	// with Listen the endpoint's own address.
	Server api.ServerConfig
	// ShardAbove is the size above which an add without a shard option
	// is sharded; 0 shards every add.
	ShardAbove int64
	// Version is shoal's version, for /version and /id.
	Version string
}

// Deadlines of one command: each write of a value answer, of a byte
// stream (cat: a reader may pause, as with the REST API's cat) and each
// read of an upload must make progress within them.
const (
	valueIdle  = time.Minute
	streamIdle = 30 * time.Minute
	bodyIdle   = 2 * time.Minute
)

// New returns the endpoint's server of b; Start (or Serve) starts it.
func New(cfg Config, b api.Backend) (*api.Server, error) {
	h := &handler{b: b, cfg: cfg}
	return api.NewHandlerServer(cfg.Server, h.routes(), writeError)
}

type handler struct {
	b   api.Backend
	cfg Config
}

// command is one /api/v0 command: whether it reads an upload, whether it
// streams bytes, whether it reads or changes the pinset (then it waits for
// a consistent view first), and how it answers.
type command struct {
	body   bool
	stream bool
	state  bool
	run    func(w http.ResponseWriter, r *http.Request, q url.Values) error
}

func (h *handler) routes() http.Handler {
	cmds := map[string]command{
		"id":          {run: h.id},
		"version":     {run: h.version},
		"add":         {body: true, state: true, run: h.add},
		"cat":         {stream: true, state: true, run: h.cat},
		"pin/add":     {state: true, run: h.pinAdd},
		"pin/rm":      {state: true, run: h.pinRm},
		"pin/ls":      {state: true, run: h.pinLs},
		"pin/update":  {state: true, run: h.pinUpdate},
		"get":         {stream: true, state: true, run: h.get},
		"dag/export":  {stream: true, state: true, run: h.dagExport},
		"repo/stat":   {run: h.repoStat},
		"swarm/peers": {run: h.swarmPeers},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v0/", func(w http.ResponseWriter, r *http.Request) {
		name := strings.Trim(strings.TrimPrefix(r.URL.Path, "/api/v0/"), "/")
		cmd, ok := cmds[name]
		if !ok {
			// 400, not Kubo's 404, whose text the CLI replaces with
			// "Command not found."; the sentence is the point.
			writeError(w, http.StatusBadRequest, fmt.Sprintf("shoal does not support the Kubo command %q (docs/kubo-rpc.md lists those it does)", strings.ReplaceAll(name, "/", " ")))
			return
		}
		if r.Method != http.MethodPost {
			// As Kubo answers it: its RPC API takes POST only, against
			// cross-site requests.
			http.Error(w, "405 - Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		idle := valueIdle
		if cmd.stream {
			idle = streamIdle
		}
		w, r, done := api.WithDeadlines(w, r, idle, bodyIdle, cmd.body)
		defer done()
		q, err := options(r)
		if err == nil && cmd.state {
			err = h.barrier(r)
		}
		if err == nil {
			err = cmd.run(w, r, q)
		}
		if err != nil {
			writeErr(w, err)
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no Kubo RPC endpoint at %s: commands are under /api/v0/", r.URL.Path))
	})
	return mux
}

// options parses the query. As Kubo, it ignores options a command does
// not know (its CLI sends every option that has a default) and refuses an
// option given twice, but for the repeated positional arg.
func options(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, clientErr("the query string is malformed")
	}
	for opt, vals := range q {
		if opt != "arg" && len(vals) > 1 {
			return nil, clientErr("expected key %s to have only a single value, received %v", opt, vals)
		}
	}
	if enc := q.Get("encoding"); enc != "" && enc != "json" {
		return nil, clientErr("shoal answers encoding=json only, not %q", enc)
	}
	return q, nil
}

// barrier makes the command's view of the pinset consistent, as the REST
// API's reads and writes are by default.
func (h *handler) barrier(r *http.Request) error {
	rb, ok := h.b.(api.ReadBarrier)
	if !ok {
		return nil
	}
	_, err := rb.ReadBarrier(r.Context(), false)
	return err
}

// ErrorType is go-ipfs-cmds' error code: what kind of failure it is.
type ErrorType int

// The codes shoal answers with.
const (
	ErrNormal ErrorType = 0 // the command failed
	ErrClient ErrorType = 1 // the request was wrong
)

// Error is Kubo's error body.
type Error struct {
	Message string
	Code    ErrorType
	Type    string
}

// kuboError is an error answered with its own status.
type kuboError struct {
	status int
	msg    string
}

func (e *kuboError) Error() string { return e.msg }

func clientErr(format string, args ...any) error {
	return &kuboError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// writeErr answers err as Kubo would: 400 with Code 1 for a bad request,
// 500 with Code 0 for any other failure (Kubo has no other statuses for
// a command's error; the message says what it was).
func writeErr(w http.ResponseWriter, err error) {
	var ke *kuboError
	status := http.StatusInternalServerError
	switch {
	case errors.As(err, &ke):
		status = ke.status
	case api.Status(err) == http.StatusBadRequest:
		status = http.StatusBadRequest
	}
	writeError(w, status, api.Message(err))
}

// writeError is api.ErrorWriter in Kubo's shape.
func writeError(w http.ResponseWriter, status int, msg string) {
	code := ErrNormal
	if status >= 400 && status < 500 {
		code = ErrClient
	}
	b, _ := json.Marshal(Error{Message: msg, Code: code, Type: "error"})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeValue answers one JSON value.
func writeValue(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("encode the answer: %v", err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Trailer", "X-Stream-Error")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
}

// oneArg returns the command's single positional argument.
func oneArg(q url.Values, what string) (string, error) {
	switch args := q["arg"]; len(args) {
	case 0:
		return "", clientErr("argument %q is required", what)
	case 1:
		return args[0], nil
	default:
		return "", clientErr("this command takes one %s, got %d", what, len(args))
	}
}

// parseCID reads a CID argument, also as /ipfs/CID, as Kubo takes paths;
// a path below the root is refused, shoal reads roots only.
func parseCID(s string) (cid.Cid, error) {
	p := strings.TrimPrefix(s, "/ipfs/")
	if strings.Contains(p, "/") {
		return cid.Undef, clientErr("%q: shoal reads whole pinned roots, not paths inside them", s)
	}
	c, err := cid.Decode(p)
	if err != nil {
		return cid.Undef, clientErr("invalid path %q: %v", s, err)
	}
	if err := dag.CheckCID(c); err != nil {
		return cid.Undef, clientErr("%v", err)
	}
	return c, nil
}

// boolOpt reads a true/false option (absent: def).
func boolOpt(q url.Values, name string, def bool) (bool, error) {
	if !q.Has(name) {
		return def, nil
	}
	v := q.Get(name)
	if v == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, clientErr("option %q must be true or false, not %q", name, v)
	}
	return b, nil
}

// intOpt reads an integer option of at least least (absent: def).
func intOpt(q url.Values, name string, def, least int64) (int64, error) {
	if !q.Has(name) {
		return def, nil
	}
	n, err := strconv.ParseInt(q.Get(name), 10, 64)
	if err != nil || n < least {
		return 0, clientErr("option %q must be an integer of at least %d, not %q", name, least, q.Get(name))
	}
	return n, nil
}
