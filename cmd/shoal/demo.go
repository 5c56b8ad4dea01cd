package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/shoal-project/shoal/api"
	"github.com/shoal-project/shoal/api/client"
	"github.com/shoal-project/shoal/cluster"
	"github.com/shoal-project/shoal/config"
)

func newDemoCmd() *cobra.Command {
	var (
		peers      int
		size       string
		shardSize  string
		rmin, rmax int
		keep       bool
		noProgress bool
	)
	cmd := &cobra.Command{
		Use:   "demo [FILE|-]",
		Short: "Run a throwaway local cluster, add a file sharded, read it back and verify it",
		Long: `Demo starts --peers real peers on loopback (real libp2p, real Raft, real
stores in a temporary directory), adds FILE, stdin (-), or --size bytes of
random data through the first peer's API as a sharded add with a progress bar,
prints the shard status table, reads the whole file back from the last peer,
checks its SHA-256 against what was sent, and shuts down, removing the
temporary directory.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if peers < 1 || peers > 16 {
				return errors.New("--peers must be from 1 to 16")
			}
			if rmin < 1 || rmax < rmin || rmax > peers {
				return fmt.Errorf("replication %d..%d does not fit %d peers (1 <= rmin <= rmax <= peers)", rmin, rmax, peers)
			}
			shardBytes, err := config.ParseSize(shardSize)
			if err != nil {
				return fmt.Errorf("--shard-size: %w", err)
			}
			// The input: a file, stdin, or random bytes of --size.
			var in io.Reader
			total := int64(-1)
			name := "random"
			switch {
			case len(args) == 1 && args[0] == "-":
				if err := checkStdin(); err != nil {
					return err
				}
				stdin, restore := interruptibleStdin(cmd.Context())
				defer restore()
				in, name = stdin, "stdin"
			case len(args) == 1:
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("demo %s: %w", args[0], unwrapPathErr(err))
				}
				defer f.Close()
				fi, err := f.Stat()
				if err != nil || !fi.Mode().IsRegular() {
					return fmt.Errorf("demo %s: not a regular file", args[0])
				}
				in, total, name = f, fi.Size(), filepath.Base(args[0])
			default:
				n, err := config.ParseSize(size)
				if err != nil {
					return fmt.Errorf("--size: %w", err)
				}
				in, total = io.LimitReader(rand.Reader, n), n
			}
			return runDemo(cmd.Context(), cmd.OutOrStdout(), demoOpts{peers: peers, shardSize: shardBytes, rmin: rmin,
				rmax: rmax, keep: keep, progress: !noProgress}, in, total, name)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&peers, "peers", 3, "number of peers")
	fl.StringVar(&size, "size", "1GiB", "bytes of random data to add when no FILE is given")
	fl.StringVar(&shardSize, "shard-size", "64MiB", "largest shard")
	fl.IntVar(&rmin, "rmin", 2, "replication minimum of every shard")
	fl.IntVar(&rmax, "rmax", 2, "replication maximum of every shard")
	fl.BoolVar(&keep, "keep", false, "keep the temporary directory (its path is printed)")
	fl.BoolVar(&noProgress, "no-progress", false, "no progress bar")
	return cmd
}

type demoOpts struct {
	peers      int
	shardSize  int64
	rmin, rmax int
	keep       bool
	progress   bool
}

func runDemo(ctx context.Context, out io.Writer, o demoOpts, in io.Reader, total int64, name string) error {
	dir, err := os.MkdirTemp("", "shoal-demo-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintf(out, "cluster directory: %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	logger := log.New(io.Discard, "", 0)
	var running []*cluster.Peer
	defer func() {
		for i := len(running) - 1; i >= 0; i-- {
			running[i].Close()
		}
	}()
	var boot []ma.Multiaddr
	for i := range o.peers {
		repo := filepath.Join(dir, fmt.Sprintf("peer%d", i))
		cfg := config.Default()
		cfg.PeerName = fmt.Sprintf("peer%d", i)
		cfg.Secret = hex.EncodeToString(secret)
		cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.API.Listen = "127.0.0.1:0"
		// Loopback: short Raft timeouts make the demo start in a second.
		cfg.Consensus.HeartbeatTimeout = config.Duration(300 * time.Millisecond)
		cfg.Consensus.ElectionTimeout = config.Duration(300 * time.Millisecond)
		cfg.Consensus.LeaderLeaseTimeout = config.Duration(150 * time.Millisecond)
		cfg.Consensus.CommitTimeout = config.Duration(20 * time.Millisecond)
		cfg.Consensus.WaitForLeaderTimeout = config.Duration(10 * time.Second)
		if _, err := config.Init(repo, cfg); err != nil {
			return err
		}
		p, err := cluster.Start(ctx, repo, cluster.Options{Bootstrap: boot, Version: version, Logger: logger})
		if err != nil {
			return fmt.Errorf("start peer%d: %w", i, err)
		}
		running = append(running, p)
		if i == 0 {
			id, err := client.New(p.APIAddr())
			if err != nil {
				return err
			}
			me, err := id.ID(ctx)
			if err != nil {
				return err
			}
			a, err := ma.NewMultiaddr(me.Addresses[0])
			if err != nil {
				return err
			}
			boot = []ma.Multiaddr{a}
		}
	}
	first, err := client.New(running[0].APIAddr())
	if err != nil {
		return err
	}
	if err := waitPeers(ctx, first, o.peers); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d peers up in %s\n", o.peers, dir)

	// Add, hashing what is sent to check it against what comes back.
	h := sha256.New()
	mode := "auto"
	if !o.progress {
		mode = "off"
	}
	bar := newProgress(mode, total)
	start := time.Now()
	res, err := first.Add(ctx, bar.reader(io.TeeReader(in, h)), name, api.AddParams{Name: name, Shard: true,
		ShardSize: o.shardSize, RMin: o.rmin, RMax: o.rmax})
	bar.finish()
	if err != nil {
		return explain(err)
	}
	took := time.Since(start)
	sent := h.Sum(nil)
	fmt.Fprintf(out, "added %s %s: %d bytes in %s (%.0f MB/s)\n", res.CID, name, res.Size, took.Round(time.Millisecond),
		float64(res.Size)/took.Seconds()/1e6)

	st, err := first.Status(ctx, res.CID, false)
	if err != nil {
		return explain(err)
	}
	if err := printShards(out, st); err != nil {
		return err
	}

	// Read it back from the last peer and compare.
	last, err := client.New(running[len(running)-1].APIAddr())
	if err != nil {
		return err
	}
	// The last peer applies the add's commit a heartbeat after the first.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := last.Status(ctx, res.CID, true); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	start = time.Now()
	r, err := last.Cat(ctx, res.CID, 0, -1)
	if err != nil {
		return explain(err)
	}
	h.Reset()
	n, err := io.Copy(h, r)
	r.Close()
	if err != nil {
		return err
	}
	took = time.Since(start)
	if got := h.Sum(nil); !bytes.Equal(got, sent) || uint64(n) != res.Size {
		return fmt.Errorf("read back %d bytes with SHA-256 %x, sent %d bytes with %x", n, got, res.Size, sent)
	}
	fmt.Fprintf(out, "read back %d bytes from %s in %s (%.0f MB/s): SHA-256 %x matches\n", n,
		running[len(running)-1].ID(), took.Round(time.Millisecond), float64(n)/took.Seconds()/1e6, sent)
	return nil
}

// waitPeers waits until n peers are alive.
func waitPeers(ctx context.Context, c *client.Client, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ps, err := c.Peers(ctx)
		alive := 0
		for _, p := range ps {
			if p.Alive {
				alive++
			}
		}
		if err == nil && alive == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d peers came up", alive, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
