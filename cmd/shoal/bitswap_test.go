package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/dag"
	"github.com/shoal-project/shoal/ingest"
)

// kuboDaemon runs Kubo's daemon on an empty repo, on loopback only, with
// no bootstrap peers and, unless routing names a Routing.Type, no content
// routing: it then finds blocks only among the peers it is connected to.
// A DHT on loopback needs Routing.LoopbackAddressesOnLanDHT, which is set
// with it. It is stopped when the test ends.
func kuboDaemon(t *testing.T, bin string, routing ...string) (repo string) {
	t.Helper()
	repo = filepath.Join(t.TempDir(), "ipfs")
	ipfs(t, bin, repo, "init", "--profile", "test")
	if len(routing) == 0 {
		ipfs(t, bin, repo, "config", "Routing.Type", "none")
	} else {
		ipfs(t, bin, repo, "config", "Routing.Type", routing[0])
		ipfs(t, bin, repo, "config", "--json", "Routing.LoopbackAddressesOnLanDHT", "true")
	}
	cmd := exec.Command(bin, "daemon")
	cmd.Env = append(os.Environ(), "IPFS_PATH="+repo)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Daemon is ready") {
				ready <- nil
				_, _ = io.Copy(io.Discard, out)
				return
			}
		}
		ready <- fmt.Errorf("the daemon exited before it was ready: %v", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("ipfs daemon: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("ipfs daemon not ready after 60 s\n%s", stderr.String())
	}
	return repo
}

// ipfsAddrs are the IPFS-facing host's addresses `shoal id` prints on
// lines beginning "ipfs /".
func (c *testCluster) ipfsAddrs(i int) []string {
	c.t.Helper()
	var out []string
	for _, l := range strings.Split(c.shoal(i, nil, "id").stdout, "\n") {
		if a, ok := strings.CutPrefix(l, "ipfs /"); ok {
			out = append(out, "/"+a)
		}
	}
	if len(out) == 0 {
		c.t.Fatalf("shoal id of %s shows no IPFS host", c.peers[i].name)
	}
	return out
}

// refStats counts the blocks of data's DAG and their bytes, as ipfs dag
// stat counts them.
func refStats(t *testing.T, data []byte) (blocks int, size uint64) {
	t.Helper()
	p, err := dag.Options{}.Params()
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ingest.Config{Params: p})
	if err != nil {
		t.Fatal(err)
	}
	_, err = in.File(context.Background(), bytes.NewReader(data), blockSink(func(b dag.Block) error {
		blocks++
		size += uint64(len(b.Data))
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return blocks, size
}

type blockSink func(dag.Block) error

func (f blockSink) Put(_ context.Context, b dag.Block) error { return f(b) }

// TestBitswapKubo: Kubo v0.43.1, with an empty repo and no routing,
// connects to one shoal peer's IPFS host (`shoal init --ipfs-listen`) and
// reads over bitswap a 256 MiB sharded file whose shards lie on all three
// peers: identical bytes, and `ipfs dag stat` counts the DAG's blocks and
// bytes. A CID the cluster does not pin is not served.
func TestBitswapKubo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons and Kubo")
	}
	bin := kubo(t)

	checkInitFlag(t, "--ipfs-listen", "/ip4/0.0.0.0/tcp/4001", "ipfs",
		"map[bootstrap:[] listen:[/ip4/0.0.0.0/tcp/4001] max_connections:512 provide:false reprovide_interval:12h0m0s]",
		"0.0.0.0:4001", "shoal: config: ipfs listen address \"0.0.0.0:4001\" is not a multiaddr: failed to parse multiaddr \"0.0.0.0:4001\": must begin with /\n")

	c := newTestCluster(t, 3)
	for i := range c.peers {
		c.config(i, func(cfg map[string]any) {
			cfg["ipfs"] = map[string]any{"listen": []string{"/ip4/127.0.0.1/tcp/0"}, "max_connections": 64}
		})
	}
	c.startAll()
	data := seeded("bitswap-kubo", 256<<20+12345)
	root := strings.TrimSpace(c.shoal(1, bytes.NewReader(data), "add", "--shard", "--shard-size", "32MiB",
		"--rmin", "1", "--rmax", "1", "-Q", "-").stdout)
	holders := map[string]bool{}
	for _, sh := range c.shardedStatus(0, root).Shards {
		for _, a := range sh.Allocations {
			holders[a] = true
		}
	}
	if len(holders) != 3 {
		t.Fatalf("the shards lie on %d peers; want all three", len(holders))
	}

	kr := kuboDaemon(t, bin)
	ipfs(t, bin, kr, "swarm", "connect", c.ipfsAddrs(0)[0])
	start := time.Now()
	got := ipfs(t, bin, kr, "cat", root)
	took := time.Since(start)
	if got != string(data) {
		t.Fatalf("ipfs cat %s: %d bytes, want the %d added", root, len(got), len(data))
	}
	t.Logf("ipfs cat of %d MiB over bitswap: %v (%.0f MiB/s)", len(data)>>20, took.Round(time.Millisecond),
		float64(len(data))/(1<<20)/took.Seconds())
	var stat struct {
		TotalSize    uint64
		UniqueBlocks int
	}
	if err := json.Unmarshal([]byte(ipfs(t, bin, kr, "dag", "stat", "--progress=false", "--enc=json", root)), &stat); err != nil {
		t.Fatal(err)
	}
	wantBlocks, wantSize := refStats(t, data)
	if stat.UniqueBlocks != wantBlocks || stat.TotalSize != wantSize {
		t.Fatalf("ipfs dag stat: %d blocks, %d bytes; the DAG has %d blocks, %d bytes", stat.UniqueBlocks, stat.TotalSize, wantBlocks, wantSize)
	}

	// A CID nothing pins: Kubo asks, shoal answers DONT_HAVE, and Kubo,
	// with nowhere else to look, gives up when its timeout ends.
	unpinned := "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
	cmd := exec.Command(bin, "block", "get", "--timeout", "3s", unpinned)
	cmd.Env = append(os.Environ(), "IPFS_PATH="+kr)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "context deadline exceeded") {
		t.Fatalf("ipfs block get of an unpinned CID: %v: %s", err, out)
	}
}

// kuboAddr is a Kubo daemon's loopback TCP address, with /p2p/ID.
func kuboAddr(t *testing.T, bin, repo string) string {
	t.Helper()
	for _, a := range strings.Fields(ipfs(t, bin, repo, "id", "-f", "<addrs>")) {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			return a
		}
	}
	t.Fatalf("Kubo in %s lists no /ip4/127.0.0.1/tcp address", repo)
	return ""
}

// TestProvideKubo: with ipfs.provide on and a Kubo DHT server as its
// bootstrap peer, a shoal peer announces its pinned roots to the DHT:
// that Kubo finds shoal's IPFS host as the provider, and a second Kubo,
// connected only to the first, finds shoal through the DHT and reads the
// file from it.
func TestProvideKubo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons and Kubo")
	}
	bin := kubo(t)
	dhtServer := kuboDaemon(t, bin, "dhtserver")
	boot := kuboAddr(t, bin, dhtServer)

	c := newTestCluster(t, 1)
	c.config(0, func(cfg map[string]any) {
		cfg["ipfs"] = map[string]any{"listen": []string{"/ip4/127.0.0.1/tcp/0"}, "max_connections": 64,
			"provide": true, "bootstrap": []string{boot}, "reprovide_interval": "12h"}
	})
	c.startAll()
	ipfsID := ""
	for _, l := range strings.Split(c.shoal(0, nil, "id").stdout, "\n") {
		if id, ok := strings.CutPrefix(l, "ipfs "); ok && !strings.HasPrefix(id, "/") {
			ipfsID = id
		}
	}
	if ipfsID == "" {
		t.Fatal("shoal id shows no IPFS host")
	}
	data := seeded("provide-kubo", 3<<20+99)
	root := strings.TrimSpace(c.shoal(0, bytes.NewReader(data), "add", "-Q", "-").stdout)

	eventually(t, 60*time.Second, func() error {
		cmd := exec.Command(bin, "routing", "findprovs", "--num-providers=1", "--timeout", "5s", root)
		cmd.Env = append(os.Environ(), "IPFS_PATH="+dhtServer)
		out, _ := cmd.Output()
		if got := strings.TrimSpace(string(out)); got != ipfsID {
			return fmt.Errorf("ipfs routing findprovs %s printed %q, want shoal's IPFS host %s", root, got, ipfsID)
		}
		return nil
	})

	reader := kuboDaemon(t, bin, "dhtclient")
	ipfs(t, bin, reader, "swarm", "connect", boot)
	cmd := exec.Command(bin, "cat", "--timeout", "60s", root)
	cmd.Env = append(os.Environ(), "IPFS_PATH="+reader)
	out, err := cmd.Output()
	if err != nil || string(out) != string(data) {
		t.Fatalf("ipfs cat %s through the DHT: %v, %d bytes, want the %d added", root, err, len(out), len(data))
	}
}

// checkInitFlag checks that `shoal init FLAG VALUE` writes section of
// config.json as want (fmt.Sprint of its map), and that FLAG BAD is
// refused with exit 1 and badWant on stderr.
func checkInitFlag(t *testing.T, flag, value, section, want, bad, badWant string) {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "repo")
	if r := run(t, nil, "init", "--repo", repo, "--secret", strings.Repeat("ab", 32), flag, value); r.code != 0 {
		t.Fatalf("init %s: exit %d: %s", flag, r.code, r.stderr)
	}
	b, err := os.ReadFile(filepath.Join(repo, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var written map[string]any
	if err := json.Unmarshal(b, &written); err != nil || fmt.Sprint(written[section]) != want {
		t.Fatalf("init %s wrote %s %v (%v), want %s", flag, section, written[section], err, want)
	}
	r := run(t, nil, "init", "--repo", filepath.Join(t.TempDir(), "bad"), flag, bad)
	if r.code != 1 || r.stderr != badWant {
		t.Fatalf("init %s %s: exit %d, %q; want 1, %q", flag, bad, r.code, r.stderr, badWant)
	}
}
