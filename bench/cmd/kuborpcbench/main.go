// Command kuborpcbench measures an add through Kubo's RPC API against
// shoal's own sharded add of the same file, in one run: a three-peer
// cluster of `shoal daemon` processes on loopback with kubo_rpc.listen
// on, rmin=rmax=1, takes the file with `shoal add --shard` and then,
// after an unpin that empties every store, with the real `ipfs --api
// PEER add` of Kubo v0.43.1; each run alternates which goes first.
// Issue 16's target: the Kubo RPC add within 10% of shoal add --shard.
// Run from the module root:
//
//	go run ./bench/cmd/kuborpcbench [-size 1GiB] [-runs 3] [-ipfs BIN]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/shoal-project/shoal/bench"
)

func main() { bench.Main("kuborpcbench", run, nil) }

type options struct {
	size int64
	runs int
	ipfs string
	dir  string
}

func run(ctx context.Context, args []string) error {
	var o options
	fl := flag.NewFlagSet("kuborpcbench", flag.ContinueOnError)
	size := fl.String("size", "1GiB", "file `SIZE`")
	fl.IntVar(&o.runs, "runs", 3, "timed runs of each add")
	fl.StringVar(&o.ipfs, "ipfs", "", "Kubo's ipfs `BINARY` (default: $SHOAL_TEST_IPFS, else what ../shared/tools/build-kubo builds)")
	fl.StringVar(&o.dir, "dir", "", "scratch `DIR` (default: a new temporary directory)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	var err error
	if o.size, err = bench.ParseSize(*size); err != nil {
		return err
	}
	if o.runs < 1 {
		return errors.New("-runs must be at least 1")
	}
	if o.ipfs, err = bench.Kubo(ctx, o.ipfs); err != nil {
		return err
	}
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "kuborpcbench-"); err != nil {
			return err
		}
		defer os.RemoveAll(o.dir)
	}
	shoal := filepath.Join(o.dir, "shoal")
	if err := bench.BuildShoal(ctx, shoal); err != nil {
		return err
	}
	data, _, err := bench.DataFile(filepath.Join(o.dir, "data"), o.size)
	if err != nil {
		return err
	}
	repo := filepath.Join(o.dir, "ipfs")
	kuboEnv := []string{"IPFS_PATH=" + repo}
	if _, err := bench.Run(ctx, bench.Cmd{Path: o.ipfs, Args: []string{"init", "--empty-repo"}, Env: kuboEnv}); err != nil {
		return fmt.Errorf("ipfs init: %w", err)
	}
	cdir := filepath.Join(o.dir, "cluster")
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return err
	}
	c, err := bench.StartCluster(ctx, bench.ClusterConfig{Shoal: shoal, Dir: cdir, Peers: 3,
		Pinning: map[string]any{"replication_min": 1, "replication_max": 1},
		KuboRPC: map[string]any{"listen": "127.0.0.1:0"}, StartTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	defer c.Close()
	d := c.Peers[0]
	kuboAPI, err := kuboRPCAddr(ctx, d.Log)
	if err != nil {
		return err
	}
	host, port, _ := strings.Cut(kuboAPI, ":")
	adds := map[string]bench.Cmd{
		"shoal add --shard": {Path: shoal, Args: []string{"--api", d.API, "add", "--shard", "-Q", "--no-progress", data}},
		"ipfs --api add":    {Path: o.ipfs, Args: []string{"--api", "/ip4/" + host + "/tcp/" + port, "add", "-Q", "--progress=false", data}, Env: kuboEnv},
	}
	order := []string{"shoal add --shard", "ipfs --api add"}
	walls := map[string][]float64{}
	var ratios []float64
	var root string
	fmt.Printf("kuborpcbench: %s file, %d runs, tree %s, %s\n", bench.FormatSize(o.size), o.runs, bench.GitRev(), bench.Machine())
	for run := range o.runs {
		if run > 0 {
			slices.Reverse(order) // each run starts with the add that went second before
		}
		got := map[string]float64{}
		for _, name := range order {
			if _, err := bench.Warm(data); err != nil {
				return err
			}
			res, err := bench.Run(ctx, adds[name])
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			cid := strings.TrimSpace(string(res.Stdout))
			if root == "" {
				root = cid
			} else if cid != root {
				return fmt.Errorf("%s printed %s, not %s", name, cid, root)
			}
			got[name] = res.Wall.Seconds()
			walls[name] = append(walls[name], res.Wall.Seconds())
			fmt.Printf("  run %d %-18s %6.0f MB/s, client CPU %.2f s, others %.0f%% of the machine\n", run+1, name,
				float64(o.size)/bench.MB/res.Wall.Seconds(), res.CPU.Seconds(), 100*res.OthersShare())
			if err := unpin(ctx, c, root); err != nil {
				return err
			}
		}
		ratios = append(ratios, got["shoal add --shard"]/got["ipfs --api add"])
	}
	fmt.Println()
	for _, name := range []string{"shoal add --shard", "ipfs --api add"} {
		fmt.Printf("%-18s median %6.0f MB/s\n", name, float64(o.size)/bench.MB/bench.Median(walls[name]))
	}
	m := bench.Median(ratios)
	verdict := "PASS"
	if m < 0.9 {
		verdict = "MISS"
	}
	fmt.Printf("ipfs --api add / shoal add --shard speed: median %.2fx (per run %s); target >= 0.90x: %s\n", m, formatRatios(ratios), verdict)
	return nil
}

func formatRatios(rs []float64) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = fmt.Sprintf("%.2fx", r)
	}
	return strings.Join(s, ", ")
}

// unpin removes root and waits until no peer stores anything, so that
// the next add starts from the same empty cluster.
func unpin(ctx context.Context, c *bench.Cluster, root string) error {
	if _, err := c.Peers[0].Client.Unpin(ctx, root); err != nil {
		return fmt.Errorf("unpin %s: %w", root, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ps, err := c.Peers[0].Client.Peers(ctx)
		used := int64(0)
		for _, p := range ps {
			used += p.Used
		}
		if err == nil && used == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the peers still store %d bytes 2 minutes after the unpin (%v)", used, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var kuboLine = regexp.MustCompile(`Kubo RPC API on (\S+)/api/v0/`)

// kuboRPCAddr reads HOST:PORT of the daemon's Kubo RPC API from its log.
func kuboRPCAddr(ctx context.Context, log string) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(log)
		if err != nil {
			return "", err
		}
		if m := kuboLine.FindSubmatch(b); m != nil {
			u, err := url.Parse(string(m[1]))
			if err != nil || u.Host == "" {
				return "", fmt.Errorf("the daemon logged the Kubo RPC URL %q: %v", m[1], err)
			}
			return u.Host, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("no Kubo RPC line in %s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
