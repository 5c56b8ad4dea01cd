package kuborpc

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/api"
)

// addOnly is a Backend that takes adds and nothing else: the fuzz target
// drives the request parsing, not a cluster (the tests with real peers
// are in kubo_test.go).
type addOnly struct{ adds *int }

func (addOnly) ID(context.Context) api.ID                 { return api.ID{ID: "12D3KooWtest"} }
func (addOnly) Peers(context.Context) ([]api.Peer, error) { return nil, nil }
func (addOnly) RemovePeer(context.Context, string) error  { return api.ErrNotFound }
func (addOnly) Pin(context.Context, api.PinRequest) (api.Pin, error) {
	return api.Pin{}, api.ErrNotFound
}
func (addOnly) Unpin(context.Context, string) (api.Pin, error)           { return api.Pin{}, api.ErrNotFound }
func (addOnly) Pins(context.Context) ([]api.Pin, error)                  { return nil, nil }
func (addOnly) StatusAll(context.Context, bool) ([]api.PinStatus, error) { return nil, nil }
func (addOnly) Status(context.Context, string, bool) (api.PinStatus, error) {
	return api.PinStatus{}, api.ErrNotFound
}

func (b addOnly) Add(_ context.Context, r io.Reader, _ api.AddParams) (api.AddResult, error) {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return api.AddResult{}, err
	}
	*b.adds++
	return api.AddResult{CID: "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"}, nil
}

// FuzzAdd: any query, content type and body gets 200 with one JSON value
// a line and no stream error, or a Kubo error body with 400 or 500;
// never a panic, and a refused request adds nothing.
func FuzzAdd(f *testing.F) {
	const boundary = "b0undary"
	part := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nhello\n\r\n--" + boundary + "--\r\n"
	ct := "multipart/form-data; boundary=" + boundary
	f.Add("pin=true&inline-limit=32", ct, part)
	f.Add("progress=true&shard=false", ct, part)
	f.Add("only-hash=true&cid-version=1", ct, part)
	f.Add("chunker=size-0", ct, part)
	f.Add("pin=false", ct, part)
	f.Add("", ct, strings.Replace(part, "application/octet-stream", "application/x-directory", 1))
	f.Add("", ct, strings.Replace(part, "a.txt", "d%2Fa.txt", 1))
	f.Add("", "application/json", "{}")
	f.Add("rmin=-5", ct, part)
	f.Fuzz(func(t *testing.T, query, ctype, body string) {
		adds := 0
		h := &handler{b: addOnly{&adds}, cfg: Config{ShardAbove: 64}}
		req := httptest.NewRequest(http.MethodPost, "/api/v0/add", strings.NewReader(body))
		req.URL.RawQuery = query
		req.Header.Set("Content-Type", ctype)
		w := httptest.NewRecorder()
		h.routes().ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK:
			dec := json.NewDecoder(w.Body)
			for dec.More() {
				var ev addEvent
				if err := dec.Decode(&ev); err != nil {
					t.Fatalf("200 with a line that is not an add event: %v", err)
				}
			}
		case http.StatusBadRequest, http.StatusInternalServerError:
			var e Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Type != "error" || e.Message == "" {
				t.Fatalf("%d with body %q: not Kubo's error shape", w.Code, w.Body.String())
			}
			if adds != 0 {
				t.Fatalf("%d after %d adds: a refused add must add nothing", w.Code, adds)
			}
		default:
			t.Fatalf("status %d", w.Code)
		}
	})
}
