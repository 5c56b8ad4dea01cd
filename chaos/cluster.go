package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-project/shoal/api/client"
)

// node is one `shoal daemon` process in its namespace.
type node struct {
	i      int
	name   string
	repo   string
	api    string // HOST:PORT
	logf   string
	client *client.Client
	// tmpfs: the store is a small tmpfs of this size (the disk-full
	// fault); 0: the store is on the suite's disk.
	tmpfs int64

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	paused  bool
	started int // starts so far
}

// cluster is the nodes and their network.
type cluster struct {
	shoal string
	dir   string
	net   *network
	nodes []*node
	logf  func(format string, args ...any)
}

// Settings short enough that faults resolve within seconds: elections in
// about a second, repairs after 3 s, snapshots (and so snapshot installs
// on restarted peers) every few hundred entries.
var chaosConfig = map[string]map[string]any{
	"consensus": {
		"heartbeat_timeout": "500ms", "election_timeout": "500ms", "leader_lease_timeout": "250ms",
		"commit_timeout": "20ms", "wait_for_leader_timeout": "10s", "read_timeout": "3s",
		"voters": 5, "snapshot_interval": "5s", "snapshot_threshold": 200, "trailing_logs": 100,
	},
	"health": {
		"heartbeat_interval": "300ms", "heartbeat_ttl": "2s", "repair_grace": "3s",
	},
	"pinning": {
		"replication_min": 2, "replication_max": 3, "abandoned_add_grace": "3s", "resume_grace": "3s",
	},
}

// electionTimeout is chaosConfig's, for the pause fault.
const electionTimeout = 500 * time.Millisecond

func newCluster(ctx context.Context, shoal, dir string, nw *network, tmpfsNode int, tmpfsSize int64, logf func(string, ...any)) (_ *cluster, err error) {
	c := &cluster{shoal: shoal, dir: dir, net: nw, logf: logf}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	secret := make([]byte, 32)
	for i := range secret {
		secret[i] = byte(i*7 + 3) // the secret does not matter: the namespaces are the suite's own
	}
	for i := range nw.n {
		n := &node{i: i, name: fmt.Sprintf("peer%d", i), repo: filepath.Join(dir, fmt.Sprintf("peer%d", i)),
			api: nw.addr(i) + ":9094", logf: filepath.Join(dir, fmt.Sprintf("peer%d.log", i))}
		if i == tmpfsNode {
			n.tmpfs = tmpfsSize
		}
		out, err := exec.CommandContext(ctx, shoal, "init", "--repo", n.repo, "--peername", n.name,
			"--secret", fmt.Sprintf("%x", secret), "--listen", "/ip4/"+nw.addr(i)+"/tcp/4001").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("init %s: %v: %s", n.name, err, out)
		}
		if err := editConfig(filepath.Join(n.repo, "config.json"), n.api); err != nil {
			return nil, err
		}
		if n.tmpfs > 0 {
			store := filepath.Join(n.repo, "store")
			if err := os.MkdirAll(store, 0o700); err != nil {
				return nil, err
			}
			if err := syscall.Mount("tmpfs", store, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", n.tmpfs)); err != nil {
				return nil, fmt.Errorf("mount a %d-byte tmpfs on %s: %w", n.tmpfs, store, err)
			}
		}
		if n.client, err = client.New(n.api, client.WithHTTPClient(httpClient())); err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := c.start(ctx, n); err != nil {
			return nil, err
		}
	}
	return c, c.waitReady(ctx, time.Minute)
}

// editConfig sets chaosConfig and an API on the node's address, reached
// from the root namespace (no auth: only the suite reaches it).
func editConfig(path, apiAddr string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return err
	}
	for section, fields := range chaosConfig {
		m := cfg[section].(map[string]any)
		for k, v := range fields {
			m[k] = v
		}
	}
	cfg["capacity"], cfg["reserve"] = "1GiB", "0B"
	a := cfg["api"].(map[string]any)
	a["listen"], a["allow_unauthenticated_remote"] = apiAddr, true
	if b, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// start runs node n's daemon (the first peer forms the cluster, the others
// join it on their first start) and waits until its API answers.
func (c *cluster) start(ctx context.Context, n *node) error {
	n.mu.Lock()
	args := []string{"daemon", "--repo", n.repo}
	if n.started == 0 && n.i > 0 {
		id, err := c.nodes[0].client.ID(ctx)
		if err != nil || len(id.Addresses) == 0 {
			n.mu.Unlock()
			return fmt.Errorf("id of %s: %v", c.nodes[0].name, err)
		}
		args = append(args, "--bootstrap", id.Addresses[0])
	}
	log, err := os.OpenFile(n.logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.mu.Unlock()
		return err
	}
	fmt.Fprintf(log, "--- %s: start %d\n", time.Now().Format(time.RFC3339Nano), n.started+1)
	cmd := c.net.command(n.i, c.shoal, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		n.mu.Unlock()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); log.Close(); close(done) }()
	n.cmd, n.done, n.paused = cmd, done, false
	n.started++
	n.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := n.client.ID(cctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited at start; see %s", n.name, n.logf)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: API not up after 30s; see %s", n.name, n.logf)
		}
	}
}

func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to go.
func (n *node) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// signal sends sig (SIGSTOP, SIGCONT).
func (n *node) signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Signal(sig)
		n.paused = sig == syscall.SIGSTOP
	}
}

// leader is the index of the node the live nodes agree leads, or -1.
func (c *cluster) leader(ctx context.Context) int {
	for _, n := range c.nodes {
		if !n.running() || n.paused {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		peers, err := n.client.Peers(cctx)
		cancel()
		if err != nil {
			continue
		}
		for _, p := range peers {
			if p.Role == "leader" {
				for _, m := range c.nodes {
					if m.name == p.Name {
						return m.i
					}
				}
			}
		}
	}
	return -1
}

// waitReady waits until every node lists every node alive and a leader.
func (c *cluster) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for _, n := range c.nodes {
		for {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			peers, err := n.client.Peers(cctx)
			cancel()
			alive, leader := 0, false
			for _, p := range peers {
				if p.Alive {
					alive++
				}
				leader = leader || p.Role == "leader"
			}
			if err == nil && alive == len(c.nodes) && leader {
				break
			}
			last = fmt.Sprintf("%s lists %d live peers of %d, leader %v, %v", n.name, alive, len(c.nodes), leader, err)
			if time.Now().After(deadline) {
				return fmt.Errorf("cluster not ready after %s: %s", timeout, last)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// close kills every daemon and unmounts the tmpfs.
func (c *cluster) close() {
	for _, n := range c.nodes {
		if n.running() {
			n.signal(syscall.SIGCONT)
			n.kill()
		}
		if n.tmpfs > 0 {
			_ = syscall.Unmount(filepath.Join(n.repo, "store"), syscall.MNT_DETACH)
		}
	}
}

// storeKeys lists the shard files in node n's store.
func (n *node) storeKeys() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(n.repo, "store", "shards"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var keys []string
	for _, e := range ents {
		if k, ok := strings.CutSuffix(e.Name(), ".car"); ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys, err
}

// peerIDs maps peer IDs to node indexes.
func (c *cluster) peerIDs(ctx context.Context) (map[string]int, error) {
	for _, n := range c.nodes {
		peers, err := n.client.Peers(ctx)
		if err != nil {
			continue
		}
		ids := map[string]int{}
		for _, p := range peers {
			for _, m := range c.nodes {
				if m.name == p.Name {
					ids[p.ID] = m.i
				}
			}
		}
		if len(ids) == len(c.nodes) {
			return ids, nil
		}
	}
	return nil, errors.New("no node lists every peer")
}
