package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-project/shoal/api"
)

// readAllBackend is a Backend whose Add reads the whole file and accepts
// it, so that every status of POST /add is the HTTP layer's own.
type readAllBackend struct {
	*fakeBackend
	mu   sync.Mutex
	got  []byte
	seen bool
}

func (b *readAllBackend) Add(_ context.Context, r io.Reader, p api.AddParams) (api.AddResult, error) {
	data, err := io.ReadAll(r)
	b.mu.Lock()
	b.got, b.seen = data, true
	b.mu.Unlock()
	if err != nil {
		return api.AddResult{}, err
	}
	return api.AddResult{CID: cidV1B, Name: p.Name, Size: uint64(len(data))}, nil
}

// printable reports whether s can be sent as is in a request line or a
// header value: the fuzzer's other bytes would be refused by net/http
// before they reach the API.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == '#' {
			return false
		}
	}
	return true
}

func formFile(f *testing.F, filename string, parts ...string) (contentType string, body []byte) {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for i, p := range parts {
		var pw io.Writer
		var err error
		if i == 0 {
			pw, err = w.CreateFormFile("file", filename)
		} else {
			pw, err = w.CreateFormField("extra")
		}
		if err != nil {
			f.Fatal(err)
		}
		_, _ = io.WriteString(pw, p)
	}
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	return w.FormDataContentType(), b.Bytes()
}

// FuzzAdd posts arbitrary queries, content types and bodies to POST /add
// on a real server (events=true streams its answer, so it needs one). A
// request the API refuses gets a 4xx with a JSON error of one sentence,
// never a 5xx; one it accepts (200) handed the backend the file: the
// whole body, or the first part of a multipart one.
func FuzzAdd(f *testing.F) {
	mpType, mpBody := formFile(f, "photo.jpg", "the file's bytes", "ignored")
	for _, s := range []struct {
		query, ctype string
		body         []byte
	}{
		{"name=a&rmin=1&rmax=2&chunker=size-262144&cid-version=1&raw-leaves=true&hash=sha2-256", "application/octet-stream", []byte("data")},
		{"shard=true&shard-size=1048576&events=true&trickle=true", "application/octet-stream", []byte("data")},
		{"inline=true&inline-limit=32&wrap-with-directory=true&allow-big-block=false", "application/octet-stream", nil},
		{"", mpType, mpBody},
		{"name=x&events=true", mpType, mpBody},
		{"", mpType, mpBody[:len(mpBody)-10]},
		{"", mpType, mpBody[:bytes.Index(mpBody, []byte("file's"))]},
		{"", "multipart/form-data", mpBody},
		{"", "multipart/form-data; boundary=zz", []byte("--zz--\r\n")},
		{"", "text/plain", []byte("data")},
		{"rmin=3&rmax=2", "application/octet-stream", nil},
		{"rmin=x", "application/octet-stream", nil},
		{"cid-version=7", "application/octet-stream", nil},
		{"shard-size=-1", "application/octet-stream", nil},
		{"name=a&name=b", "application/octet-stream", nil},
		{"frob=1", "application/octet-stream", nil},
		{"events=maybe", "application/octet-stream", nil},
		{"%zz", "application/octet-stream", nil},
		{"chunker=rabin-1-2-3", "application/octet-stream", nil},
	} {
		f.Add(s.query, s.ctype, s.body)
	}
	b := &readAllBackend{fakeBackend: newFake()}
	s, err := api.NewServer(api.ServerConfig{Listen: "127.0.0.1:0", MaxBodyBytes: 4096}, b, "v")
	if err != nil {
		f.Fatal(err)
	}
	if err := s.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	base := "http://" + s.Addr() + "/add"
	hc := &http.Client{Timeout: 10 * time.Second}

	f.Fuzz(func(t *testing.T, query, ctype string, body []byte) {
		if !printable(query) || !printable(strings.ReplaceAll(ctype, " ", "")) {
			return
		}
		b.mu.Lock()
		b.got, b.seen = nil, false
		b.mu.Unlock()
		u := base
		if query != "" {
			u += "?" + query
		}
		req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return // not a URL net/http sends
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("POST /add?%s (%s): %v", query, ctype, err)
		}
		defer resp.Body.Close()
		ans, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read the answer: %v", err)
		}
		switch code := resp.StatusCode; {
		case code == http.StatusOK:
			checkAdded(t, b, query, ctype, body, ans)
		case code >= 400 && code < 500:
			var e api.Error
			dec := json.NewDecoder(bytes.NewReader(ans))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&e); err != nil || e.Code != code || strings.TrimSpace(e.Message) == "" || strings.Contains(e.Message, "\n") {
				t.Fatalf("status %d with body %q (%v) for ?%s (%s) %q", code, ans, err, query, ctype, body)
			}
		default:
			t.Fatalf("status %d (%s) for ?%s (%s) %q", code, ans, query, ctype, body)
		}
	})
}

// checkAdded checks an accepted add: the answer is the backend's result,
// as JSON or as a root event, and the backend read the file the request
// carried.
func checkAdded(t *testing.T, b *readAllBackend, query, ctype string, body, ans []byte) {
	t.Helper()
	b.mu.Lock()
	got, seen := b.got, b.seen
	b.mu.Unlock()
	if !seen {
		t.Fatalf("200 for ?%s without an add", query)
	}
	var res api.AddResult
	q, _ := url.ParseQuery(query)
	if events, _ := strconv.ParseBool(q.Get("events")); events {
		sc := bufio.NewScanner(bytes.NewReader(ans))
		var ev api.AddEvent
		for sc.Scan() {
			ev = api.AddEvent{}
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("event %q: %v", sc.Bytes(), err)
			}
		}
		if ev.Type != api.AddEventRoot || ev.Result == nil {
			t.Fatalf("events %q do not end with the root", ans)
		}
		res = *ev.Result
	} else if err := json.Unmarshal(ans, &res); err != nil {
		t.Fatalf("answer %q: %v", ans, err)
	}
	if res.Size != uint64(len(got)) {
		t.Fatalf("answer %+v for %d bytes read", res, len(got))
	}
	want := body
	if mt, params, _ := mime.ParseMediaType(ctype); mt == "multipart/form-data" {
		part, err := multipart.NewReader(bytes.NewReader(body), params["boundary"]).NextPart()
		if err != nil {
			t.Fatalf("multipart body %q accepted: %v", body, err)
		}
		if want, err = io.ReadAll(part); err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("multipart body %q accepted, its file unreadable: %v", body, err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the backend read %q of the body %q", got, body)
	}
}
