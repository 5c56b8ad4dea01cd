package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-project/shoal/api/client"
)

// ClusterConfig describes a cluster of `shoal daemon` processes on
// loopback.
type ClusterConfig struct {
	// Shoal is the shoal binary.
	Shoal string
	// Dir holds one repository per peer (DIR/peerN) and its daemon's log
	// (DIR/peerN.log); it must exist.
	Dir string
	// Peers is the number of daemons.
	Peers int
	// Consensus overrides fields of config.json's "consensus" object (keys
	// as in config.json: "heartbeat_timeout": "300ms"); nil keeps shoal's
	// defaults.
	Consensus map[string]any
	// Health overrides fields of config.json's "health" object the same
	// way (e.g. "repair_grace": "1s").
	Health map[string]any
	// IPFS and Gateway override fields of the "ipfs" and "gateway"
	// objects the same way (e.g. "listen": []string{"/ip4/127.0.0.1/tcp/0"}).
	IPFS, Gateway map[string]any
	// Pinning and KuboRPC override fields of "pinning" and "kubo_rpc"
	// the same way (e.g. "listen": "127.0.0.1:0").
	Pinning, KuboRPC map[string]any
	// Env, if not nil, gives the extra environment of peer i's daemon.
	Env func(i int) []string
	// StartTimeout bounds the wait for each daemon's API and for the
	// cluster to list every peer with a leader.
	StartTimeout time.Duration
}

// Cluster is a running set of daemons, started by StartCluster; Close
// stops them.
type Cluster struct {
	Peers []*Daemon
}

// Daemon is one `shoal daemon` process of a Cluster.
type Daemon struct {
	Name string
	Repo string
	// API (HOST:PORT of its REST API), Addr (its full libp2p multiaddr,
	// ending in /p2p/ID), ID (its peer ID) and Client are set by its
	// first Start.
	API    string
	Addr   string
	ID     string
	Client *client.Client
	Log    string // path of its stdout and stderr
	// Env, if set, is added to the environment of the next Start (e.g.
	// SHOAL_CPUPROFILE=FILE).
	Env []string

	shoal   string
	timeout time.Duration
	cmd     *exec.Cmd
	done    chan struct{}
	err     error // the exit status, once done is closed
}

// StartCluster initialises cfg.Peers repositories sharing a new secret,
// starts the first daemon (which forms the cluster), then the others with
// --bootstrap pointing at it, and returns once every daemon lists all the
// peers and knows a leader. On error it stops what it started.
func StartCluster(ctx context.Context, cfg ClusterConfig) (_ *Cluster, err error) {
	if cfg.Peers < 1 {
		return nil, errors.New("start cluster: need at least one peer")
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = time.Minute
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	c := &Cluster{}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	for i := range cfg.Peers {
		d, err := initDaemon(ctx, cfg, i, hex.EncodeToString(secret))
		if err != nil {
			return nil, err
		}
		c.Peers = append(c.Peers, d)
	}
	for i, d := range c.Peers {
		var args []string
		if i > 0 {
			args = []string{"--bootstrap", c.Peers[0].Addr}
		}
		if err := d.Start(ctx, args...); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(cfg.StartTimeout)
	for _, d := range c.Peers {
		for {
			peers, err := d.Client.Peers(ctx)
			ready := err == nil && len(peers) == cfg.Peers
			leader := false
			for _, p := range peers {
				ready = ready && p.Alive
				leader = leader || p.Role == "leader"
			}
			if ready && leader {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("start cluster: %s does not list %d live peers and a leader after %s (last answer %v, %v); see %s",
					d.Name, cfg.Peers, cfg.StartTimeout, peers, err, d.Log)
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

func initDaemon(ctx context.Context, cfg ClusterConfig, i int, secret string) (*Daemon, error) {
	d := &Daemon{Name: fmt.Sprintf("peer%d", i), Repo: filepath.Join(cfg.Dir, fmt.Sprintf("peer%d", i)),
		Log: filepath.Join(cfg.Dir, fmt.Sprintf("peer%d.log", i)), shoal: cfg.Shoal, timeout: cfg.StartTimeout}
	if cfg.Env != nil {
		d.Env = cfg.Env(i)
	}
	// Port 0: the first Start reads back the ports the daemon bound and
	// keeps them for later starts. A port probed here and bound later
	// could be taken by anything else in between.
	out, err := exec.CommandContext(ctx, cfg.Shoal, "init", "--repo", d.Repo, "--peername", d.Name, "--secret", secret,
		"--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("shoal init %s: %w: %s", d.Repo, err, strings.TrimSpace(string(out)))
	}
	for section, fields := range map[string]map[string]any{"consensus": cfg.Consensus, "health": cfg.Health,
		"ipfs": cfg.IPFS, "gateway": cfg.Gateway, "pinning": cfg.Pinning, "kubo_rpc": cfg.KuboRPC} {
		if len(fields) == 0 {
			continue
		}
		if err := editConfig(filepath.Join(d.Repo, "config.json"), section, fields); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// editConfig overrides fields of one object of a config.json (section:
// "consensus", "health").
func editConfig(path, section string, fields map[string]any) error {
	return rewriteConfig(path, func(cfg map[string]any) error {
		obj, ok := cfg[section].(map[string]any)
		if !ok {
			return fmt.Errorf("%s has no %s object", path, section)
		}
		for k, v := range fields {
			if _, ok := obj[k]; !ok {
				return fmt.Errorf("%s: %s has no field %q", path, section, k)
			}
			obj[k] = v
		}
		return nil
	})
}

// rewriteConfig applies edit to the config.json at path.
func rewriteConfig(path string, edit func(cfg map[string]any) error) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := edit(cfg); err != nil {
		return err
	}
	if b, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// readyLine is what a daemon logs once its API listens.
var readyLine = regexp.MustCompile(`peer (\S+) ready; API on (\S+)\n`)

// readyAPI returns HOST:PORT from the first readyLine in the log at path
// after byte from, or "" if there is none yet.
func readyAPI(path string, from int64) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	m := readyLine.FindSubmatch(b[min(from, int64(len(b))):])
	if m == nil {
		return "", nil
	}
	u, err := url.Parse(string(m[2]))
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("the daemon logged the API URL %q: %v", m[2], err)
	}
	return u.Host, nil
}

// keepPorts writes the ports of the daemon's first start into its
// config.json, so that every later start listens on the same ones: the
// other peers still reach a restarted daemon at the multiaddr they know.
func (d *Daemon) keepPorts() error {
	var port int
	if _, err := fmt.Sscanf(d.Addr, "/ip4/127.0.0.1/tcp/%d/p2p/", &port); err != nil || port == 0 {
		return fmt.Errorf("%s: address %q is not /ip4/127.0.0.1/tcp/PORT/p2p/ID", d.Name, d.Addr)
	}
	path := filepath.Join(d.Repo, "config.json")
	return rewriteConfig(path, func(cfg map[string]any) error {
		api, ok := cfg["api"].(map[string]any)
		if !ok {
			return fmt.Errorf("%s has no api object", path)
		}
		api["listen"] = d.API
		cfg["listen"] = []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)}
		return nil
	})
}

// Start runs the daemon, with args after `shoal daemon --repo REPO`, and
// waits until its API answers with its ID. The first start learns where
// the daemon listens from its log and keeps those ports. A stopped
// daemon can be started again: it resumes its cluster.
func (d *Daemon) Start(ctx context.Context, args ...string) error {
	log, err := os.OpenFile(d.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close() // the child has its own copy
	st, err := log.Stat()
	if err != nil {
		return err
	}
	logAt := st.Size()
	// Not CommandContext: Close stops the daemon gracefully.
	d.cmd = exec.Command(d.shoal, append([]string{"daemon", "--repo", d.Repo}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if len(d.Env) > 0 {
		d.cmd.Env = append(os.Environ(), d.Env...)
	}
	d.done = make(chan struct{})
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.Name, err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	deadline := time.Now().Add(d.timeout)
	for {
		if d.Client == nil {
			api, err := readyAPI(d.Log, logAt)
			if err != nil {
				return fmt.Errorf("start %s: %w", d.Name, err)
			}
			if api != "" {
				if d.Client, err = client.New(api); err != nil {
					return fmt.Errorf("start %s: %w", d.Name, err)
				}
				d.API = api
			}
		}
		if d.Client != nil {
			id, err := d.Client.ID(ctx)
			if err == nil && len(id.Addresses) > 0 {
				first := d.Addr == ""
				d.ID, d.Addr = id.ID, id.Addresses[0]
				if first {
					return d.keepPorts()
				}
				return nil
			}
		}
		select {
		case <-d.done:
			return fmt.Errorf("%s exited at start: %v; see %s", d.Name, d.err, d.Log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			if d.API == "" {
				return fmt.Errorf("%s: no API after %s; see %s", d.Name, d.timeout, d.Log)
			}
			return fmt.Errorf("%s: API %s not up after %s; see %s", d.Name, d.API, d.timeout, d.Log)
		}
	}
}

// Stop sends SIGTERM and waits up to 20 s for the daemon to exit. One
// that has not exited by then gets SIGQUIT, so that the Go runtime writes
// every goroutine's stack into its log, and SIGKILL 2 s later.
func (d *Daemon) Stop() error {
	if d.cmd == nil || d.cmd.Process == nil {
		return nil
	}
	select {
	case <-d.done:
		return nil
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-d.done:
		case <-time.After(2 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		return fmt.Errorf("%s did not stop within 20s of SIGTERM; killed (goroutine dump in %s)", d.Name, d.Log)
	}
}

// Close stops every daemon.
func (c *Cluster) Close() error {
	var errs []error
	for _, d := range c.Peers {
		errs = append(errs, d.Stop())
	}
	return errors.Join(errs...)
}

// Leader returns the daemon the first peer names as leader, or nil.
func (c *Cluster) Leader(ctx context.Context) *Daemon {
	peers, err := c.Peers[0].Client.Peers(ctx)
	if err != nil {
		return nil
	}
	for _, p := range peers {
		if p.Role == "leader" {
			for _, d := range c.Peers {
				if d.ID == p.ID {
					return d
				}
			}
		}
	}
	return nil
}

// Usage is a process's CPU time and memory as /proc says.
type Usage struct {
	CPU    time.Duration // user + system
	RSS    int64         // resident set now, bytes
	MaxRSS int64         // peak resident set (VmHWM), bytes
}

// Usage reads the daemon's CPU time and memory from /proc.
func (d *Daemon) Usage() (Usage, error) {
	if d.cmd == nil || d.cmd.Process == nil {
		return Usage{}, errors.New("not started")
	}
	return ProcUsage(d.cmd.Process.Pid)
}

// Running says whether the daemon's process has been started and has not
// exited.
func (d *Daemon) Running() bool {
	if d.cmd == nil || d.done == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// Pid is the daemon's process ID.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// ProcUsage reads pid's CPU time and memory from /proc.
func ProcUsage(pid int) (Usage, error) {
	var u Usage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// Fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14, stime 15.
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return u, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	u.CPU = time.Duration(ut+st) * (time.Second / 100) // USER_HZ
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var kb int64
		if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			u.RSS = kb << 10
		case "VmHWM":
			u.MaxRSS = kb << 10
		}
	}
	return u, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest value with at least p% of the values
// at or below it. 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}
