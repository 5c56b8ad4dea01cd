package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/shoal-project/shoal/api"
)

func TestParseStatusFilter(t *testing.T) {
	tests := []struct {
		in   string
		want string
		err  string
	}{
		{"", "", ""},
		{"pinned", "pinned", ""},
		{"error, queued,pin_error", "pin_error,queued", ""},
		{"pinned,", "", `"" is not a peer state to filter on; use queued, pinning, pinned, pin_error, unpinning, unpinned, remote, unreachable or error`},
		{"Pinned", "", `"Pinned" is not a peer state to filter on; use queued, pinning, pinned, pin_error, unpinning, unpinned, remote, unreachable or error`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			f, err := api.ParseStatusFilter(tt.in)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || f.String() != tt.want {
				t.Fatalf("got %q, %v; want %q", f.String(), err, tt.want)
			}
		})
	}
	st := api.PinStatus{Peers: map[string]api.PeerStatus{"a": {Status: api.StatusPinned}},
		Shards: []api.ShardStatus{{Peers: map[string]string{"a": api.StatusPinned, "b": api.StatusPinError}}}}
	for filter, want := range map[string]bool{"": true, "pinned": true, "error": true, "queued": false, "queued,unreachable": false} {
		f, _ := api.ParseStatusFilter(filter)
		if got := f.Match(st); got != want {
			t.Errorf("filter %q: match %v, want %v", filter, got, want)
		}
	}
}

// TestStatusFilterAndHealthEndpoints: GET /status filters by peer state
// and refuses an unknown one; the health actions answer 501 from a backend
// that does not implement them.
func TestStatusFilterAndHealthEndpoints(t *testing.T) {
	f := newFake()
	s := startServer(t, api.ServerConfig{}, f)
	if _, err := f.Pin(t.Context(), api.PinRequest{CID: cidV0, RMin: 1, RMax: 2}); err != nil {
		t.Fatal(err)
	}
	// The fake's pins are pinned on alice and pin_error on bob.
	if code, _, body := call(t, s, "GET", "/status?filter=error", ""); code != 200 || strings.Count(body, "\n") != 1 {
		t.Fatalf("filter=error: %d %q", code, body)
	}
	if code, _, body := call(t, s, "GET", "/status?filter=queued,remote", ""); code != 200 || body != "" {
		t.Fatalf("filter=queued,remote: %d %q", code, body)
	}
	code, _, body := call(t, s, "GET", "/status?filter=lost", "")
	if want := errBody(400, `query parameter filter: "lost" is not a peer state to filter on; use queued, pinning, pinned, pin_error, unpinning, unpinned, remote, unreachable or error`); code != 400 || body != want {
		t.Fatalf("filter=lost: %d %q", code, body)
	}
	for _, path := range []string{"/verify", "/recover?cid=" + cidV0, "/sync", "/peers/" + peerA + "/drain"} {
		if code, _, _ := call(t, s, "POST", path, ""); code != http.StatusNotImplemented {
			t.Errorf("POST %s: %d, want 501", path, code)
		}
	}
}
