package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
)

// answer is what the fuzzed API server sends: a status, the length and
// error headers of a download, and a body.
type answer struct {
	code    int
	length  string // api.HeaderLength, unless empty
	trailer string // api.TrailerError, unless empty
	body    []byte
}

// headerSafe keeps the bytes a header value can carry, so that the server
// sends what the fuzzer meant.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
}

const fuzzCID = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"

// calls are the client methods that decode an answer, each returning
// what it decoded; which picks one.
var calls = []func(ctx context.Context, c *client.Client) (any, error){
	func(ctx context.Context, c *client.Client) (any, error) { return c.ID(ctx) },
	func(ctx context.Context, c *client.Client) (any, error) { return c.Version(ctx) },
	func(ctx context.Context, c *client.Client) (any, error) { return nil, c.Health(ctx) },
	func(ctx context.Context, c *client.Client) (any, error) { return c.Peers(ctx) },
	func(ctx context.Context, c *client.Client) (any, error) { return c.PeerHealth(ctx) },
	func(ctx context.Context, c *client.Client) (any, error) { return c.Lost(ctx) },
	func(ctx context.Context, c *client.Client) (any, error) { return c.Pins(ctx) },
	func(ctx context.Context, c *client.Client) (any, error) {
		return c.Pin(ctx, api.PinRequest{CID: fuzzCID})
	},
	func(ctx context.Context, c *client.Client) (any, error) { return c.Unpin(ctx, fuzzCID) },
	func(ctx context.Context, c *client.Client) (any, error) { return c.Status(ctx, fuzzCID, false) },
	func(ctx context.Context, c *client.Client) (any, error) { return c.StatusAll(ctx, true) },
	func(ctx context.Context, c *client.Client) (any, error) {
		return c.Add(ctx, strings.NewReader("file"), "f", api.AddParams{})
	},
	func(ctx context.Context, c *client.Client) (any, error) {
		var shards []api.ShardStatus
		res, err := c.AddEvents(ctx, strings.NewReader("file"), "f", api.AddParams{Shard: true}, func(s api.ShardStatus) error {
			shards = append(shards, s)
			return nil
		})
		return []any{res, shards}, err
	},
	func(ctx context.Context, c *client.Client) (any, error) { return c.Verify(ctx, "", true) },
	func(ctx context.Context, c *client.Client) (any, error) { return c.Recover(ctx, fuzzCID, false) },
	func(ctx context.Context, c *client.Client) (any, error) {
		return c.Drain(ctx, "12D3KooWGRUVh4BrXQvpRWRFAEv5ANbFzUYw4Rw4yqyojnCgBdZ4")
	},
	func(ctx context.Context, c *client.Client) (any, error) { return c.Rebalance(ctx, true, 0) },
}

// catCall and exportCall read a download to its end.
const (
	catCall    = 254
	exportCall = 255
)

// FuzzAnswers serves arbitrary answers from one HTTP server to every
// client method that decodes one (which picks the method; catCall and
// exportCall read a download). Each returns within its context, with an
// error that says something: a non-2xx answer as an *Error of its
// status. A download that reads to its end without an error is the body
// sent, of the announced length if any, without an error trailer.
func FuzzAnswers(f *testing.F) {
	var cur atomic.Pointer[answer]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		a := cur.Load()
		w.Header().Set("Content-Type", "application/json")
		if a.length != "" {
			w.Header().Set(api.HeaderLength, a.length)
		}
		if a.trailer != "" {
			w.Header().Set("Trailer", api.TrailerError)
		}
		w.WriteHeader(a.code)
		_, _ = w.Write(a.body)
		if a.trailer != "" {
			w.Header().Set(api.TrailerError, a.trailer)
		}
	}))
	f.Cleanup(srv.Close)
	c, err := client.New(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		f.Fatal(err)
	}

	js := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	pin := api.Pin{CID: fuzzCID, Name: "x", RMin: 1, RMax: 2}
	status := js(api.PinStatus{CID: fuzzCID})
	seeds := []struct {
		which   uint8
		code    uint16
		length  string
		trailer string
		body    []byte
	}{
		{0, 200, "", "", js(api.ID{ID: "12D3KooWGRUVh4BrXQvpRWRFAEv5ANbFzUYw4Rw4yqyojnCgBdZ4", Name: "a"})},
		{1, 200, "", "", []byte(`{"version":"v1"}`)},
		{3, 200, "", "", js([]api.Peer{{ID: "x", Alive: true}})},
		{6, 200, "", "", js([]api.Pin{pin})},
		{7, 200, "", "", js(pin)},
		{10, 200, "", "", append(append(status, '\n'), status...)},
		{10, 200, "", "", append(status, []byte("\n{")...)},
		{11, 200, "", "", js(api.AddResult{CID: fuzzCID, Size: 4})},
		{12, 200, "", "", []byte(`{"type":"shard","shard":{"index":0}}` + "\n" + string(js(api.AddEvent{Type: api.AddEventRoot, Result: &api.AddResult{CID: fuzzCID}})))},
		{12, 200, "", "", js(api.AddEvent{Type: api.AddEventError, Error: &api.Error{Code: 409, Message: "no room"}})},
		{12, 200, "", "", []byte(`{"type":"shard"}`)},
		{12, 200, "", "", []byte(`{"type":"error","error":{"code":500,"message":""}}`)},
		{3, 400, "", "", js(api.Error{Code: 400, Message: "bad request"})},
		{0, 503, "", "", []byte("<html>busy</html>")},
		{3, 400, "", "", []byte(`{"code":400,"message":" "}`)},
		{6, 200, "", "", []byte(`[{"cid":7}]`)},
		{catCall, 200, "4", "", []byte("data")},
		{catCall, 200, "5", "", []byte("data")},
		{catCall, 200, "3", "", []byte("data")},
		{catCall, 200, "", "the holder failed", []byte("da")},
		{catCall, 404, "", "", js(api.Error{Code: 404, Message: fuzzCID + " is not pinned"})},
		{exportCall, 200, "-1", "", []byte("car")},
	}
	for _, s := range seeds {
		f.Add(s.which, s.code, s.length, s.trailer, s.body)
	}
	f.Fuzz(func(t *testing.T, which uint8, code uint16, length, trailer string, body []byte) {
		status := int(code)
		if status < 200 || status > 599 { // no 1xx: net/http sends those as informational answers
			status = 200 + status%400
		}
		a := &answer{code: status, length: headerSafe(length), trailer: headerSafe(trailer), body: body}
		cur.Store(a)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var got any
		var err error
		switch {
		case which == catCall || which == exportCall:
			got, err = download(ctx, c, which == catCall)
		default:
			got, err = calls[int(which)%len(calls)](ctx, c)
		}
		if ctx.Err() != nil {
			t.Fatalf("the call hung on %+v", a)
		}
		if err == nil {
			if a.code >= 300 {
				t.Fatalf("status %d accepted: %v", a.code, got)
			}
			if b, ok := got.([]byte); ok {
				sent, trailer := body, strings.TrimSpace(a.trailer)
				if a.code == http.StatusNoContent {
					sent, trailer = nil, "" // the server sends no body, so no trailer
				}
				n, lerr := strconv.ParseInt(strings.TrimSpace(a.length), 10, 64)
				switch {
				case !bytes.Equal(b, sent):
					t.Fatalf("download read %q, the server sent %q", b, sent)
				case trailer != "":
					t.Fatalf("download ignored the error trailer %q", a.trailer)
				case which == catCall && lerr == nil && n >= 0 && n != int64(len(b)):
					t.Fatalf("download of %d bytes accepted, %d announced", len(b), n)
				}
			}
			return
		}
		if strings.TrimSpace(err.Error()) == "" {
			t.Fatalf("an error without a message: %#v, for %+v", err, a)
		}
		var ae *client.Error
		if a.code >= 300 && (!errors.As(err, &ae) || ae.Code != a.code) && !strings.Contains(string(body), "HTTP request to an HTTPS server") {
			t.Fatalf("status %d gave %#v", a.code, err)
		}
	})
}

// download reads a Cat (or an Export) to its end.
func download(ctx context.Context, c *client.Client, cat bool) ([]byte, error) {
	var r *client.CatReader
	var err error
	if cat {
		r, err = c.Cat(ctx, fuzzCID, 0, -1)
	} else {
		r, err = c.Export(ctx, fuzzCID)
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
