package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-project/shoal/bench"
)

// kubo returns the path of Kubo v0.43.1's ipfs binary (bench.Kubo:
// $SHOAL_TEST_IPFS, else what ../shared/tools/build-kubo builds, minutes
// the first time, cached after). It skips the test when there is none.
func kubo(t *testing.T) string {
	t.Helper()
	bin, err := bench.Kubo(context.Background(), "")
	if err != nil {
		t.Skipf("Kubo is not available: %v", err)
	}
	return bin
}

// ipfs runs Kubo with repo as its IPFS_PATH and fails the test on a
// non-zero exit.
func ipfs(t *testing.T, bin, repo string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "IPFS_PATH="+repo)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("ipfs %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// TestGatewayKubo: daemons initialised with --gateway serve a sharded file
// whose shards lie on different peers as a CAR that Kubo imports, and
// then reads offline byte for byte; a range CAR holds only the blocks
// that cover the range, from which Kubo reads the range; the raw root
// block is the one Kubo verified; a CID the cluster does not pin is 404.
func TestGatewayKubo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real daemons and Kubo")
	}
	bin := kubo(t)

	checkInitFlag(t, "--gateway", "127.0.0.1:8081", "gateway", "map[deserialized:false listen:127.0.0.1:8081]",
		"127.0.0.1", "shoal: config: gateway listen \"127.0.0.1\": address 127.0.0.1: missing port in address\n")

	c := newTestCluster(t, 3)
	for i := range c.peers {
		c.config(i, func(cfg map[string]any) {
			cfg["gateway"] = map[string]any{"listen": "127.0.0.1:0", "deserialized": false}
		})
	}
	c.startAll() // reads back where each gateway listens, from its log
	gateways := make([]string, len(c.peers))
	for i, p := range c.peers {
		if gateways[i] = p.gateway; !strings.HasPrefix(p.gateway, "127.0.0.1:") || strings.HasSuffix(p.gateway, ":0") {
			t.Fatalf("%s's log says its gateway listens on %q, want 127.0.0.1 and the port it got:\n%s", p.name, p.gateway, p.log)
		}
	}

	data := seeded("gateway-kubo", 5<<20+777)
	root := strings.TrimSpace(c.shoal(1, bytes.NewReader(data), "add", "--shard", "--shard-size", "1MiB",
		"--rmin", "1", "--rmax", "1", "-Q", "-").stdout)
	if want := strings.TrimSpace(run(t, bytes.NewReader(data), "add", "-n", "-Q", "-").stdout); root != want {
		t.Fatalf("sharded add printed %s, --only-hash %s", root, want)
	}
	holders := map[string]bool{}
	for _, sh := range c.shardedStatus(0, root).Shards {
		holders[strings.Join(sh.Allocations, ",")] = true
	}
	if len(holders) < 2 {
		t.Fatalf("the shards lie on %d peers; want them spread", len(holders))
	}

	// Peer 0 holds at most some of the shards: the rest come from the
	// others. A follower applies the pin a heartbeat after the add.
	var carBytes []byte
	eventually(t, 5*time.Second, func() error {
		resp, err := http.Get("http://" + gateways[0] + "/ipfs/" + root + "?format=car")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/vnd.ipld.car; version=1; order=dfs; dups=n" {
			return fmt.Errorf("GET ?format=car: %d %q: %.200s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		carBytes = body
		return nil
	})
	checkCAR(t, carBytes, root, data)

	unpinned := "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
	resp, err := http.Get("http://" + gateways[2] + "/ipfs/" + unpinned + "?format=raw")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "failed to resolve /ipfs/" + unpinned + ": not pinned in this cluster\n"; resp.StatusCode != http.StatusNotFound || string(body) != want {
		t.Fatalf("unpinned CID: %d %q, want 404 %q", resp.StatusCode, body, want)
	}

	// Kubo, offline, with an empty repo: a range CAR gives it exactly the
	// blocks that cover the range (the root and the leaves of 256 KiB
	// that meet it, under a balanced DAG of one level), and it reads that
	// range offline; the raw root block is the one it imported.
	ipfsRepo := filepath.Join(t.TempDir(), "ipfs")
	ipfs(t, bin, ipfsRepo, "init", "--profile", "test")
	from, to := 1<<20+4321, 1<<20+4321+600_000
	rangeCAR := get200(t, fmt.Sprintf("http://%s/ipfs/%s?format=car&dag-scope=entity&entity-bytes=%d:%d", gateways[2], root, from, to))
	rangePath := filepath.Join(t.TempDir(), "range.car")
	if err := os.WriteFile(rangePath, rangeCAR, 0o644); err != nil {
		t.Fatal(err)
	}
	before := len(strings.Fields(ipfs(t, bin, ipfsRepo, "refs", "local"))) // init's empty directory
	ipfs(t, bin, ipfsRepo, "dag", "import", "--offline", "--pin-roots=false", rangePath)
	if got, want := len(strings.Fields(ipfs(t, bin, ipfsRepo, "refs", "local")))-before, 1+to/(256<<10)-from/(256<<10)+1; got != want {
		t.Fatalf("Kubo holds %d more blocks after importing the range CAR, want the %d that cover it", got, want)
	}
	if got := ipfs(t, bin, ipfsRepo, "cat", "--offline", "--offset", fmt.Sprint(from), "--length", fmt.Sprint(to-from+1), root); got != string(data[from:to+1]) {
		t.Fatalf("ipfs cat of bytes %d..%d from the range CAR: %d bytes, not the file's", from, to, len(got))
	}
	if raw := get200(t, "http://"+gateways[1]+"/ipfs/"+root+"?format=raw"); string(raw) != ipfs(t, bin, ipfsRepo, "block", "get", "--offline", root) {
		t.Fatalf("the raw root block (%d bytes) is not the one Kubo imported", len(raw))
	}
	carPath := filepath.Join(t.TempDir(), "f.car")
	if err := os.WriteFile(carPath, carBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	out := ipfs(t, bin, ipfsRepo, "dag", "import", "--offline", carPath)
	if want := "Pinned root\t" + root + "\tsuccess\n"; !strings.Contains(out, want) {
		t.Fatalf("ipfs dag import printed %q, want %q", out, want)
	}
	if got := ipfs(t, bin, ipfsRepo, "cat", "--offline", root); got != string(data) {
		t.Fatalf("ipfs cat %s: %d bytes, want the file's %d", root, len(got), len(data))
	}
}

// get200 GETs url and fails the test unless it answers 200.
func get200(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v: %.200s", url, resp.StatusCode, err, body)
	}
	return body
}
