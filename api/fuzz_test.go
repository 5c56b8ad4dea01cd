package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/config"
)

// FuzzPinRequest posts arbitrary bodies to POST /pins. The server must
// answer 200 (the fake backend accepted a valid request), 400 or 413 with
// a JSON error, never 500 or a panic; and whatever reaches the backend is a
// canonical CID with valid replication factors.
func FuzzPinRequest(f *testing.F) {
	for _, seed := range []string{
		`{"cid":"` + cidV0 + `"}`,
		`{"cid":"` + cidV1 + `","name":"x","rmin":2,"rmax":3,"wait":true,"timeout":1000000000}`,
		`{"cid":"` + cidV1B + `","rmin":-1,"rmax":-1}`,
		`{"cid":"zb2rhj7crUKTQYRGCRATFaQ6YFLTde2YzdqbbhAASkL9uRDXn","rmax":-1}`,
		`{"cid":"` + cidV0 + `","rmin":3,"rmax":2}`,
		`{"cid":"` + cidV0 + `","rmin":-2}`,
		`{"cid":"` + cidV0 + `","timeout":-5}`,
		`{"cid":"` + cidV0 + `","extra":1}`,
		`{"cid":"` + cidV0 + `"} {}`,
		`{"CID":"` + cidV0 + `","RMin":1e3}`,
		`{"cid":null,"rmin":1.5}`,
		`{"cid":"` + cidV0 + `","rmin":99999999999999999999}`,
		`{"cid":"\u0000"}`,
		`[]`, `null`, `""`, `{`, ``, "\xff\xfe", `{"cid":"Qm"}`, `{"name":{"a":[1,2,{}]}}`,
	} {
		f.Add([]byte(seed))
	}
	b := newFake()
	s, err := api.NewServer(api.ServerConfig{Listen: "127.0.0.1:9094", MaxBodyBytes: 4096}, b, "v")
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		b.mu.Lock()
		before := len(b.pinReqs)
		b.mu.Unlock()
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:9094/pins", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch code := rec.Code; code {
		case http.StatusOK:
			b.mu.Lock()
			got := b.pinReqs[before]
			b.mu.Unlock()
			c, err := cid.Decode(got.CID)
			if err != nil || c.String() != got.CID {
				t.Fatalf("backend got CID %q from %q", got.CID, body)
			}
			if got.RMin != 0 && got.RMax != 0 {
				if err := config.CheckReplication(got.RMin, got.RMax); err != nil {
					t.Fatalf("backend got %v from %q", err, body)
				}
			}
			if got.RMin < -1 || got.RMax < -1 || got.Timeout < 0 {
				t.Fatalf("backend got %+v from %q", got, body)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			var e api.Error
			dec := json.NewDecoder(rec.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&e); err != nil || e.Code != code || e.Message == "" || strings.Contains(e.Message, "\n") {
				t.Fatalf("status %d with body %q (%v) for %q", code, rec.Body.String(), err, body)
			}
			if code == http.StatusRequestEntityTooLarge && len(body) <= 4096 {
				t.Fatalf("413 for a body of %d bytes", len(body))
			}
		default:
			t.Fatalf("status %d (%s) for %q", code, rec.Body.String(), body)
		}
	})
}
