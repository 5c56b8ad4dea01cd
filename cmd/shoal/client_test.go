package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/internal/nettest"
)

// The API commands run as the real binary against an api.Server over
// loopback, backed by cliBackend; TestClusterLifecycle runs them against
// real daemons.

const (
	cliPeerA = "12D3KooWGRUVh4BrXQvpRWRFAEv5ANbFzUYw4Rw4yqyojnCgBdZ4"
	cliPeerB = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"
)

// cliBackend is an in-memory api.Backend holding pins.
type cliBackend struct {
	mu   sync.Mutex
	pins []api.Pin
	reqs []api.PinRequest
	rms  []string
	locs []bool
}

var _ api.Backend = (*cliBackend)(nil)

func (b *cliBackend) ID(context.Context) api.ID {
	return api.ID{ID: cliPeerA, Name: "alice", Addresses: []string{
		"/ip4/127.0.0.1/tcp/9096/p2p/" + cliPeerA, "/ip6/::1/tcp/9096/p2p/" + cliPeerA,
	}}
}

func (b *cliBackend) Peers(context.Context) ([]api.Peer, error) {
	return []api.Peer{
		{ID: cliPeerA, Name: "alice", Role: "leader", Alive: true, Addresses: []string{"/ip4/127.0.0.1/tcp/9096", "/ip6/::1/tcp/9096"}},
		{ID: cliPeerB, Name: "bob", Role: "follower", Error: "connection refused"},
	}, nil
}

func (b *cliBackend) RemovePeer(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rms = append(b.rms, id)
	return nil
}

// Drain reports that the peer holds nothing.
func (b *cliBackend) Drain(_ context.Context, id string) (api.DrainProgress, error) {
	return api.DrainProgress{Peer: id}, nil
}

func (b *cliBackend) Pin(_ context.Context, req api.PinRequest) (api.Pin, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reqs = append(b.reqs, req)
	p := api.Pin{CID: req.CID, Name: req.Name, RMin: req.RMin, RMax: req.RMax, Allocations: []string{cliPeerA, cliPeerB}}
	b.pins = append(b.pins, p)
	return p, nil
}

func (b *cliBackend) Unpin(_ context.Context, c string) (api.Pin, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, p := range b.pins {
		if p.CID == c {
			b.pins = append(b.pins[:i], b.pins[i+1:]...)
			return p, nil
		}
	}
	return api.Pin{}, fmt.Errorf("%s is not pinned: %w", c, api.ErrNotFound)
}

func (b *cliBackend) Pins(context.Context) ([]api.Pin, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]api.Pin(nil), b.pins...), nil
}

func (b *cliBackend) status(p api.Pin) api.PinStatus {
	return api.PinStatus{CID: p.CID, Name: p.Name, RMin: p.RMin, RMax: p.RMax, Allocations: p.Allocations,
		Peers: map[string]api.PeerStatus{
			cliPeerB: {Name: "bob", Status: api.StatusPinError, Error: "disk full"},
			cliPeerA: {Name: "alice", Status: api.StatusPinned},
		}}
}

func (b *cliBackend) Status(_ context.Context, c string, local bool) (api.PinStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.locs = append(b.locs, local)
	for _, p := range b.pins {
		if p.CID == c {
			return b.status(p), nil
		}
	}
	return api.PinStatus{}, fmt.Errorf("%s is not pinned: %w", c, api.ErrNotFound)
}

func (b *cliBackend) StatusAll(_ context.Context, local bool) ([]api.PinStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.locs = append(b.locs, local)
	var sts []api.PinStatus
	for _, p := range b.pins {
		sts = append(sts, b.status(p))
	}
	return sts, nil
}

func (b *cliBackend) Add(context.Context, io.Reader, api.AddParams) (api.AddResult, error) {
	return api.AddResult{}, errors.New("not in this test")
}

func startAPI(t *testing.T, cfg api.ServerConfig, b api.Backend) string {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	s, err := api.NewServer(cfg, b, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr()
}

// runEnv runs shoal with extra environment variables and no stdin.
func runEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(shoalBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

func TestAPICommands(t *testing.T) {
	b := &cliBackend{}
	addr := startAPI(t, api.ServerConfig{}, b)
	// SHOAL_API names the peer; --api overrides it.
	env := []string{"SHOAL_API=" + addr, "SHOAL_API_USER=", "SHOAL_API_TOKEN="}
	ok := func(want string, args ...string) {
		t.Helper()
		r := runEnv(t, env, args...)
		if r.code != 0 || r.stderr != "" || r.stdout != want {
			t.Fatalf("shoal %s: exit %d, stderr %q, stdout\n%s\nwant\n%s", strings.Join(args, " "), r.code, r.stderr, r.stdout, want)
		}
	}
	fails := func(stderr string, args ...string) {
		t.Helper()
		r := runEnv(t, env, args...)
		if r.code != 1 || r.stdout != "" || r.stderr != stderr {
			t.Fatalf("shoal %s: exit %d, stdout %q, stderr %q; want exit 1, stderr %q", strings.Join(args, " "), r.code, r.stdout, r.stderr, stderr)
		}
	}

	ok(cliPeerA+"\n/ip4/127.0.0.1/tcp/9096/p2p/"+cliPeerA+"\n/ip6/::1/tcp/9096/p2p/"+cliPeerA+"\n", "id")
	r := runEnv(t, env, "--api", "http://"+addr, "id", "--json")
	var id api.ID
	if err := json.Unmarshal([]byte(r.stdout), &id); err != nil || id.ID != cliPeerA || id.Version != "test" || !strings.Contains(r.stdout, `"addresses": [`) {
		t.Fatalf("id --json: %q %v", r.stdout, err)
	}
	ok(`ID                                                    NAME   ROLE      ALIVE  ADDRESSES
`+cliPeerA+`  alice  leader    yes    /ip4/127.0.0.1/tcp/9096,/ip6/::1/tcp/9096
`+cliPeerB+`  bob    follower  no     -
`, "peers", "ls")
	r = runEnv(t, env, "peers", "ls", "--json")
	var peers []api.Peer
	if err := json.Unmarshal([]byte(r.stdout), &peers); err != nil || len(peers) != 2 || peers[1].Error != "connection refused" {
		t.Fatalf("peers ls --json: %q %v", r.stdout, err)
	}
	ok("removed peer "+cliPeerB+"\n", "peers", "rm", cliPeerB)
	fails("shoal: \"bob\" is not a peer ID\n", "peers", "rm", "bob")

	ok("CID  NAME  RMIN  RMAX  ALLOCATIONS\n", "pin", "ls")
	ok("[]\n", "pin", "ls", "--json")
	// Flags may follow the CID; --replication-min is --rmin.
	ok("added pin "+helloCID+"\n", "pin", "add", helloCID, "--name", "hello", "--replication-min", "1", "--rmax", "2")
	ok("pinned "+rand1048577+"\n", "pin", "add", rand1048577, "--rmin=-1", "--rmax=-1", "--wait", "--timeout", "90s")
	if got := b.reqs; len(got) != 2 || got[0].RMin != 1 || got[0].RMax != 2 || got[0].Name != "hello" || got[0].Wait ||
		!got[1].Wait || got[1].Timeout != 90*time.Second || got[1].RMin != -1 {
		t.Fatalf("pin requests %+v", got)
	}
	fails("shoal: replication minimum 3 is above the maximum 2\n", "pin", "add", helloCID, "--rmin", "3", "--rmax", "2")
	fails("shoal: \"nope\" is not a CID\n", "pin", "add", "nope")
	fails("shoal: give --rmin or --replication-min, not both\n", "pin", "add", helloCID, "--rmin", "1", "--replication-min", "2")
	fails("shoal: --timeout needs --wait\n", "pin", "add", helloCID, "--timeout", "1s")
	fails("shoal: pin add needs a CID\n", "pin", "add")
	ok(fmt.Sprintf("%-48sNAME   RMIN  RMAX  ALLOCATIONS\n", "CID")+
		helloCID+"  hello  1     2     "+cliPeerA+","+cliPeerB+"\n"+
		rand1048577+"  -      all   all   "+cliPeerA+","+cliPeerB+"\n", "pin", "ls")

	line := func(c, name string) string {
		return c + name + ": alice pinned, bob pin_error (disk full)\n"
	}
	ok(line(helloCID, " hello"), "status", helloCID)
	ok(line(helloCID, " hello")+line(rand1048577, ""), "status", "--local")
	r = runEnv(t, env, "status", "--json")
	var sts []api.PinStatus
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil || len(sts) != 2 || sts[0].Peers[cliPeerB].Error != "disk full" {
		t.Fatalf("status --json: %q %v", r.stdout, err)
	}
	// The streamed array is what printJSON would print for the slice.
	var want bytes.Buffer
	printJSON(&want, sts)
	if r.stdout != want.String() {
		t.Fatalf("status --json:\n%s\nwant\n%s", r.stdout, want.String())
	}
	r = runEnv(t, env, "status", helloCID, "--json")
	var st api.PinStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.CID != helloCID {
		t.Fatalf("status CID --json: %q %v", r.stdout, err)
	}
	b.mu.Lock()
	locs := fmt.Sprint(b.locs)
	b.mu.Unlock()
	if want := []bool{false, true, false, false}; locs != fmt.Sprint(want) {
		t.Fatalf("local flags %v, want %v", locs, want)
	}

	ok("removed pin "+helloCID+"\n", "pin", "rm", helloCID)
	fails("shoal: "+helloCID+" is not pinned\n", "pin", "rm", helloCID)
	fails("shoal: "+helloCID+" is not pinned\n", "status", helloCID)
}

func TestAPICommandsAuth(t *testing.T) {
	addr := startAPI(t, api.ServerConfig{BasicAuth: map[string]string{"alice": "pw"}, BearerTokens: []string{"tok"}}, &cliBackend{})
	tests := []struct {
		env    []string
		args   []string
		stderr string
	}{
		{nil, nil, "shoal: this API needs credentials: basic auth or a bearer token; give --api-user USER:PASSWORD or --api-token TOKEN\n"},
		{nil, []string{"--api-token", "bad"}, "shoal: the API credentials are wrong; give --api-user USER:PASSWORD or --api-token TOKEN\n"},
		{nil, []string{"--api-token", "tok"}, ""},
		{nil, []string{"--api-user", "alice:pw"}, ""},
		{nil, []string{"--api-user", "alice"}, "shoal: --api-user must be USER:PASSWORD\n"},
		{nil, []string{"--api-user", "alice:pw", "--api-token", "tok"}, "shoal: give --api-user or --api-token, not both\n"},
		{[]string{"SHOAL_API_TOKEN=tok"}, nil, ""},
		{[]string{"SHOAL_API_USER=alice:pw"}, nil, ""},
		// A flag replaces the environment's credentials.
		{[]string{"SHOAL_API_USER=alice:wrong"}, []string{"--api-token", "tok"}, ""},
	}
	for _, tt := range tests {
		env := append([]string{"SHOAL_API_USER=", "SHOAL_API_TOKEN="}, tt.env...)
		r := runEnv(t, env, append([]string{"--api", addr, "pin", "ls"}, tt.args...)...)
		if r.stderr != tt.stderr || (r.code == 0) != (tt.stderr == "") {
			t.Errorf("env %v args %v: exit %d stderr %q, want %q", tt.env, tt.args, r.code, r.stderr, tt.stderr)
		}
	}
}

func TestAPICommandsUnreachable(t *testing.T) {
	addr := nettest.RefusedAddr(t)
	for _, args := range [][]string{{"id"}, {"peers", "ls"}, {"pin", "ls"}, {"status"}} {
		r := runEnv(t, nil, append([]string{"--api", addr}, args...)...)
		if want := "shoal: cannot reach the shoal API at " + addr + ": is the daemon running?\n"; r.code != 1 || r.stderr != want {
			t.Errorf("%v: exit %d stderr %q, want %q", args, r.code, r.stderr, want)
		}
	}
}
