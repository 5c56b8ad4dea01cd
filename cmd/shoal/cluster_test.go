package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testCluster runs N real `shoal daemon` processes on loopback, each with
// its own temporary repo and Raft timeouts short enough for tests. A
// daemon's first start listens on ports the system picks (port 0), which
// the test reads back; every later start listens on those same ports, so
// that a restarted peer is found where it was.
type testCluster struct {
	t      *testing.T
	secret string
	peers  []*testPeer
}

type testPeer struct {
	name string
	repo string
	// api (HOST:PORT), p2pPort and gateway (HOST:PORT, "" without one)
	// are where the daemon listens, read back once it started: empty and
	// 0 before its first start.
	api     string
	p2pPort int
	gateway string
	cmd     *exec.Cmd
	log     *syncBuffer
	done    chan struct{}
	exitErr error
	// apiCA, when set, verifies the certificate of an API that serves
	// TLS; apiToken is its bearer token, if it needs one.
	apiCA    *x509.CertPool
	apiToken string
}

// syncBuffer collects a daemon's stderr, and tells waiters when it grows.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	grew chan struct{} // closed by the next Write
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.grew != nil {
		close(b.grew)
		b.grew = nil
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// snapshot returns what was written so far and a channel closed by the
// next Write.
func (b *syncBuffer) snapshot() (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.grew == nil {
		b.grew = make(chan struct{})
	}
	return b.buf.String(), b.grew
}

// waitLog waits until the daemon's log from byte from on has a match of
// re, and returns its submatches. It fails the test when the daemon exits
// first or after timeout.
func (p *testPeer) waitLog(t *testing.T, from int, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s, grew := p.log.snapshot()
		if m := re.FindStringSubmatch(s[from:]); m != nil {
			return m
		}
		select {
		case <-grew:
		case <-p.done:
			// Wait returns once the daemon's output is all written.
			if m := re.FindStringSubmatch(p.log.String()[from:]); m != nil {
				return m
			}
			t.Fatalf("%s exited (%v) before its log said %q\n%s", p.name, p.exitErr, re, p.log)
		case <-deadline.C:
			t.Fatalf("%s's log does not say %q after %s\n%s", p.name, re, timeout, p.log)
		}
	}
}

// readyLine is what a daemon logs once its API listens.
var readyLine = regexp.MustCompile(`peer (\S+) ready; API on (\S+)\n`)

// newTestCluster initialises n peers (not started) sharing one secret.
func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{t: t, secret: hex.EncodeToString(seeded("secret-"+t.Name(), 32))}
	for range n {
		c.addPeer(c.secret)
	}
	t.Cleanup(func() {
		for _, p := range c.peers {
			if p.cmd != nil && p.running() {
				_ = p.cmd.Process.Kill()
				<-p.done
			}
			if t.Failed() {
				t.Logf("--- %s log ---\n%s", p.name, p.log)
			}
		}
	})
	return c
}

// addPeer initialises one more peer with the given secret.
func (c *testCluster) addPeer(secret string) *testPeer {
	t := c.t
	p := &testPeer{name: fmt.Sprintf("peer%d", len(c.peers)), repo: filepath.Join(t.TempDir(), "repo"), log: &syncBuffer{}}
	// Port 0: the first start reads back what the daemon bound (start).
	r := run(t, nil, "init", "--repo", p.repo, "--peername", p.name, "--secret", secret,
		"--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0")
	if r.code != 0 {
		t.Fatalf("init %s: %s", p.name, r.stderr)
	}
	c.peers = append(c.peers, p)
	// Short Raft timeouts: elections in well under a second.
	c.config(len(c.peers)-1, func(cfg map[string]any) {
		cons := cfg["consensus"].(map[string]any)
		cons["heartbeat_timeout"] = "300ms"
		cons["election_timeout"] = "300ms"
		cons["leader_lease_timeout"] = "150ms"
		cons["commit_timeout"] = "20ms"
		cons["wait_for_leader_timeout"] = "5s"
		cfg["pinning"] = map[string]any{"replication_min": 1, "replication_max": 2, "abandoned_add_grace": "2s", "resume_grace": "2s"}
	})
	return p
}

// config edits peer i's config.json, before the daemon starts.
func (c *testCluster) config(i int, edit func(cfg map[string]any)) {
	t := c.t
	t.Helper()
	path := filepath.Join(c.peers[i].repo, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	edit(cfg)
	if b, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (p *testPeer) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// start runs peer i's daemon and waits until it is ready: its log says
// where its API listens, and its /id where libp2p does. The first start
// listens on port 0, and the ports it got are then written into its
// config.json, so that every later start listens on the same ones: the
// others still reach a restarted peer at the multiaddr they know. No port
// is probed and handed out later, which races with whatever else binds.
func (c *testCluster) start(i int, bootstrap ...string) {
	c.t.Helper()
	p := c.peers[i]
	args := []string{"daemon", "--repo", p.repo}
	for _, b := range bootstrap {
		args = append(args, "--bootstrap", b)
	}
	p.cmd = exec.Command(shoalBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.done = make(chan struct{})
	logAt := len(p.log.String())
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { p.exitErr = p.cmd.Wait(); close(p.done) }()
	m := p.waitLog(c.t, logAt, readyLine, 15*time.Second)
	u, err := url.Parse(m[2])
	if err != nil || u.Host == "" {
		c.t.Fatalf("%s logged the API URL %q: %v", p.name, m[2], err)
	}
	hc := http.DefaultClient
	if p.apiCA != nil {
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.apiCA}}}
		defer hc.CloseIdleConnections()
	}
	// The API listens before the daemon logs that line.
	req, err := http.NewRequest(http.MethodGet, m[2]+"/id", nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if p.apiToken != "" {
		req.Header.Set("Authorization", "Bearer "+p.apiToken)
	}
	resp, err := hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s: GET /id: %v\n%s", p.name, err, p.log)
	}
	var id struct {
		ID        string   `json:"id"`
		Addresses []string `json:"addresses"`
	}
	err = json.NewDecoder(resp.Body).Decode(&id)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || id.ID != m[1] || len(id.Addresses) == 0 {
		c.t.Fatalf("%s: GET /id: %s, %+v, %v; want the ID %s it logged", p.name, resp.Status, id, err, m[1])
	}
	var port int
	if _, err := fmt.Sscanf(id.Addresses[0], "/ip4/127.0.0.1/tcp/%d/p2p/", &port); err != nil || port == 0 {
		c.t.Fatalf("%s: GET /id: address %q is not /ip4/127.0.0.1/tcp/PORT/p2p/ID", p.name, id.Addresses[0])
	}
	if p.api == "" {
		p.api, p.p2pPort = u.Host, port
		c.config(i, func(cfg map[string]any) {
			cfg["listen"] = []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)}
			cfg["api"].(map[string]any)["listen"] = u.Host
		})
	} else if p.api != u.Host || p.p2pPort != port {
		c.t.Fatalf("%s restarted with its API on %s and libp2p on port %d; its config says %s and %d", p.name, u.Host, port,
			p.api, p.p2pPort)
	}
	p.gateway = ""
	if p.gatewayListen(c.t) != "" {
		p.gateway = p.waitLog(c.t, logAt, gatewayLine, 5*time.Second)[1]
	}
}

// gatewayLine is what a daemon with a gateway logs after readyLine.
var gatewayLine = regexp.MustCompile(`IPFS gateway on http://(\S+)/ipfs/\n`)

// gatewayListen is gateway.listen in peer p's config.json.
func (p *testPeer) gatewayListen(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.repo, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Gateway struct {
			Listen string `json:"listen"`
		} `json:"gateway"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Gateway.Listen
}

// addr is peer i's full libp2p multiaddr, for --bootstrap.
func (c *testCluster) addr(i int) string {
	c.t.Helper()
	r := c.shoal(i, nil, "id", "--json")
	var id struct {
		ID        string   `json:"id"`
		Addresses []string `json:"addresses"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &id); err != nil || len(id.Addresses) == 0 {
		c.t.Fatalf("id --json of %s: %q %v", c.peers[i].name, r.stdout, err)
	}
	want := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", c.peers[i].p2pPort, id.ID)
	if id.Addresses[0] != want {
		c.t.Fatalf("id --json of %s: address %s, want %s", c.peers[i].name, id.Addresses[0], want)
	}
	return id.Addresses[0]
}

// startAll starts peer 0, then the others bootstrapping from it.
func (c *testCluster) startAll() {
	c.start(0)
	a := c.addr(0)
	for i := 1; i < len(c.peers); i++ {
		c.start(i, a)
	}
}

// shoal runs a CLI command against peer i's API and fails the test on a
// non-zero exit.
func (c *testCluster) shoal(i int, stdin io.Reader, args ...string) result {
	c.t.Helper()
	r := c.try(i, stdin, args...)
	if r.code != 0 {
		c.t.Fatalf("shoal %v on %s: exit %d: %s", args, c.peers[i].name, r.code, r.stderr)
	}
	return r
}

// try runs a CLI command against peer i's API.
func (c *testCluster) try(i int, stdin io.Reader, args ...string) result {
	c.t.Helper()
	return run(c.t, stdin, append([]string{"--api", c.peers[i].api}, args...)...)
}

// kill sends SIGKILL to peer i and waits for it to die.
func (c *testCluster) kill(i int) {
	p := c.peers[i]
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM and waits; the daemon must exit 0 in time.
func (c *testCluster) stop(i int) {
	c.t.Helper()
	p := c.peers[i]
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		c.t.Fatalf("%s did not stop within 15s of SIGTERM", p.name)
	}
	if p.exitErr != nil {
		c.t.Fatalf("%s exited with %v\n%s", p.name, p.exitErr, p.log)
	}
}

// eventually retries fn until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// peersOf returns `peers ls --json` as seen from peer i.
func (c *testCluster) peersOf(i int) []struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Role  string `json:"role"`
	Alive bool   `json:"alive"`
} {
	r := c.try(i, nil, "peers", "ls", "--json")
	var out []struct {
		ID    string `json:"id"`
		Name  string `json:"name"`
		Role  string `json:"role"`
		Alive bool   `json:"alive"`
	}
	_ = json.Unmarshal([]byte(r.stdout), &out)
	return out
}

// leader returns the index of the peer that peer i sees as leader, or -1.
func (c *testCluster) leader(i int) int {
	for _, p := range c.peersOf(i) {
		if p.Role == "leader" {
			for j, q := range c.peers {
				if q.name == p.Name {
					return j
				}
			}
		}
	}
	return -1
}

func joinLines(ss ...string) string { return strings.Join(ss, "\n") }

// pinsOf returns `pin ls --json` as seen from peer i.
func (c *testCluster) pinsOf(i int) []struct {
	CID         string   `json:"cid"`
	Name        string   `json:"name"`
	RMin        int      `json:"rmin"`
	RMax        int      `json:"rmax"`
	Allocations []string `json:"allocations"`
} {
	r := c.try(i, nil, "pin", "ls", "--json")
	var out []struct {
		CID         string   `json:"cid"`
		Name        string   `json:"name"`
		RMin        int      `json:"rmin"`
		RMax        int      `json:"rmax"`
		Allocations []string `json:"allocations"`
	}
	_ = json.Unmarshal([]byte(r.stdout), &out)
	return out
}

// hasPins checks that peer i lists exactly the named pins.
func (c *testCluster) hasPins(i int, names ...string) error {
	var got []string
	for _, p := range c.pinsOf(i) {
		got = append(got, p.Name)
	}
	slices.Sort(got)
	if strings.Join(got, ",") != strings.Join(names, ",") {
		return fmt.Errorf("%s lists pins %v, want %v", c.peers[i].name, got, names)
	}
	return nil
}

// TestClusterLifecycle runs three real daemons: pins through any peer are
// visible on all; kill -9 of the leader elects a new one without losing a
// committed pin; a full restart keeps the state; a fourth peer joins as a
// non-voter and stops once removed; a peer with the wrong secret cannot
// join.
func TestClusterLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons")
	}
	c := newTestCluster(t, 3)
	c.startAll()
	eventually(t, 10*time.Second, func() error {
		ps := c.peersOf(0)
		alive, leaders := 0, 0
		for _, p := range ps {
			if p.Alive {
				alive++
			}
			if p.Role == "leader" {
				leaders++
			}
		}
		if alive != 3 || leaders != 1 {
			return fmt.Errorf("peers ls: %+v", ps)
		}
		return nil
	})

	// A file added through peer 2 is stored on two peers and listed
	// everywhere.
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "f"), seeded("shoal-golden-1048577", 1048577))
	r := c.shoal(2, nil, "add", file, "--name", "first", "--rmin", "2", "--rmax", "2", "-Q")
	if r.stdout != rand1048577+"\n" {
		t.Fatalf("add printed %q", r.stdout)
	}
	for i := range 3 {
		eventually(t, 5*time.Second, func() error { return c.hasPins(i, "first") })
	}
	eventually(t, 10*time.Second, func() error {
		r := c.try(0, nil, "status", rand1048577, "--json")
		var st struct {
			Peers map[string]struct {
				Status string `json:"status"`
			} `json:"peers"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			return fmt.Errorf("status %q: %v", r.stdout, err)
		}
		pinned := 0
		for _, p := range st.Peers {
			if p.Status == "pinned" {
				pinned++
			}
		}
		if pinned != 2 || len(st.Peers) != 2 {
			return fmt.Errorf("status: %s", r.stdout)
		}
		return nil
	})

	// kill -9 the leader: the others elect a new one and keep the pin.
	old := c.leader(0)
	if old < 0 {
		t.Fatal("no leader")
	}
	c.kill(old)
	a, b := (old+1)%3, (old+2)%3
	start := time.Now()
	eventually(t, 10*time.Second, func() error {
		if l := c.leader(a); l != a && l != b {
			return fmt.Errorf("no new leader (sees %d)", l)
		}
		return nil
	})
	t.Logf("new leader after %s", time.Since(start).Round(10*time.Millisecond))
	if err := c.hasPins(a, "first"); err != nil {
		t.Fatal(err)
	}
	// Writes resume through either survivor.
	c.shoal(a, nil, "pin", "add", helloCID, "--name", "second", "--rmin", "1", "--rmax", "1")
	eventually(t, 5*time.Second, func() error { return c.hasPins(b, "first", "second") })

	// The killed peer comes back and catches up.
	c.start(old)
	eventually(t, 10*time.Second, func() error { return c.hasPins(old, "first", "second") })

	// Restart every peer: the same state.
	for i := range 3 {
		c.stop(i)
	}
	for i := range 3 {
		c.start(i)
	}
	for i := range 3 {
		eventually(t, 15*time.Second, func() error { return c.hasPins(i, "first", "second") })
	}

	// A fourth peer joins as a non-voter (voters = 3), then is removed and
	// stops.
	p4 := c.addPeer(c.secret)
	c.start(3, c.addr(0))
	eventually(t, 10*time.Second, func() error {
		for _, p := range c.peersOf(0) {
			if p.Name == p4.name && p.Role == "nonvoter" && p.Alive {
				return nil
			}
		}
		return fmt.Errorf("peer3 not a live non-voter: %+v", c.peersOf(0))
	})
	var id4 string
	for _, p := range c.peersOf(0) {
		if p.Name == p4.name {
			id4 = p.ID
		}
	}
	c.shoal(1, nil, "peers", "rm", id4)
	select {
	case <-p4.done:
		if p4.exitErr != nil {
			t.Fatalf("removed peer exited with %v", p4.exitErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("removed peer still running after 10s")
	}

	// A peer of this cluster cannot be pointed at another cluster.
	other := c.addPeer(c.secret)
	c.start(len(c.peers) - 1) // no bootstrap: a one-peer cluster of its own
	c.stop(2)
	cmd2 := exec.Command(shoalBin, "daemon", "--repo", c.peers[2].repo, "--bootstrap", c.addr(len(c.peers)-1))
	out2, err2 := cmd2.CombinedOutput()
	var ee2 *exec.ExitError
	if !errors.As(err2, &ee2) || ee2.ExitCode() != 1 || !strings.Contains(string(out2), "this peer's state belongs to another cluster") {
		t.Fatalf("joining another cluster: %v\n%s", err2, out2)
	}
	_ = other

	// A peer with another secret cannot join.
	bad := c.addPeer(hex.EncodeToString(seeded("other", 32)))
	cmd := exec.Command(shoalBin, "daemon", "--repo", bad.repo, "--bootstrap", c.addr(0))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "the cluster secret does not match") {
		t.Fatalf("wrong-secret daemon: %v\n%s", err, out)
	}
}

// TestShardedAddProcesses: three real daemons; a file streamed through
// stdin with --shard lands as shards on exactly rmin=rmax=2 peers each, its
// root equals `add --only-hash` of the same bytes, status shows every shard
// healthy, and unpin frees every peer's store. The 300 MiB run is
// SHOAL_E2E_BIG=1; the default keeps CI under a minute with -race.
func TestShardedAddProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons")
	}
	size, shardSize := 24<<20, "4MiB"
	if os.Getenv("SHOAL_E2E_BIG") != "" {
		size, shardSize = 300<<20, "16MiB"
	}
	data := seeded("sharded-e2e", size)
	c := newTestCluster(t, 3)
	c.startAll()
	want := run(t, bytes.NewReader(data), "add", "-n", "-Q", "-")
	r := c.shoal(1, bytes.NewReader(data), "add", "--shard", "--shard-size", shardSize, "--rmin", "2", "--rmax", "2",
		"--name", "big", "-Q", "-")
	if r.stdout != want.stdout {
		t.Fatalf("sharded add printed %q, --only-hash %q", r.stdout, want.stdout)
	}
	root := strings.TrimSpace(r.stdout)
	st := c.shoal(2, nil, "status", root, "--json")
	var status struct {
		Status  string `json:"status"`
		Summary string `json:"summary"`
		Size    uint64 `json:"size"`
		Shards  []struct {
			Index       int               `json:"index"`
			CID         string            `json:"cid"`
			Size        uint64            `json:"size"`
			Allocations []string          `json:"allocations"`
			Peers       map[string]string `json:"peers"`
		} `json:"shards"`
	}
	if err := json.Unmarshal([]byte(st.stdout), &status); err != nil {
		t.Fatalf("status --json: %v\n%s", err, st.stdout)
	}
	n := len(status.Shards)
	if status.Status != "pinned" || status.Size != uint64(size) || n < size/(4<<20) ||
		status.Summary != fmt.Sprintf("%d shards, %d healthy, rmin 2 met on all", n, n) {
		t.Fatalf("status: %s %s size %d, %d shards", status.Status, status.Summary, status.Size, n)
	}
	for _, sh := range status.Shards {
		if len(sh.Allocations) != 2 || len(sh.Peers) != 2 {
			t.Fatalf("shard %d allocated to %v", sh.Index, sh.Allocations)
		}
		for p, s := range sh.Peers {
			if s != "pinned" {
				t.Fatalf("shard %d on %s: %s", sh.Index, p, s)
			}
		}
	}
	// pin ls shows the root, not its shards.
	if pins := c.pinsOf(0); len(pins) != 1 || pins[0].CID != root {
		t.Fatalf("pin ls: %+v", pins)
	}
	c.shoal(0, nil, "pin", "rm", root)
	eventually(t, 10*time.Second, func() error {
		for _, p := range c.peers {
			var used int64
			filepath.Walk(filepath.Join(p.repo, "store", "shards"), func(_ string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode().IsRegular() {
					used += fi.Size()
				}
				return nil
			})
			if used != 0 {
				return fmt.Errorf("%s still stores %d bytes", p.name, used)
			}
		}
		return nil
	})
}

// storedBytes is what peer i's store holds in shard files.
func (c *testCluster) storedBytes(i int) int64 {
	var used int64
	filepath.Walk(filepath.Join(c.peers[i].repo, "store", "shards"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			used += fi.Size()
		}
		return nil
	})
	return used
}

// TestAbandonedAdd: kill -9 the peer that ingests a sharded add midway.
// The add shows as in progress while it runs; then the leader aborts it
// once its owner has been unreachable for the grace (2 s here), every peer
// drops its shards, and the owner, restarted, drops its own.
func TestAbandonedAdd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons")
	}
	c := newTestCluster(t, 3)
	c.startAll()
	owner := 1
	if c.leader(0) == owner {
		owner = 2 // the leader must survive to reap
	}
	add := exec.Command(shoalBin, "--api", c.peers[owner].api, "add", "--shard", "--shard-size", "1MiB",
		"--rmin", "2", "--rmax", "2", "-Q", "-")
	stdin, err := add.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var addOut bytes.Buffer
	add.Stdout, add.Stderr = &addOut, &addOut
	if err := add.Start(); err != nil {
		t.Fatal(err)
	}
	defer add.Process.Kill()
	if _, err := stdin.Write(seeded("abandoned", 6<<20)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		r := c.try(0, nil, "status", "--json")
		var sts []struct {
			AddID  string `json:"add_id"`
			Status string `json:"status"`
			Shards []any  `json:"shards"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil {
			return err
		}
		if len(sts) != 1 || sts[0].AddID == "" || sts[0].Status != "in_progress" || len(sts[0].Shards) < 2 {
			return fmt.Errorf("status: %s", r.stdout)
		}
		return nil
	})
	c.kill(owner)
	stdin.Close()
	for i := range c.peers {
		if i == owner {
			continue
		}
		eventually(t, 20*time.Second, func() error {
			if n := c.storedBytes(i); n != 0 {
				return fmt.Errorf("%s still stores %d bytes of the abandoned add", c.peers[i].name, n)
			}
			return nil
		})
	}
	if r := c.try(0, nil, "status", "--json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("status after the abort: %s", r.stdout)
	}
	c.start(owner)
	eventually(t, 20*time.Second, func() error {
		if n := c.storedBytes(owner); n != 0 {
			return fmt.Errorf("restarted owner still stores %d bytes", n)
		}
		return nil
	})
}
