// Command bitswapbench measures how fast real Kubo reads a sharded file
// from shoal over bitswap, against Kubo reading the same file from another
// Kubo node in the same run, and how fast a peer's trustless gateway
// serves the file's CAR, against `shoal export` of the same DAG from the
// same peer.
//
// Setup, all on loopback: a three-peer shoal cluster (its own `shoal
// daemon` processes) with the IPFS host and the gateway on, holding a
// -size file added sharded at rmin = rmax = 1, so its shards lie on all
// three peers and peer0 serves two thirds of it from the others; a Kubo
// node "origin" that added the same file (the same root, checked); and two
// Kubo client nodes with empty repos and no routing, one connected only to
// shoal peer0's IPFS host, the other only to origin. Each run, the two
// clients `ipfs cat` the file to /dev/null in turn, then drop what they
// fetched (`ipfs repo gc`), and the gateway CAR and the export stream it
// once each, alternating which goes first. It prints each run and the
// medians over -runs, and the ratios of the medians:
//
//	bitswap: shoal / Kubo    the goal is >= 1.0
//	CAR: gateway / export    the goal is >= 0.8
//
// Run from the module root (Kubo is built by ../shared/tools/build-kubo
// unless -ipfs names a binary):
//
//	go run ./bench/cmd/bitswapbench [-size 1GiB] [-runs 3] [-local] [-ipfs BIN] [-shoal BIN] [-keep] [-cpuprofile FILE] [-car-only]
//
// -local places every shard on all three peers, so that peer0 serves the
// whole file from its own store: the cost of the hop to the other peers
// is the difference.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/bench"
)

func main() { bench.Main("bitswapbench", run, nil) }

type options struct {
	size  int64
	runs  int
	ipfs  string
	shoal string
	keep  bool
	prof  string
	local bool
	car   bool
}

func run(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet("bitswapbench", flag.ContinueOnError)
	var o options
	size := fl.String("size", "1GiB", "size of the file read back")
	fl.IntVar(&o.runs, "runs", 3, "runs; medians are reported")
	fl.StringVar(&o.ipfs, "ipfs", "", "Kubo's ipfs `BINARY` (default: what ../shared/tools/build-kubo builds)")
	fl.StringVar(&o.shoal, "shoal", "", "use this shoal `BINARY` instead of building ./cmd/shoal")
	fl.BoolVar(&o.keep, "keep", false, "keep the repositories and logs")
	fl.BoolVar(&o.local, "local", false, "place every shard on all three peers (rmin = rmax = 3), so peer0 serves it all from its own store")
	fl.BoolVar(&o.car, "car-only", false, "measure the gateway CAR and the export only, without Kubo")
	fl.StringVar(&o.prof, "cpuprofile", "", "write peer0's CPU profile (the peer Kubo and the gateway read from) to `FILE`, and the other peers' to FILE.1 and FILE.2")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	var err error
	if o.size, err = bench.ParseSize(*size); err != nil {
		return err
	}
	if o.runs < 1 || o.size < 1<<20 {
		return errors.New("-runs must be at least 1, -size at least 1MiB")
	}
	dir, err := os.MkdirTemp("", "bitswapbench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Printf("keeping %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if o.ipfs == "" && !o.car {
		if o.ipfs, err = bench.Kubo(ctx, ""); err != nil {
			return err
		}
	}
	if o.shoal == "" {
		o.shoal = filepath.Join(dir, "shoal")
		if err := bench.BuildShoal(ctx, o.shoal); err != nil {
			return err
		}
	}
	return measure(ctx, o, dir)
}

func measure(ctx context.Context, o options, dir string) error {
	fmt.Printf("bitswapbench: %s, %d runs, tree %s, %s, load %s\n", bench.FormatSize(o.size), o.runs, bench.GitRev(),
		bench.Machine(), bench.LoadAvg())
	data, _, err := bench.DataFile(dir, o.size)
	if err != nil {
		return err
	}
	c, err := bench.StartCluster(ctx, bench.ClusterConfig{Shoal: o.shoal, Dir: dir, Peers: 3,
		IPFS:    map[string]any{"listen": []string{"/ip4/127.0.0.1/tcp/0"}},
		Gateway: map[string]any{"listen": "127.0.0.1:0"},
		Env: func(i int) []string {
			switch {
			case o.prof == "":
				return nil
			case i == 0:
				return []string{"SHOAL_CPUPROFILE=" + o.prof}
			default:
				return []string{fmt.Sprintf("SHOAL_CPUPROFILE=%s.%d", o.prof, i)}
			}
		}})
	if err != nil {
		return err
	}
	defer c.Close()
	p0 := c.Peers[0]
	f, err := os.Open(data)
	if err != nil {
		return err
	}
	r := 1
	if o.local {
		r = 3
	}
	res, err := p0.Client.Add(ctx, f, "data", api.AddParams{Name: "data", Shard: true, ShardSize: 64 << 20, RMin: r, RMax: r})
	f.Close()
	if err != nil {
		return fmt.Errorf("shoal add: %w", err)
	}
	root := res.CID
	holders := map[string]bool{}
	for _, sh := range res.Shards {
		for _, a := range sh.Allocations {
			holders[a] = true
		}
	}
	fmt.Printf("shoal: root %s, %d shards on %d peers\n", root, len(res.Shards), len(holders))
	id, err := p0.Client.ID(ctx)
	if err != nil {
		return err
	}
	if id.IPFS == nil || len(id.IPFS.Addresses) == 0 || id.Gateway == "" {
		return fmt.Errorf("peer0 runs no IPFS host or gateway: %+v", id)
	}

	var origin, fromShoal, fromKubo *kubo
	if !o.car {
		if origin, fromShoal, fromKubo, err = startKubos(ctx, o, dir, data, root, id.IPFS.Addresses[0]); err != nil {
			return err
		}
		defer origin.stop()
		defer fromShoal.stop()
		defer fromKubo.stop()
	}

	mib := float64(o.size) / (1 << 20)
	var bsShoal, bsKubo, car, export []float64
	fmt.Printf("%-4s %16s %16s %16s %16s\n", "run", "shoal bitswap", "Kubo bitswap", "gateway CAR", "shoal export")
	for r := range o.runs {
		clients := []*kubo{fromShoal, fromKubo}
		if r%2 == 1 {
			clients = []*kubo{fromKubo, fromShoal}
		}
		if o.car {
			clients = nil
		}
		got := map[*kubo]float64{}
		for _, k := range clients {
			d, err := k.cat(ctx, root, o.size)
			if err != nil {
				return err
			}
			got[k] = mib / d.Seconds()
			if _, err := k.run(ctx, "repo", "gc", "--quiet"); err != nil {
				return err
			}
		}
		bsShoal, bsKubo = append(bsShoal, got[fromShoal]), append(bsKubo, got[fromKubo])
		var gw, ex float64
		for i := range 2 {
			if (i+r)%2 == 0 {
				d, n, err := gatewayCAR(ctx, id.Gateway, root)
				if err != nil {
					return err
				}
				gw = float64(n) / (1 << 20) / d.Seconds()
			} else {
				d, n, err := exportCAR(ctx, p0, root)
				if err != nil {
					return err
				}
				ex = float64(n) / (1 << 20) / d.Seconds()
			}
		}
		car, export = append(car, gw), append(export, ex)
		fmt.Printf("%-4d %16s %16s %16s %16s\n", r+1, rate(got[fromShoal]), rate(got[fromKubo]), rate(gw), rate(ex))
	}
	ms, mk, mc, me := bench.Median(bsShoal), bench.Median(bsKubo), bench.Median(car), bench.Median(export)
	fmt.Printf("%-4s %16s %16s %16s %16s\n", "med", rate(ms), rate(mk), rate(mc), rate(me))
	if !o.car {
		fmt.Printf("bitswap: shoal / Kubo = %.2fx (goal >= 1.0)\n", ms/mk)
	}
	fmt.Printf("CAR: gateway / export = %.2fx (goal >= 0.8)\n", mc/me)
	return nil
}

// rate formats a throughput, "-" for one not measured (-car-only).
func rate(mibs float64) string {
	if mibs == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MiB/s", mibs)
}

// startKubos starts the Kubo nodes of the bitswap measure: origin, which
// adds the file at data (its root must be root), and the two clients, one
// connected to shoal's IPFS host at shoalAddr, one to origin.
func startKubos(ctx context.Context, o options, dir, data, root, shoalAddr string) (origin, fromShoal, fromKubo *kubo, err error) {
	var started []*kubo
	defer func() {
		if err != nil {
			for _, k := range started {
				k.stop()
			}
		}
	}()
	start := func(name string) (*kubo, error) {
		k, err := startKubo(ctx, o.ipfs, filepath.Join(dir, name))
		if err == nil {
			started = append(started, k)
		}
		return k, err
	}
	if origin, err = start("kubo-origin"); err != nil {
		return
	}
	added, err := origin.run(ctx, "add", "-Q", "--pin", data)
	if err != nil {
		return
	}
	if strings.TrimSpace(added) != root {
		err = fmt.Errorf("Kubo added the file as %s, shoal as %s", strings.TrimSpace(added), root)
		return
	}
	originAddrs, err := origin.addrs(ctx)
	if err != nil {
		return
	}
	if fromShoal, err = start("kubo-from-shoal"); err != nil {
		return
	}
	if fromKubo, err = start("kubo-from-kubo"); err != nil {
		return
	}
	if _, err = fromShoal.run(ctx, "swarm", "connect", shoalAddr); err != nil {
		return
	}
	_, err = fromKubo.run(ctx, "swarm", "connect", originAddrs)
	return
}

// gatewayCAR streams root's whole-DAG CAR from the gateway at base.
func gatewayCAR(ctx context.Context, base, root string) (time.Duration, int64, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ipfs/"+root+"?format=car", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("gateway CAR: %s", resp.Status)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	return time.Since(start), n, err
}

// exportCAR streams root's CAR from d's API, as `shoal export` does.
func exportCAR(ctx context.Context, d *bench.Daemon, root string) (time.Duration, int64, error) {
	start := time.Now()
	r, err := d.Client.Export(ctx, root)
	if err != nil {
		return 0, 0, err
	}
	defer r.Close()
	n, err := io.Copy(io.Discard, r)
	return time.Since(start), n, err
}

// kubo is one Kubo daemon on loopback: the test profile (loopback
// addresses, no bootstrap peers, no mDNS) and no content routing, so it
// fetches only from the peers it is connected to.
type kubo struct {
	bin, repo string
	cmd       *exec.Cmd
}

func startKubo(ctx context.Context, bin, repo string) (*kubo, error) {
	k := &kubo{bin: bin, repo: repo}
	for _, args := range [][]string{{"init", "--profile", "test"}, {"config", "Routing.Type", "none"}} {
		if _, err := k.run(ctx, args...); err != nil {
			return nil, err
		}
	}
	log, err := os.Create(repo + ".log")
	if err != nil {
		return nil, err
	}
	defer log.Close()
	k.cmd = exec.Command(bin, "daemon")
	k.cmd.Env = append(os.Environ(), "IPFS_PATH="+repo)
	out, err := k.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	k.cmd.Stderr = log
	if err := k.cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Daemon is ready") {
				ready <- true
				_, _ = io.Copy(io.Discard, out)
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			k.stop()
			return nil, fmt.Errorf("ipfs daemon in %s exited before it was ready; see %s.log", repo, repo)
		}
	case <-time.After(time.Minute):
		k.stop()
		return nil, fmt.Errorf("ipfs daemon in %s not ready after a minute", repo)
	}
	return k, nil
}

func (k *kubo) stop() {
	if k.cmd != nil && k.cmd.Process != nil {
		_ = k.cmd.Process.Kill()
		_ = k.cmd.Wait()
	}
}

func (k *kubo) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, k.bin, args...)
	cmd.Env = append(os.Environ(), "IPFS_PATH="+k.repo)
	return cmd
}

func (k *kubo) run(ctx context.Context, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := k.command(ctx, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("ipfs %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// addrs is the daemon's first swarm address with /p2p/ID.
func (k *kubo) addrs(ctx context.Context) (string, error) {
	out, err := k.run(ctx, "id", "-f", "<addrs>")
	if err != nil {
		return "", err
	}
	for _, a := range strings.Fields(out) {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			return a, nil
		}
	}
	return "", fmt.Errorf("ipfs id lists no /ip4/127.0.0.1/tcp address: %q", out)
}

// cat times `ipfs cat root` into a counter, and checks it got size bytes.
func (k *kubo) cat(ctx context.Context, root string, size int64) (time.Duration, error) {
	cmd := k.command(ctx, "cat", root)
	var stderr bytes.Buffer
	var n countWriter
	cmd.Stdout, cmd.Stderr = &n, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("ipfs cat in %s: %w: %s", k.repo, err, strings.TrimSpace(stderr.String()))
	}
	d := time.Since(start)
	if int64(n) != size {
		return 0, fmt.Errorf("ipfs cat in %s: %d bytes, want %d", k.repo, n, size)
	}
	return d, nil
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}
